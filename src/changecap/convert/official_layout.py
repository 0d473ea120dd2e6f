"""The official HiSem checkpoint layout (``docs/hisem.md``): key names, shapes, dimension inference, validation.

The official ``train.py`` saves ``torch.save({'encoder_dict', 'encoder_trans_dict', 'decoder_dict'})``:

* ``encoder_dict``: the OpenAI CLIP model's state dict, every key prefixed ``clip_model.`` (see :mod:`.openai_clip`);
* ``encoder_trans_dict``: the fusion (2-D position tables, BDAM, HASD, final LayerNorm), 188 entries for 3 layers
  and 8 experts;
* ``decoder_dict``: the caption decoder, 29 entries for 1 layer.

Every dimension is inferred from tensor shapes (:func:`infer_official_dims`); the full key/shape table for those
dimensions (:func:`official_shapes`) is then checked against the checkpoint (:func:`validate_official`), so a
truncated or foreign checkpoint fails with one line naming the first offending key. This module only reads and
checks tensors; it knows nothing about changecap's own modules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from changecap.errors import ModelError
from changecap.models.io import torch_load_weights_only
from changecap.models.parts.caption_decoder import sinusoidal_table

Shape = tuple[int, ...]
StateDict = Mapping[str, torch.Tensor]

#: top-level entries of an official checkpoint
ENCODER_KEY, TRANS_KEY, DECODER_KEY = "encoder_dict", "encoder_trans_dict", "decoder_dict"

#: official tensors that the official forward pass never reads (dropped on import, re-created as zeros on export)
UNUSED_TRANS_PATTERNS: tuple[str, ...] = (r"diff_attn\.bidiff_modules\.\d+\.norm_(add|del)\.(weight|bias)",)
UNUSED_DECODER_PATTERNS: tuple[str, ...] = (
    r"transformer\.layers\.\d+\.fc_alpha[123]\.(weight|bias)",
    r"position_encoding\.embedding_1D\.weight",
)
#: official buffers (not parameters): excluded from parameter counts
BUFFER_PATTERNS: tuple[str, ...] = (
    r"moe\.reblock[12]\.LN_list\.left\.[036]\.(running_mean|running_var|num_batches_tracked)",
    r"position_encoding\.pe",
)
#: rows of the unused ``position_encoding.embedding_1D`` table in the official code
OFFICIAL_EMBEDDING_1D_ROWS = 52


def is_unused_key(key: str) -> bool:
    """True for official tensors the official forward pass never reads."""
    return any(re.fullmatch(p, key) for p in UNUSED_TRANS_PATTERNS + UNUSED_DECODER_PATTERNS)


def is_buffer_key(key: str) -> bool:
    return any(re.fullmatch(p, key) for p in BUFFER_PATTERNS)


@dataclass(frozen=True)
class OfficialHiSemDims:
    """Every shape-determined hyperparameter of an official HiSem checkpoint (paper values in brackets)."""

    d_model: int  # [768] width of the fusion and the decoder
    grid_h: int  # [14] feature-map rows (= rows of ``w_embedding``, indexed by the row)
    grid_w: int  # [14] feature-map columns (= rows of ``h_embedding``, indexed by the column)
    bdam_layers: int  # [3]
    modulator_hidden: int  # [192] = D / 4
    num_experts: int  # [8]
    expert_hidden: int  # [2048]
    shared_hidden: int  # [1536] = D * n_shared_experts
    pwff_hidden: int  # [2048]
    vocab_size: int  # [501]
    max_length: int  # [41] rows of the sinusoidal table ``position_encoding.pe``
    decoder_layers: int  # [1]
    decoder_ff: int  # [3072]
    embedding_1d_rows: int = OFFICIAL_EMBEDDING_1D_ROWS  # [52] unused table, kept only to re-create it on export

    @property
    def n_shared_experts(self) -> int:
        return self.shared_hidden // self.d_model

    @property
    def modulator_reduction(self) -> int:
        return self.d_model // self.modulator_hidden

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def paper(cls, vocab_size: int = 501) -> OfficialHiSemDims:
        """The paper configuration (LEVIR-CC, CLIP ViT-B/16)."""
        return cls(
            d_model=768, grid_h=14, grid_w=14, bdam_layers=3, modulator_hidden=192, num_experts=8,
            expert_hidden=2048, shared_hidden=1536, pwff_hidden=2048, vocab_size=vocab_size, max_length=41,
            decoder_layers=1, decoder_ff=3072,
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------------- key tables
def official_trans_shapes(d: OfficialHiSemDims, *, include_unused: bool = True) -> dict[str, Shape]:
    """Every ``encoder_trans_dict`` key and its shape for dimensions ``d`` (188 entries in the paper config)."""
    D = d.d_model
    s: dict[str, Shape] = {
        "h_embedding.weight": (d.grid_w, D // 2),
        "w_embedding.weight": (d.grid_h, D // 2),
        "layer_norm.weight": (D,),
        "layer_norm.bias": (D,),
        "diff_attn.add_scale": (),
        "diff_attn.del_scale": (),
    }
    for l in range(d.bdam_layers):
        fm = f"diff_attn.feat_modulators.{l}."
        s[fm + "gate_net.0.weight"] = (d.modulator_hidden, 2 * D)
        s[fm + "gate_net.0.bias"] = (d.modulator_hidden,)
        s[fm + "gate_net.2.weight"] = (D, d.modulator_hidden)
        s[fm + "gate_net.2.bias"] = (D,)
        s[fm + "local_conv.weight"] = (D, 1, 3, 3)
        s[fm + "local_norm.weight"] = (D,)
        s[fm + "local_norm.bias"] = (D,)
        bd = f"diff_attn.bidiff_modules.{l}."
        for name in ("q_b", "k_a", "v_a", "q_a", "k_b", "v_b"):
            s[bd + name + ".weight"] = (D, D)
        for name in ("fuse_gate_b", "fuse_gate_a"):
            s[bd + name + ".weight"] = (D, 2 * D)
            s[bd + name + ".bias"] = (D,)
        for name in ("proj_b", "proj_a"):
            s[bd + name + ".weight"] = (D, D)
            s[bd + name + ".bias"] = (D,)
        for name in ("norm_add", "norm_del"):
            s[bd + name + ".weight"] = (D,)
            s[bd + name + ".bias"] = (D,)
        for name in ("norm_b_list", "norm_a_list"):
            s[f"diff_attn.{name}.{l}.weight"] = (D,)
            s[f"diff_attn.{name}.{l}.bias"] = (D,)
        for name in ("add_predictor_list", "del_predictor_list"):
            s[f"diff_attn.{name}.{l}.weight"] = (1, D)
            s[f"diff_attn.{name}.{l}.bias"] = (1,)
    s["moe.clsgate.weight"] = (2, D)
    s["moe.changemoe.gate.weight"] = (d.num_experts, D)
    for e in range(d.num_experts):
        ex = f"moe.changemoe.experts.{e}."
        s[ex + "gate_proj.weight"] = (d.expert_hidden, D)
        s[ex + "up_proj.weight"] = (d.expert_hidden, D)
        s[ex + "down_proj.weight"] = (D, d.expert_hidden)
    sh = "moe.changemoe.shared_experts."
    s[sh + "gate_proj.weight"] = (d.shared_hidden, D)
    s[sh + "up_proj.weight"] = (d.shared_hidden, D)
    s[sh + "down_proj.weight"] = (D, d.shared_hidden)
    s["moe.pwff.fc1.weight"] = (d.pwff_hidden, D)
    s["moe.pwff.fc1.bias"] = (d.pwff_hidden,)
    s["moe.pwff.fc2.weight"] = (D, d.pwff_hidden)
    s["moe.pwff.fc2.bias"] = (D,)
    for name in ("moe.pwff.layer_norm", "moe.layer_norm"):
        s[name + ".weight"] = (D,)
        s[name + ".bias"] = (D,)
    for r in (1, 2):
        rb = f"moe.reblock{r}."
        s[rb + "Conv1_list.weight"] = (D, 2 * D, 1, 1)
        s[rb + "Conv1_list.bias"] = (D,)
        for i in (0, 3, 6):  # BatchNorm2d
            for name in ("weight", "bias", "running_mean", "running_var"):
                s[f"{rb}LN_list.left.{i}.{name}"] = (D,)
            s[f"{rb}LN_list.left.{i}.num_batches_tracked"] = ()
        s[rb + "LN_list.left.2.weight"] = (D, D, 3, 3)
        s[rb + "LN_list.left.2.bias"] = (D,)
        s[rb + "LN_list.left.5.weight"] = (D, D, 1, 1)
        s[rb + "LN_list.left.5.bias"] = (D,)
        s[rb + "LN_norm.weight"] = (D,)
        s[rb + "LN_norm.bias"] = (D,)
    if not include_unused:
        s = {k: v for k, v in s.items() if not is_unused_key(k)}
    return s


def official_decoder_shapes(d: OfficialHiSemDims, *, include_unused: bool = True) -> dict[str, Shape]:
    """Every ``decoder_dict`` key and its shape for dimensions ``d`` (29 entries in the paper config)."""
    D = d.d_model
    s: dict[str, Shape] = {"vocab_embedding.weight": (d.vocab_size, D)}
    for l in range(d.decoder_layers):
        p = f"transformer.layers.{l}."
        for att in ("self_attn", "multihead_attn"):
            s[f"{p}{att}.in_proj_weight"] = (3 * D, D)
            s[f"{p}{att}.in_proj_bias"] = (3 * D,)
            s[f"{p}{att}.out_proj.weight"] = (D, D)
            s[f"{p}{att}.out_proj.bias"] = (D,)
        s[p + "linear1.weight"] = (d.decoder_ff, D)
        s[p + "linear1.bias"] = (d.decoder_ff,)
        s[p + "linear2.weight"] = (D, d.decoder_ff)
        s[p + "linear2.bias"] = (D,)
        for n in (1, 2, 3):
            s[f"{p}norm{n}.weight"] = (D,)
            s[f"{p}norm{n}.bias"] = (D,)
        for n in (1, 2, 3):
            s[f"{p}fc_alpha{n}.weight"] = (D, 2 * D)
            s[f"{p}fc_alpha{n}.bias"] = (D,)
    s["position_encoding.pe"] = (d.max_length, 1, D)
    s["position_encoding.embedding_1D.weight"] = (d.embedding_1d_rows, D)
    s["wdc.weight"] = (d.vocab_size, D)
    s["wdc.bias"] = (d.vocab_size,)
    if not include_unused:
        s = {k: v for k, v in s.items() if not is_unused_key(k)}
    return s


def official_parameter_count(shapes: Mapping[str, Shape]) -> int:
    """Number of parameters (buffers excluded) of a key/shape table."""
    return sum(math.prod(v) for k, v in shapes.items() if not is_buffer_key(k))


# ---------------------------------------------------------------------------------------------------- reading
def load_official_checkpoint(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """Read an official checkpoint with ``torch.load(weights_only=True)`` (never executes code).

    Returns ``{'encoder_trans_dict', 'decoder_dict'[, 'encoder_dict']}`` with tensors on the CPU; a ``module.``
    prefix on every key of an entry (``nn.DataParallel``) is removed.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: official checkpoint not found")
    # memory-mapped when the file is in the zip format (torch >= 1.6), so tensors are not read twice
    obj = torch_load_weights_only(p, "as a weights-only torch checkpoint", mmap=True)
    if not isinstance(obj, Mapping):
        raise ModelError(f"{p}: expected a dict with '{TRANS_KEY}' and '{DECODER_KEY}', got {type(obj).__name__}")
    out: dict[str, dict[str, torch.Tensor]] = {}
    for top in (TRANS_KEY, DECODER_KEY, ENCODER_KEY):
        if top not in obj:
            if top == ENCODER_KEY:
                continue
            raise ModelError(f"{p} [{top}]: missing from the checkpoint (found keys: {sorted(map(str, obj))})")
        sd = obj[top]
        if not isinstance(sd, Mapping):
            raise ModelError(f"{p} [{top}]: expected a state dict, got {type(sd).__name__}")
        for k, v in sd.items():
            if not isinstance(v, torch.Tensor):
                raise ModelError(f"{p} [{top}.{k}]: expected a tensor, got {type(v).__name__}")
        keys = [str(k) for k in sd]
        # a checkpoint saved from an nn.DataParallel-wrapped module has every key prefixed "module."
        strip = len("module.") if keys and all(k.startswith("module.") for k in keys) else 0
        out[top] = {str(k)[strip:]: v for k, v in sd.items()}
    return out


