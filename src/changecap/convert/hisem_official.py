"""Official HiSem checkpoint (``Man-Wang-star/HiSem`` ``train.py``) ↔ changecap model directory.

Import (:func:`convert_hisem_official`, CLI ``changecap convert hisem-official``):

1. read the ``.pth`` with ``torch.load(weights_only=True)`` (never executes code);
2. infer every dimension from tensor shapes and check every official key and shape
   (:mod:`changecap.convert.official_layout`); attention heads and the MoE routing constants (``n_group``,
   ``topk_group``, ``top_k``) are not in the shapes and come from the arguments (official defaults 8 / 4 / 2 / 2);
3. rename the fusion (``encoder_trans_dict``) and decoder (``decoder_dict``) tensors onto changecap's
   :class:`~changecap.models.HiSemFusion` / :class:`~changecap.models.TransformerCaptionDecoder` (pure renames, no
   arithmetic: both modules keep the official parameter layouts); map the OpenAI CLIP visual tower of
   ``encoder_dict`` onto ``transformers.CLIPVisionModel`` (:mod:`changecap.convert.openai_clip`, the only place
   where a tensor is split: ``in_proj_weight`` → ``q/k/v_proj``);
4. write a model directory with :func:`changecap.models.save_model` (config, safetensors weights, vocab, card).

Unused official tensors — ``diff_attn.bidiff_modules.{l}.norm_add/norm_del``, the decoder's ``fc_alpha1..3`` and
``position_encoding.embedding_1D`` — are never read by the official forward pass. They are accepted and dropped by
default; with ``keep_unused=True`` the models are built with ``official_unused_params=True`` and keep them, so the
parameter count equals the official one. :func:`export_hisem_official` writes the official layout back and re-creates
dropped unused tensors as zeros, so official → changecap → official is the identity on every used tensor.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from changecap.convert.official_layout import (
    DECODER_KEY,
    ENCODER_KEY,
    TRANS_KEY,
    OfficialHiSemDims,
    infer_official_dims,
    is_unused_key,
    load_official_checkpoint,
    official_decoder_shapes,
    official_trans_shapes,
    validate_official,
)
from changecap.convert.openai_clip import find_visual_prefix, hf_clip_visual_to_openai, openai_clip_visual_to_hf
from changecap.errors import ConfigError, ModelError

StateDict = Mapping[str, torch.Tensor]

#: BatchNorm / conv positions inside the official ``LN_list.left`` Sequential → changecap's PreActResidualBlock
_RESBLOCK = {"0": "bn1", "2": "conv3x3", "3": "bn2", "5": "conv1x1", "6": "bn3"}
_BDAM_LISTS = {
    "norm_b_list": "norm_before",
    "norm_a_list": "norm_after",
    "add_predictor_list": "add_scorer",
    "del_predictor_list": "del_scorer",
}
_REBLOCK_PATH = {"1": "hasd.unchanged.fusion", "2": "hasd.changed.fusion"}


# ---------------------------------------------------------------------------------------------------- name maps
def fusion_key(official: str) -> str:
    """Official ``encoder_trans_dict`` key → :class:`~changecap.models.HiSemFusion` state-dict key."""
    k = official
    fixed = {
        "h_embedding.weight": "position.col_embedding.weight",  # h_embedding is indexed by the column (official naming)
        "w_embedding.weight": "position.row_embedding.weight",
        "layer_norm.weight": "final_norm.weight",
        "layer_norm.bias": "final_norm.bias",
        "diff_attn.add_scale": "bdam.add_scale",
        "diff_attn.del_scale": "bdam.del_scale",
        "moe.clsgate.weight": "hasd.router.weight",
    }
    if k in fixed:
        return fixed[k]
    if m := re.fullmatch(r"diff_attn\.feat_modulators\.(\d+)\.(.+)", k):
        return f"bdam.layers.{m[1]}.modulator.{m[2]}"
    if m := re.fullmatch(r"diff_attn\.bidiff_modules\.(\d+)\.(.+)", k):
        return f"bdam.layers.{m[1]}.attention.{m[2]}"
    if m := re.fullmatch(r"diff_attn\.(norm_b_list|norm_a_list|add_predictor_list|del_predictor_list)\.(\d+)\.(.+)", k):
        return f"bdam.layers.{m[2]}.{_BDAM_LISTS[m[1]]}.{m[3]}"
    if m := re.fullmatch(r"moe\.changemoe\.shared_experts\.(.+)", k):
        return f"hasd.changed.moe.shared_expert.{m[1]}"
    if m := re.fullmatch(r"moe\.changemoe\.(.+)", k):
        return f"hasd.changed.moe.{m[1]}"
    if m := re.fullmatch(r"moe\.pwff\.(.+)", k):
        return f"hasd.unchanged.ffn.{m[1]}"
    if m := re.fullmatch(r"moe\.layer_norm\.(.+)", k):
        return f"hasd.changed.norm.{m[1]}"
    if m := re.fullmatch(r"moe\.reblock([12])\.Conv1_list\.(.+)", k):
        return f"{_REBLOCK_PATH[m[1]]}.reduce.{m[2]}"
    if m := re.fullmatch(r"moe\.reblock([12])\.LN_list\.left\.([02356])\.(.+)", k):
        return f"{_REBLOCK_PATH[m[1]]}.residual.{_RESBLOCK[m[2]]}.{m[3]}"
    if m := re.fullmatch(r"moe\.reblock([12])\.LN_norm\.(.+)", k):
        return f"{_REBLOCK_PATH[m[1]]}.norm.{m[2]}"
    raise KeyError(official)


def decoder_key_map(layers: int) -> dict[str, str]:
    """Official ``decoder_dict`` key → :class:`~changecap.models.TransformerCaptionDecoder` key, for ``layers``.

    Built from the decoder module's own ``OFFICIAL_NAME_MAP`` (the decoder's author keeps it next to the parameters).
    """
    from changecap.models.parts.caption_decoder import OFFICIAL_NAME_MAP

    out: dict[str, str] = {}
    for ours, official in OFFICIAL_NAME_MAP.items():
        if "{i}" in ours:
            for i in range(layers):
                out[official.format(i=i)] = ours.format(i=i)
        else:
            out[official] = ours
    return out


def official_to_changecap(
    trans: StateDict, decoder: StateDict, dims: OfficialHiSemDims, *, keep_unused: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Rename validated official tensors → (``model.fusion`` state dict, ``model.decoder`` state dict).

    Unused official tensors are dropped unless ``keep_unused`` (then they must all be present).
    """
    dec_map = decoder_key_map(dims.decoder_layers)
    fusion_sd: dict[str, torch.Tensor] = {}
    for key in official_trans_shapes(dims):
        if is_unused_key(key) and not keep_unused:
            continue
        if key not in trans:
            raise ModelError(f"{TRANS_KEY} [{key}]: missing official key (needed with keep_unused)")
        fusion_sd[fusion_key(key)] = trans[key]
    decoder_sd: dict[str, torch.Tensor] = {}
    for key in official_decoder_shapes(dims):
        if is_unused_key(key) and not keep_unused:
            continue
        if key not in decoder:
            raise ModelError(f"{DECODER_KEY} [{key}]: missing official key (needed with keep_unused)")
        decoder_sd[dec_map[key]] = decoder[key]
    return fusion_sd, decoder_sd