def _get(sd: StateDict, key: str, where: str, ndim: int) -> torch.Tensor:
    if key not in sd:
        raise ModelError(f"{where} [{key}]: missing official key")
    t = sd[key]
    if t.ndim != ndim:
        raise ModelError(f"{where} [{key}]: expected a {ndim}-D tensor, found shape {list(t.shape)}")
    return t


def _count_indexed(sd: StateDict, prefix: str) -> int:
    """Number of consecutive indices ``i`` such that some key starts with ``prefix{i}.``."""
    idx = set()
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    for k in sd:
        m = pat.match(k)
        if m:
            idx.add(int(m.group(1)))
    n = 0
    while n in idx:
        n += 1
    return n


def infer_official_dims(trans: StateDict, decoder: StateDict, *, source: str = "checkpoint") -> OfficialHiSemDims:
    """Infer every dimension from tensor shapes; one-line :class:`ModelError` naming the key on failure."""
    wt, wd = f"{source} [{TRANS_KEY}]", f"{source} [{DECODER_KEY}]"
    D = _get(trans, "layer_norm.weight", wt, 1).shape[0]
    grid_w = _get(trans, "h_embedding.weight", wt, 2).shape[0]
    grid_h = _get(trans, "w_embedding.weight", wt, 2).shape[0]
    bdam_layers = _count_indexed(trans, "diff_attn.feat_modulators.")
    if bdam_layers == 0:
        raise ModelError(f"{wt} [diff_attn.feat_modulators.0.gate_net.0.weight]: missing official key")
    modulator_hidden = _get(trans, "diff_attn.feat_modulators.0.gate_net.0.weight", wt, 2).shape[0]
    num_experts = _get(trans, "moe.changemoe.gate.weight", wt, 2).shape[0]
    expert_hidden = _get(trans, "moe.changemoe.experts.0.gate_proj.weight", wt, 2).shape[0]
    shared_hidden = _get(trans, "moe.changemoe.shared_experts.gate_proj.weight", wt, 2).shape[0]
    pwff_hidden = _get(trans, "moe.pwff.fc1.weight", wt, 2).shape[0]
    vocab_size = _get(decoder, "wdc.weight", wd, 2).shape[0]
    max_length = _get(decoder, "position_encoding.pe", wd, 3).shape[0]
    decoder_layers = _count_indexed(decoder, "transformer.layers.")
    if decoder_layers == 0:
        raise ModelError(f"{wd} [transformer.layers.0.linear1.weight]: missing official key")
    decoder_ff = _get(decoder, "transformer.layers.0.linear1.weight", wd, 2).shape[0]
    emb1d = decoder.get("position_encoding.embedding_1D.weight")
    emb_rows = int(emb1d.shape[0]) if emb1d is not None and emb1d.ndim == 2 else OFFICIAL_EMBEDDING_1D_ROWS
    if D % 2:
        raise ModelError(f"{wt} [layer_norm.weight]: width {D} must be even (two half-width position tables)")
    if modulator_hidden <= 0 or D % modulator_hidden:
        raise ModelError(
            f"{wt} [diff_attn.feat_modulators.0.gate_net.0.weight]: modulator hidden {modulator_hidden} "
            f"does not divide the width {D}"
        )
    if shared_hidden % D:
        raise ModelError(
            f"{wt} [moe.changemoe.shared_experts.gate_proj.weight]: shared-expert width {shared_hidden} "
            f"is not a multiple of the width {D} (n_shared_experts must be an integer)"
        )
    return OfficialHiSemDims(
        d_model=int(D), grid_h=int(grid_h), grid_w=int(grid_w), bdam_layers=bdam_layers,
        modulator_hidden=int(modulator_hidden), num_experts=int(num_experts), expert_hidden=int(expert_hidden),
        shared_hidden=int(shared_hidden), pwff_hidden=int(pwff_hidden), vocab_size=int(vocab_size),
        max_length=int(max_length), decoder_layers=decoder_layers, decoder_ff=int(decoder_ff),
        embedding_1d_rows=emb_rows,
    )  # fmt: skip


def _check_table(sd: StateDict, shapes: Mapping[str, Shape], where: str) -> None:
    for key, shape in shapes.items():
        if key not in sd:
            if is_unused_key(key):
                continue  # unused tensors may be absent (e.g. a checkpoint re-exported without them)
            raise ModelError(f"{where} [{key}]: missing official key (expected shape {list(shape)})")
        found = tuple(sd[key].shape)
        if found != shape:
            raise ModelError(f"{where} [{key}]: wrong shape: expected {list(shape)}, found {list(found)}")
    extra = sorted(k for k in sd if k not in shapes)
    if extra:
        more = f" (+{len(extra) - 1} more)" if len(extra) > 1 else ""
        raise ModelError(
            f"{where} [{extra[0]}]: unexpected key, not part of the official HiSem layout{more}; "
            "is this a HiSem checkpoint of a different code version?"
        )
    for key in shapes:
        if key in sd and sd[key].is_floating_point() and not torch.isfinite(sd[key]).all():
            raise ModelError(f"{where} [{key}]: contains NaN or infinite values")


def validate_official(
    trans: StateDict, decoder: StateDict, dims: OfficialHiSemDims, *, source: str = "checkpoint"
) -> None:
    """Check every official key and shape for ``dims``; unused tensors may be absent; unknown keys are errors."""
    _check_table(trans, official_trans_shapes(dims), f"{source} [{TRANS_KEY}]")
    _check_table(decoder, official_decoder_shapes(dims), f"{source} [{DECODER_KEY}]")