# ---------------------------------------------------------------------------------------------------- configs
def _check_option(ok: bool, option: str, message: str) -> None:
    if not ok:
        raise ConfigError(option, message)


def hisem_configs(
    dims: OfficialHiSemDims,
    *,
    heads: int = 8,
    decoder_heads: int = 8,
    n_group: int = 4,
    topk_group: int = 2,
    top_k: int = 2,
    keep_unused: bool = False,
    source: str = "checkpoint",
) -> tuple[Any, Any]:
    """(HiSemFusionConfig, CaptionDecoderConfig) for official dimensions ``dims`` and the non-inferable options."""
    from changecap.models.hisem.fusion import HiSemFusionConfig
    from changecap.models.parts.caption_decoder import OFFICIAL_EMBEDDING_1D_ROWS, CaptionDecoderConfig

    D, E = dims.d_model, dims.num_experts
    wt, wd = f"{source} [{TRANS_KEY}]", f"{source} [{DECODER_KEY}]"
    if dims.grid_h != dims.grid_w:
        raise ModelError(
            f"{wt} [h_embedding.weight]: a {dims.grid_h}x{dims.grid_w} (rows x columns) feature map is not square; "
            "changecap's fusion supports square grids only"
        )
    if dims.decoder_ff % D:
        raise ModelError(
            f"{wd} [transformer.layers.0.linear1.weight]: decoder FFN width {dims.decoder_ff} is not a multiple "
            f"of the width {D}; changecap's decoder supports ffn_mult x dim only"
        )
    if keep_unused and dims.embedding_1d_rows != OFFICIAL_EMBEDDING_1D_ROWS:
        raise ModelError(
            f"{wd} [position_encoding.embedding_1D.weight]: {dims.embedding_1d_rows} rows, but changecap keeps the "
            f"unused table only with the official {OFFICIAL_EMBEDDING_1D_ROWS} rows (convert without keep_unused)"
        )
    _check_option(heads >= 1 and D % heads == 0, "heads", f"must divide the width {D} (layer_norm.weight), got {heads}")
    _check_option(
        decoder_heads >= 1 and D % decoder_heads == 0,
        "decoder_heads",
        f"must divide the width {D} (decoder_dict wdc.weight), got {decoder_heads}",
    )
    _check_option(
        n_group >= 1 and E % n_group == 0,
        "n_group",
        f"must divide the {E} experts found in moe.changemoe.gate.weight, got {n_group}",
    )
    _check_option(1 <= topk_group <= n_group, "topk_group", f"must be in 1..n_group={n_group}, got {topk_group}")
    eligible = topk_group * (E // n_group)
    _check_option(
        1 <= top_k <= eligible,
        "top_k",
        f"must be in 1..{eligible} (topk_group x experts per group, {E} experts), got {top_k}",
    )
    fusion = HiSemFusionConfig(
        dim=D,
        grid_size=dims.grid_h,
        bdam_layers=dims.bdam_layers,
        heads=heads,
        modulator_reduction=dims.modulator_reduction,
        num_experts=E,
        top_k=top_k,
        n_group=n_group,
        topk_group=topk_group,
        n_shared_experts=dims.n_shared_experts,
        expert_hidden=dims.expert_hidden,
        pwff_hidden=dims.pwff_hidden,
        official_unused_params=keep_unused,
    )
    decoder = CaptionDecoderConfig(
        dim=D,
        vocab_size=dims.vocab_size,
        max_length=dims.max_length,
        layers=dims.decoder_layers,
        heads=decoder_heads,
        ffn_mult=dims.decoder_ff // D,
        official_unused_params=keep_unused,
    )
    return fusion, decoder


# ---------------------------------------------------------------------------------------------------- loading
def _load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Copy ``state`` into ``module``; any key or shape mismatch here is a converter bug, not a user error."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise RuntimeError(f"converter/{what} name map out of sync: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for k, t in expected.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise RuntimeError(f"converter/{what}: {k} has shape {list(state[k].shape)}, module has {list(t.shape)}")
    module.load_state_dict(dict(state), strict=True)


def _load_clip(encoder: torch.nn.Module, hf_state: Mapping[str, torch.Tensor]) -> None:
    """Load a ``CLIPVisionModel``-relative state dict into ``CLIPPatchEncoder.vision`` (``vision_model.`` aware)."""
    vision = encoder.vision  # type: ignore[union-attr]
    keys = vision.state_dict().keys()
    prefix = "vision_model." if any(k.startswith("vision_model.") for k in keys) else ""
    state = {prefix + k: v for k, v in hf_state.items()}
    # transformers may register non-persistent / derived buffers (e.g. position_ids); keep the module's own values
    for k, v in vision.state_dict().items():
        if k not in state and k.endswith("position_ids"):
            state[k] = v
    _load_strict(vision, state, "clip")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_hisem_official(
    ckpt_path: str | Path,
    out_dir: str | Path,
    vocab_path: str | Path,
    encoder: str | None = None,
    heads: int = 8,
    decoder_heads: int = 8,
    n_group: int = 4,
    topk_group: int = 2,
    top_k: int = 2,
    *,
    clip_heads: int | None = None,
    keep_unused: bool = False,
    overwrite: bool = False,
) -> Path:
    """Convert an official HiSem checkpoint into a changecap model directory and return its path.

    ``encoder``: ``None`` — use the checkpoint's ``encoder_dict`` (OpenAI CLIP → ``CLIPVisionModel``) if present,
    else write a model without backbone; ``"none"`` — no backbone (the model runs from backbone tokens:
    ``model.fusion``, ``model.decoder``, ``model.generate``); any other string — a transformers CLIP id or local
    directory whose vision tower becomes the backbone. ``heads`` / ``decoder_heads`` / ``n_group`` / ``topk_group``
    / ``top_k`` are not inferable from shapes (official values 8 / 8 / 4 / 2 / 2); ``clip_heads`` defaults to
    OpenAI's ``width // 64``. ``vocab_path`` must be the checkpoint's ``vocab.json`` (same ids, same size).
    """
    from changecap.data.vocab import Vocabulary
    from changecap.models.hisem import HiSemConfig
    from changecap.models.io import CONFIG_FILE, WEIGHTS_FILE, save_model
    from changecap.models.parts.clip_encoder import EncoderConfig
    from changecap.models.registry import build_model

    ckpt_path, out_dir, vocab_path = Path(ckpt_path), Path(out_dir), Path(vocab_path)
    if out_dir.exists() and not out_dir.is_dir():
        raise ModelError(f"{out_dir}: exists and is not a directory")
    if not overwrite and ((out_dir / CONFIG_FILE).exists() or (out_dir / WEIGHTS_FILE).exists()):
        raise ModelError(f"{out_dir}: already holds a model (use --force / overwrite=True to replace it)")
    vocab = Vocabulary.load(vocab_path)
    ckpt = load_official_checkpoint(ckpt_path)
    src = str(ckpt_path)
    trans, dec = ckpt[TRANS_KEY], ckpt[DECODER_KEY]
    dims = infer_official_dims(trans, dec, source=src)
    validate_official(trans, dec, dims, source=src)
    if len(vocab) != dims.vocab_size:
        raise ModelError(
            f"{vocab_path}: vocabulary has {len(vocab)} entries but the checkpoint's decoder has {dims.vocab_size} "
            f"({src} [{DECODER_KEY}] wdc.weight)"
        )
    fusion_cfg, decoder_cfg = hisem_configs(
        dims,
        heads=heads,
        decoder_heads=decoder_heads,
        n_group=n_group,
        topk_group=topk_group,
        top_k=top_k,
        keep_unused=keep_unused,
        source=src,
    )

    # ---- backbone
    enc_sd = ckpt.get(ENCODER_KEY) or {}
    clip_state: dict[str, torch.Tensor] | None = None
    enc_cfg: EncoderConfig | None = None
    backbone_note: str
    if encoder is not None and encoder.lower() == "none":
        backbone_note = "none (converted without backbone; run from CLIP patch tokens)"
    elif encoder is not None:
        enc_cfg = EncoderConfig(pretrained=encoder, config=None, trainable_layers=4, patch_ln_post=True)
        backbone_note = f"transformers CLIP '{encoder}' (not the checkpoint's encoder_dict)"
    elif enc_sd:
        where = f"{src} [{ENCODER_KEY}]"
        prefix = find_visual_prefix(enc_sd)
        if prefix is None:
            raise ModelError(
                f"{where} [clip_model.visual.conv1.weight]: missing official key (no CLIP visual tower); "
                "convert with --no-encoder or --encoder"
            )
        clip_cfg, clip_state = openai_clip_visual_to_hf(enc_sd, prefix, heads=clip_heads, where=where)
        grid = clip_cfg["image_size"] // clip_cfg["patch_size"]
        if clip_cfg["hidden_size"] != dims.d_model or grid != dims.grid_h:
            raise ModelError(
                f"{where} [{prefix}conv1.weight]: CLIP yields a {grid}x{grid} grid of width {clip_cfg['hidden_size']}, "
                f"but the fusion expects {dims.grid_h}x{dims.grid_w} of width {dims.d_model}"
            )
        trainable = min(4, clip_cfg["num_hidden_layers"])
        enc_cfg = EncoderConfig(pretrained=None, config=clip_cfg, trainable_layers=trainable, patch_ln_post=True)
        backbone_note = (
            f"OpenAI CLIP visual tower from encoder_dict (width {clip_cfg['hidden_size']}, "
            f"{clip_cfg['num_hidden_layers']} layers, patch {clip_cfg['patch_size']}, image {clip_cfg['image_size']}, "
            f"{clip_cfg['num_attention_heads']} heads), mapped onto transformers CLIPVisionModel; text tower and proj "
            "dropped"
        )
    else:
        backbone_note = "none (the checkpoint has no encoder_dict; run from CLIP patch tokens)"

    config = HiSemConfig(fusion=fusion_cfg, decoder=decoder_cfg, encoder=enc_cfg)
    model = build_model(config, load_pretrained=True)
    fusion_sd, decoder_sd = official_to_changecap(trans, dec, dims, keep_unused=keep_unused)
    _load_strict(model.fusion, fusion_sd, "fusion")
    _load_strict(model.decoder, decoder_sd, "decoder")
    if clip_state is not None:
        _load_clip(model.encoder, clip_state)
    model.eval()

    n_unused = sum(1 for k in (*trans, *dec) if is_unused_key(k))
    card = {
        "title": "HiSem (converted from the official checkpoint)",
        "description": (
            f"Converted by `changecap convert hisem-official` from the official HiSem checkpoint `{ckpt_path.name}` "
            "(Man-Wang-star/HiSem train.py layout: encoder_dict / encoder_trans_dict / decoder_dict). "
            "Fusion and decoder tensors are renamed one to one; no weight was trained or changed."
        ),
        "source checkpoint": f"{ckpt_path.name} (sha256 {_sha256(ckpt_path)})",
        "backbone": backbone_note,
        "inferred dimensions": ", ".join(f"{k}={v}" for k, v in dims.as_dict().items()),
        "options (not inferable from shapes)": (
            f"heads={heads}, decoder_heads={decoder_heads}, n_group={n_group}, topk_group={topk_group}, top_k={top_k}"
        ),
        "unused official tensors": (
            f"{n_unused} kept (official_unused_params=True)"
            if keep_unused
            else f"{n_unused} dropped (norm_add/norm_del, fc_alpha1..3, embedding_1D: never read by the forward pass)"
        ),
        "vocabulary": f"{vocab_path.name} ({len(vocab)} entries)",
    }
    return save_model(model, model.config, vocab, out_dir, card=card)


# ---------------------------------------------------------------------------------------------------- export
def export_hisem_official(model: Any, *, clip_prefix: str = "clip_model.visual.") -> dict[str, dict[str, torch.Tensor]]:
    """changecap HiSem module → official checkpoint dict (``encoder_trans_dict``, ``decoder_dict``[, ``encoder_dict``]).

    Unused official tensors the model does not keep are re-created as zeros; ``encoder_dict`` (only when the model
    has a backbone) holds the OpenAI-layout visual tower without ``proj`` and without the text tower.
    ``torch.save`` the result to get a file in the official format.
    """
    fusion_sd = {k: v.detach().cpu().clone() for k, v in model.fusion.state_dict().items()}
    decoder_sd = {k: v.detach().cpu().clone() for k, v in model.decoder.state_dict().items()}
    fc, dc = model.fusion.config, model.decoder.config
    if not (fc.use_bdam and fc.use_hasd):
        raise ModelError("only the full HiSem fusion (use_bdam and use_hasd) has an official layout")
    shared = fc.n_shared_experts
    if shared < 1:
        raise ModelError("the official layout needs a shared expert (n_shared_experts >= 1)")
    dims = OfficialHiSemDims(
        d_model=fc.dim, grid_h=fc.grid_size, grid_w=fc.grid_size, bdam_layers=fc.bdam_layers,
        modulator_hidden=fc.dim // fc.modulator_reduction, num_experts=fc.num_experts,
        expert_hidden=fc.expert_hidden, shared_hidden=fc.dim * shared, pwff_hidden=fc.pwff_hidden,
        vocab_size=dc.vocab_size, max_length=dc.max_length, decoder_layers=dc.layers, decoder_ff=dc.ffn_mult * dc.dim,
    )  # fmt: skip
    dec_map = decoder_key_map(dims.decoder_layers)
    out: dict[str, dict[str, torch.Tensor]] = {TRANS_KEY: {}, DECODER_KEY: {}}
    for table, src, name_of, part in (
        (official_trans_shapes(dims), fusion_sd, fusion_key, TRANS_KEY),
        (official_decoder_shapes(dims), decoder_sd, dec_map.__getitem__, DECODER_KEY),
    ):
        for key, shape in table.items():
            ours = name_of(key)
            if ours in src:
                out[part][key] = src[ours]
            elif is_unused_key(key):
                out[part][key] = torch.zeros(shape)
            else:
                raise RuntimeError(f"converter/export: {ours} not found in the model for official key {key}")
    if getattr(model, "encoder", None) is not None:
        out[ENCODER_KEY] = hf_clip_visual_to_openai(model.encoder.vision.state_dict(), prefix=clip_prefix)
    return out