# ---------------------------------------------------------------------------------------------------- helpers
def synthetic_official_checkpoint(
    dims: OfficialHiSemDims,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    include_unused: bool = True,
) -> dict[str, dict[str, torch.Tensor]]:
    """Random tensors in the official layout (``encoder_trans_dict`` + ``decoder_dict``), for tests and demos.

    Weights are drawn ~ N(0, 1/fan_in) so activations stay O(1); LayerNorm/BatchNorm affine parameters near (1, 0);
    BatchNorm running variances positive; ``add_scale``/``del_scale`` at the official initial values (1.0 / 0.5);
    ``position_encoding.pe`` is the true sinusoidal table. Unused tensors are random too (they must not matter).
    """
    g = torch.Generator().manual_seed(seed)

    def rnd(shape: Shape, key: str) -> torch.Tensor:
        if key.endswith("num_batches_tracked"):
            return torch.tensor(1000, dtype=torch.long)
        if key == "diff_attn.add_scale":
            return torch.tensor(1.0, dtype=dtype)
        if key == "diff_attn.del_scale":
            return torch.tensor(0.5, dtype=dtype)
        if key == "position_encoding.pe":
            return sinusoidal_table(shape[0], shape[2]).to(dtype)
        if key.endswith("running_var"):
            return (0.5 + torch.rand(shape, generator=g, dtype=torch.float64)).to(dtype)
        if len(shape) == 1 and re.search(r"(norm|norm\d|layer_norm|LN_norm|left\.[036])\.weight$", key):
            return (1.0 + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)
        if len(shape) <= 1:
            return (0.1 * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)
        fan_in = math.prod(shape[1:])
        return (torch.randn(shape, generator=g, dtype=torch.float64) / math.sqrt(fan_in)).to(dtype)

    trans = {k: rnd(v, k) for k, v in official_trans_shapes(dims, include_unused=include_unused).items()}
    dec = {k: rnd(v, k) for k, v in official_decoder_shapes(dims, include_unused=include_unused).items()}
    # word embeddings ~ U(-0.1, 0.1), the official init (so the memory, not the embedding residual, drives the logits)
    dec["vocab_embedding.weight"] = (0.2 * torch.rand((dims.vocab_size, dims.d_model), generator=g) - 0.1).to(dtype)
    return {TRANS_KEY: trans, DECODER_KEY: dec}
