"""Official HiSem checkpoint converter: layout, validation, OpenAI-CLIP mapping and numerical equivalence.

The equivalence tests compare changecap's converted modules with an independent, plain re-statement of the
official forward pass (``docs/hisem.md``) written below as small functions that operate directly on the
official-named state dict tensors (``encoder_trans_dict``, ``decoder_dict``, OpenAI CLIP ``encoder_dict``). The
reference shares no code with ``changecap.models``; it runs in eval mode (no dropout, BatchNorm running statistics).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from changecap.convert import convert_hisem_official, export_hisem_official
from changecap.convert.official_layout import (
    OfficialHiSemDims,
    infer_official_dims,
    official_decoder_shapes,
    official_parameter_count,
    official_trans_shapes,
    synthetic_official_checkpoint,
    validate_official,
)
from changecap.convert.openai_clip import openai_clip_visual_to_hf, synthetic_openai_clip_state_dict
from changecap.data.vocab import Vocabulary
from changecap.errors import ConfigError, DataError, ModelError

SD = Mapping[str, torch.Tensor]
LAMBDA = 0.9  # BDAM constant
EPS = 1e-5  # LayerNorm / BatchNorm eps (PyTorch defaults)
NULL_ID, START_ID, END_ID = 0, 2, 3

# =============================================================================================== reference


def _ln(x: torch.Tensor, sd: SD, key: str) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[key + ".weight"], sd[key + ".bias"], EPS)


def _lin(x: torch.Tensor, sd: SD, key: str) -> torch.Tensor:
    return F.linear(x, sd[key + ".weight"], sd.get(key + ".bias"))


def _to_grid(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[B, L, D] row-major tokens → [B, D, H, W]."""
    b, length, d = x.shape
    assert length == h * w
    return x.transpose(1, 2).reshape(b, d, h, w)


def _from_grid(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


# ------------------------------------------------------------------------------------------------ 2-D position
def position_table(sd: SD) -> torch.Tensor:
    """pos(i, j) = concat(h_embedding[j], w_embedding[i]) for token t = i * W + j (the naming quirk)."""
    h_tab, w_tab = sd["h_embedding.weight"], sd["w_embedding.weight"]
    rows, cols = w_tab.shape[0], h_tab.shape[0]
    pos = []
    for i in range(rows):
        for j in range(cols):
            pos.append(torch.cat([h_tab[j], w_tab[i]]))
    return torch.stack(pos)


# ------------------------------------------------------------------------------------------------ BDAM
def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, length, d = x.shape
    return x.reshape(b, length, heads, d // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, length, hd = x.shape
    return x.transpose(1, 2).reshape(b, length, h * hd)


def bdam_layer(sd: SD, l: int, f1: torch.Tensor, f2: torch.Tensor, grid: tuple[int, int], heads: int):
    rows, cols = grid
    d = f1.shape[-1]
    fm = f"diff_attn.feat_modulators.{l}."
    gate = torch.sigmoid(_lin(torch.relu(_lin(torch.cat([f1, f2], -1), sd, fm + "gate_net.0")), sd, fm + "gate_net.2"))
    change = gate * (f1 - f2).abs()

    def local(x: torch.Tensor) -> torch.Tensor:
        conv = F.conv2d(_to_grid(x, rows, cols), sd[fm + "local_conv.weight"], None, padding=1, groups=d)
        return _ln(x + _from_grid(conv), sd, fm + "local_norm")

    e1, e2 = local(f1) + change, local(f2) + change
    s_add = _lin(change, sd, f"diff_attn.add_predictor_list.{l}")[..., 0]  # [B, L]
    s_del = _lin(change, sd, f"diff_attn.del_predictor_list.{l}")[..., 0]
    bias_add = torch.diag_embed(sd["diff_attn.add_scale"] * s_add)[:, None]  # [B, 1, L, L], diagonal only
    bias_del = torch.diag_embed(sd["diff_attn.del_scale"] * s_del)[:, None]
    bd = f"diff_attn.bidiff_modules.{l}."

    def proj(x: torch.Tensor, name: str) -> torch.Tensor:
        return _split_heads(F.linear(x, sd[bd + name + ".weight"]), heads)

    q_b, k_b, v_b = proj(e1, "q_b"), proj(e1, "k_b"), proj(e1, "v_b")
    q_a, k_a, v_a = proj(e2, "q_a"), proj(e2, "k_a"), proj(e2, "v_a")
    scale = 1.0 / math.sqrt(d // heads)
    a_ba = torch.softmax(q_b @ k_a.transpose(-1, -2) * scale + bias_add, -1)  # queries before, keys after
    a_ab = torch.softmax(q_a @ k_b.transpose(-1, -2) * scale + bias_del, -1)  # queries after, keys before
    o_add = _merge_heads((a_ba - LAMBDA * a_ab) @ v_a)
    o_del = _merge_heads((a_ab - LAMBDA * a_ba) @ v_b)
    g_b = torch.sigmoid(_lin(torch.cat([e1, o_del], -1), sd, bd + "fuse_gate_b"))
    p_b = _lin(g_b * o_del + (1 - g_b) * e1, sd, bd + "proj_b")
    g_a = torch.sigmoid(_lin(torch.cat([e2, o_add], -1), sd, bd + "fuse_gate_a"))
    p_a = _lin(g_a * o_add + (1 - g_a) * e2, sd, bd + "proj_a")
    return _ln(p_b, sd, f"diff_attn.norm_b_list.{l}"), _ln(p_a, sd, f"diff_attn.norm_a_list.{l}")


# ------------------------------------------------------------------------------------------------ HASD
def fuse_block(sd: SD, r: int, f1: torch.Tensor, f2: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    rows, cols = grid
    rb = f"moe.reblock{r}."
    x = F.conv2d(
        torch.cat([_to_grid(f1, rows, cols), _to_grid(f2, rows, cols)], 1),
        sd[rb + "Conv1_list.weight"],
        sd[rb + "Conv1_list.bias"],
    )

    def bn(y: torch.Tensor, i: int) -> torch.Tensor:
        k = f"{rb}LN_list.left.{i}."
        return F.batch_norm(
            y, sd[k + "running_mean"], sd[k + "running_var"], sd[k + "weight"], sd[k + "bias"], False, 0.0, EPS
        )

    y = torch.relu(bn(x, 0))
    y = F.conv2d(y, sd[rb + "LN_list.left.2.weight"], sd[rb + "LN_list.left.2.bias"], padding=1)
    y = torch.relu(bn(y, 3))
    y = F.conv2d(y, sd[rb + "LN_list.left.5.weight"], sd[rb + "LN_list.left.5.bias"])
    y = bn(y, 6)
    x = torch.relu(x + y)
    return _ln(_from_grid(x), sd, rb + "LN_norm")


def _swiglu(x: torch.Tensor, sd: SD, key: str) -> torch.Tensor:
    gate = F.linear(x, sd[key + "gate_proj.weight"])
    up = F.linear(x, sd[key + "up_proj.weight"])
    return F.linear(F.silu(gate) * up, sd[key + "down_proj.weight"])


def sparse_moe(sd: SD, h: torch.Tensor, n_group: int, topk_group: int, top_k: int) -> torch.Tensor:
    """DeepSeek-style MoE on [N, D] tokens, one token at a time."""
    scores = torch.sigmoid(F.linear(h, sd["moe.changemoe.gate.weight"]))  # [N, E]
    n_exp = scores.shape[1]
    per_group = n_exp // n_group
    out = _swiglu(h, sd, "moe.changemoe.shared_experts.")
    rows = []
    for t in range(h.shape[0]):
        s = scores[t]
        group_scores = torch.stack([s[g * per_group : (g + 1) * per_group].max() for g in range(n_group)])
        kept = set(torch.topk(group_scores, topk_group).indices.tolist())
        masked = torch.stack([s[e] if e // per_group in kept else s.new_zeros(()) for e in range(n_exp)])
        chosen = torch.topk(masked, top_k).indices.tolist()
        acc = out[t]
        for e in chosen:  # weights = raw sigmoid scores, no renormalisation, scaling 1.0
            acc = acc + s[e] * _swiglu(h[t], sd, f"moe.changemoe.experts.{e}.")
        rows.append(acc)
    return torch.stack(rows)


def fusion(
    sd: SD,
    f1: torch.Tensor,
    f2: torch.Tensor,
    *,
    heads: int,
    n_group: int,
    topk_group: int,
    top_k: int,
    route: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``encoder_trans`` in eval mode: (memory [B, L, D], router logits [B, 2])."""
    grid = (sd["w_embedding.weight"].shape[0], sd["h_embedding.weight"].shape[0])
    pos = position_table(sd)
    x1, x2 = f1 + pos, f2 + pos
    n_layers = len({k.split(".")[2] for k in sd if k.startswith("diff_attn.feat_modulators.")})
    for l in range(n_layers):
        x1, x2 = bdam_layer(sd, l, x1, x2, grid, heads)
    delta = x2 - x1
    z = F.linear(delta.mean(1), sd["moe.clsgate.weight"])
    r = z.argmax(-1) if route is None else route
    ys = []
    for b in range(f1.shape[0]):  # eval-mode BatchNorm: per-sample processing equals the batch split
        a, c = x1[b : b + 1], x2[b : b + 1]
        if int(r[b]) == 0:
            h = fuse_block(sd, 1, a, c, grid)
            ff = _lin(torch.relu(_lin(h, sd, "moe.pwff.fc1")), sd, "moe.pwff.fc2")
            ys.append(_ln(h + ff, sd, "moe.pwff.layer_norm"))
        else:
            h = fuse_block(sd, 2, a, c, grid)
            moe = sparse_moe(sd, h[0], n_group, topk_group, top_k)[None]
            ys.append(_ln(h + moe, sd, "moe.layer_norm"))
    y = torch.cat(ys)
    return _ln(x1 + x2 + y, sd, "layer_norm"), z


# ------------------------------------------------------------------------------------------------ decoder
def _mha(q_in: torch.Tensor, kv_in: torch.Tensor, sd: SD, key: str, heads: int, mask: torch.Tensor | None):
    """nn.MultiheadAttention semantics on batch-first tensors; in_proj rows are [q; k; v]."""
    d = q_in.shape[-1]
    w, b = sd[key + ".in_proj_weight"], sd[key + ".in_proj_bias"]
    q = _split_heads(F.linear(q_in, w[:d], b[:d]), heads)
    k = _split_heads(F.linear(kv_in, w[d : 2 * d], b[d : 2 * d]), heads)
    v = _split_heads(F.linear(kv_in, w[2 * d :], b[2 * d :]), heads)
    att = q @ k.transpose(-1, -2) / math.sqrt(d // heads)
    if mask is not None:
        att = att + mask
    return _lin(_merge_heads(torch.softmax(att, -1) @ v), sd, key + ".out_proj")


def decoder_logits(
    sd: SD, memory: torch.Tensor, tokens: torch.Tensor, *, heads: int, pad_ids: tuple[int, ...] = (NULL_ID, END_ID)
) -> torch.Tensor:
    """Teacher-forced logits [B, T, V]; key-padding mask on ``pad_ids`` (training: <NULL> and <END>)."""
    b, t = tokens.shape
    x = sd["vocab_embedding.weight"][tokens] + sd["position_encoding.pe"][:t, 0][None]  # no sqrt(d) scaling
    causal = torch.full((t, t), float("-inf"), dtype=x.dtype).triu(1)
    pad = torch.zeros(b, t, dtype=x.dtype)
    for pid in pad_ids:
        pad = pad.masked_fill(tokens == pid, float("-inf"))
    mask = causal[None, None] + pad[:, None, None, :]
    n_layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.layers.")})
    for l in range(n_layers):
        p = f"transformer.layers.{l}."
        h1 = _ln(x + _mha(x, x, sd, p + "self_attn", heads, mask), sd, p + "norm1")
        h2 = _ln(h1 + _mha(h1, memory, sd, p + "multihead_attn", heads, None), sd, p + "norm2")
        h3 = _ln(h2 + _lin(torch.relu(_lin(h2, sd, p + "linear1")), sd, p + "linear2"), sd, p + "norm3")
        x = h3 + x  # the extra outer residual from the layer input
    return _lin(x, sd, "wdc")


def greedy(sd: SD, memory: torch.Tensor, *, heads: int, max_length: int) -> list[list[int]]:
    """Official greedy decoding, one sample at a time, recomputing the whole prefix (inference mask: <NULL> only).

    Starts with <START>; each of at most ``max_length`` steps feeds the whole prefix and appends the argmax of the
    last position, stopping after <END> (so a sequence holds at most ``max_length + 1`` ids).
    """
    out = []
    for b in range(memory.shape[0]):
        seq = [START_ID]
        for _ in range(max_length):
            logits = decoder_logits(sd, memory[b : b + 1], torch.tensor([seq]), heads=heads, pad_ids=(NULL_ID,))
            nxt = int(logits[0, -1].argmax())
            seq.append(nxt)
            if nxt == END_ID:
                break
        out.append(seq)
    return out


# ------------------------------------------------------------------------------------------------ CLIP
def clip_patch_tokens(sd: SD, image: torch.Tensor, *, heads: int, prefix: str = "clip_model.visual.") -> torch.Tensor:
    """OpenAI CLIP visual forward → ln_post(last resblock tokens 1..L) (no ``proj``), QuickGELU MLP."""
    w = sd[prefix + "conv1.weight"]
    x = F.conv2d(image, w, stride=w.shape[-1])  # no bias
    x = _from_grid(x)
    cls = sd[prefix + "class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], 1) + sd[prefix + "positional_embedding"]
    x = _ln(x, sd, prefix + "ln_pre")
    n = len({k.split(".")[4] for k in sd if k.startswith(prefix + "transformer.resblocks.")})
    for i in range(n):
        r = f"{prefix}transformer.resblocks.{i}."
        y = _ln(x, sd, r + "ln_1")
        x = x + _mha(y, y, sd, r + "attn", heads, None)
        y = _lin(_ln(x, sd, r + "ln_2"), sd, r + "mlp.c_fc")
        x = x + _lin(y * torch.sigmoid(1.702 * y), sd, r + "mlp.c_proj")
    return _ln(x[:, 1:], sd, prefix + "ln_post")


# =============================================================================================== fixtures
#: small synthetic configuration: D=32, grid 4x4 (L=16), 2 BDAM layers, 4 experts in 2 groups, V=20, max_len 12
SMALL = OfficialHiSemDims(
    d_model=32, grid_h=4, grid_w=4, bdam_layers=2, modulator_hidden=8, num_experts=4, expert_hidden=48,
    shared_hidden=64, pwff_hidden=40, vocab_size=20, max_length=12, decoder_layers=2, decoder_ff=64,
)  # fmt: skip
HEADS, DEC_HEADS, N_GROUP, TOPK_GROUP, TOP_K = 4, 2, 2, 1, 2
CLIP_HEADS = 4


def small_checkpoint(seed: int = 0, encoder: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    ckpt = synthetic_official_checkpoint(SMALL, seed=seed)
    if encoder:  # tiny OpenAI CLIP: width 32, 16x16 images, patch 4 → the fusion's 4x4 grid
        ckpt["encoder_dict"] = synthetic_openai_clip_state_dict(width=32, layers=2, patch=4, grid=4, seed=seed + 1)
    # favour <END> just enough that, for features(4, seed=5), one greedy sequence stops early and the others run
    # to the length limit (checked in the test, so the comparison keeps covering both cases)
    ckpt["decoder_dict"]["wdc.bias"][END_ID] += 4.35
    return ckpt


# =============================================================================================== layout
def test_paper_layout_matches_spec_counts() -> None:
    """Key counts and parameter counts of the official modules in the paper configuration."""
    dims = OfficialHiSemDims.paper(501)
    trans, dec = official_trans_shapes(dims), official_decoder_shapes(dims)
    assert len(trans) == 188 and len(dec) == 29
    assert official_parameter_count(trans) == 81_253_192
    assert official_parameter_count(dec) == 13_802_997
    assert official_parameter_count(official_decoder_shapes(dims, include_unused=False)) == 10_221_813
    assert official_parameter_count(official_decoder_shapes(OfficialHiSemDims.paper(468))) == 13_752_276
    bdam = {k: v for k, v in trans.items() if k.startswith("diff_attn.")}
    moe = {k: v for k, v in trans.items() if k.startswith("moe.")}
    assert official_parameter_count(bdam) == 22_621_256
    assert official_parameter_count(moe) == 58_619_648
    assert trans["h_embedding.weight"] == (14, 384) and dec["position_encoding.pe"] == (41, 1, 768)


def test_infer_dims_from_shapes() -> None:
    ckpt = small_checkpoint()
    dims = infer_official_dims(ckpt["encoder_trans_dict"], ckpt["decoder_dict"])
    assert dims == SMALL
    assert dims.n_shared_experts == 2 and dims.modulator_reduction == 4
    validate_official(ckpt["encoder_trans_dict"], ckpt["decoder_dict"], dims)


def test_rectangular_grid_is_inferred_from_the_swapped_tables() -> None:
    """h_embedding is indexed by the column, w_embedding by the row."""
    dims = OfficialHiSemDims(**{**SMALL.as_dict(), "grid_h": 3, "grid_w": 5})
    ckpt = synthetic_official_checkpoint(dims)
    assert ckpt["encoder_trans_dict"]["h_embedding.weight"].shape == (5, 16)
    got = infer_official_dims(ckpt["encoder_trans_dict"], ckpt["decoder_dict"])
    assert (got.grid_h, got.grid_w) == (3, 5)


@pytest.mark.parametrize(
    ("part", "key", "new", "message"),
    [
        ("encoder_trans_dict", "diff_attn.bidiff_modules.1.q_b.weight", None, "missing official key"),
        ("encoder_trans_dict", "moe.reblock2.LN_list.left.3.running_var", None, "missing official key"),
        ("decoder_dict", "transformer.layers.1.norm3.bias", None, "missing official key"),
        ("encoder_trans_dict", "moe.changemoe.experts.3.up_proj.weight", (47, 32), "expected [48, 32], found [47, 32]"),
        ("decoder_dict", "wdc.bias", (19,), "expected [20], found [19]"),
        ("encoder_trans_dict", "diff_attn.lambda", (), "unexpected key"),
    ],
)
def test_validation_names_the_key(part: str, key: str, new: tuple[int, ...] | None, message: str) -> None:
    ckpt = small_checkpoint()
    if new is None:
        del ckpt[part][key]
    else:
        ckpt[part][key] = torch.zeros(new)
    with pytest.raises(ModelError) as err:
        dims = infer_official_dims(ckpt["encoder_trans_dict"], ckpt["decoder_dict"], source="x.pth")
        validate_official(ckpt["encoder_trans_dict"], ckpt["decoder_dict"], dims, source="x.pth")
    text = str(err.value)
    assert key in text and message in text and "x.pth" in text and "\n" not in text


def test_unused_tensors_may_be_absent() -> None:
    ckpt = synthetic_official_checkpoint(SMALL, include_unused=False)
    assert "transformer.layers.0.fc_alpha1.weight" not in ckpt["decoder_dict"]
    dims = infer_official_dims(ckpt["encoder_trans_dict"], ckpt["decoder_dict"])
    validate_official(ckpt["encoder_trans_dict"], ckpt["decoder_dict"], dims)


# =============================================================================================== CLIP mapping
def test_openai_clip_maps_onto_transformers_clip_vision_model() -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    sd = {k: v.double() for k, v in synthetic_openai_clip_state_dict(width=32, layers=2, patch=4, grid=3).items()}
    cfg, hf = openai_clip_visual_to_hf(sd, heads=CLIP_HEADS)
    assert (cfg["image_size"], cfg["patch_size"], cfg["num_hidden_layers"]) == (12, 4, 2)
    assert cfg["hidden_act"] == "quick_gelu" and cfg["intermediate_size"] == 128
    model = CLIPVisionModel(CLIPVisionConfig(**cfg)).double().eval()
    missing, unexpected = model.load_state_dict(hf, strict=True)
    assert not missing and not unexpected
    image = torch.randn(2, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hidden = model(pixel_values=image).last_hidden_state
        ours = model.post_layernorm(hidden[:, 1:])
    ref = clip_patch_tokens(sd, image, heads=CLIP_HEADS)
    assert ours.shape == (2, 9, 32)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def test_openai_clip_errors_name_the_key() -> None:
    sd = synthetic_openai_clip_state_dict()
    del sd["clip_model.visual.transformer.resblocks.1.mlp.c_proj.bias"]
    with pytest.raises(ModelError, match=r"resblocks\.1\.mlp\.c_proj\.bias.*missing"):
        openai_clip_visual_to_hf(sd, heads=4)
    sd = synthetic_openai_clip_state_dict()
    sd["clip_model.visual.ln_post.weight"] = torch.ones(31)
    with pytest.raises(ModelError, match=r"ln_post\.weight.*expected \[32\], found \[31\]"):
        openai_clip_visual_to_hf(sd, heads=4)


# =============================================================================================== conversion
CONVERT_OPTS = {"heads": HEADS, "decoder_heads": DEC_HEADS, "n_group": N_GROUP, "topk_group": TOPK_GROUP,
                "top_k": TOP_K, "clip_heads": CLIP_HEADS}  # fmt: skip


def write_vocab(path: Path, size: int) -> Path:
    Vocabulary.build([[f"w{i:02d}" for i in range(size - 4)]], threshold=0, rule="ge").save(path)
    return path


def double(sd: SD) -> dict[str, torch.Tensor]:
    return {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The small official checkpoint (with a tiny CLIP encoder_dict), converted and re-loaded in float64."""
    import changecap

    tmp = tmp_path_factory.mktemp("hisem_official")
    ckpt = small_checkpoint(encoder=True)
    torch.save(ckpt, tmp / "official.pth")
    vocab = write_vocab(tmp / "vocab.json", SMALL.vocab_size)
    out = convert_hisem_official(tmp / "official.pth", tmp / "model", vocab, **CONVERT_OPTS)
    model = changecap.load_model(out).double().eval()
    return {"ckpt": ckpt, "dir": out, "model": model, "tmp": tmp, "vocab": vocab}


def features(batch: int, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, SMALL.grid_h * SMALL.grid_w, SMALL.d_model)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def ref_fusion(ckpt: dict, f1: torch.Tensor, f2: torch.Tensor, route: torch.Tensor | None = None):
    sd = double(ckpt["encoder_trans_dict"])
    return fusion(sd, f1, f2, heads=HEADS, n_group=N_GROUP, topk_group=TOPK_GROUP, top_k=TOP_K, route=route)


def test_converted_directory_and_card(converted: dict) -> None:
    from changecap.models.hisem import HiSem

    out, model = converted["dir"], converted["model"]
    assert {"config.json", "model.safetensors", "vocab.json", "README.md"} <= {p.name for p in out.iterdir()}
    assert isinstance(model, HiSem) and model.encoder is not None
    fc, dc = model.fusion.config, model.decoder.config
    assert (fc.dim, fc.grid_size, fc.bdam_layers, fc.num_experts, fc.n_shared_experts) == (32, 4, 2, 4, 2)
    assert (fc.modulator_reduction, fc.expert_hidden, fc.pwff_hidden, fc.heads) == (4, 48, 40, HEADS)
    assert (fc.n_group, fc.topk_group, fc.top_k) == (N_GROUP, TOPK_GROUP, TOP_K)
    assert (dc.vocab_size, dc.max_length, dc.layers, dc.ffn_mult, dc.heads) == (20, 12, 2, 2, DEC_HEADS)
    card = (out / "README.md").read_text()
    assert "Converted" in card and "official.pth" in card and "sha256" in card and "dropped" in card


def test_fusion_matches_official_reference(converted: dict) -> None:
    """Memory and router logits; the MoE gate and expert accumulation run in fp32 (as officially), hence 1e-5 there."""
    model, ckpt = converted["model"], converted["ckpt"]
    f1, f2 = features(4)
    with torch.no_grad():
        memory, logits = model.fusion(f1, f2, route=None)
        ref_memory, ref_logits = ref_fusion(ckpt, f1, f2)
        assert memory.shape == (4, 16, 32) and logits.shape == (4, 2)
        torch.testing.assert_close(logits.double(), ref_logits, rtol=1e-6, atol=1e-6)  # router runs in fp32
        torch.testing.assert_close(memory, ref_memory, rtol=1e-5, atol=1e-5)
        route = torch.tensor([0, 1, 1, 0])  # both HASD paths, whatever the router says
        memory, _ = model.fusion(f1, f2, route=route)
        ref_memory, _ = ref_fusion(ckpt, f1, f2, route=route)
        torch.testing.assert_close(memory, ref_memory, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(memory[1], model.fusion(f1, f2, route=torch.zeros(4, dtype=torch.long))[0][1])
        unchanged = torch.zeros(4, dtype=torch.long)  # no fp32 island on this path: float64 agreement
        memory, _ = model.fusion(f1, f2, route=unchanged)
        ref_memory, _ = ref_fusion(ckpt, f1, f2, route=unchanged)
        torch.testing.assert_close(memory, ref_memory, rtol=1e-9, atol=1e-9)


def test_decoder_and_greedy_match_official_reference(converted: dict) -> None:
    model, ckpt = converted["model"], converted["ckpt"]
    dec = double(ckpt["decoder_dict"])
    f1, f2 = features(4, seed=5)
    tokens = torch.tensor(
        [
            [2, 5, 6, 7, 8, 3, 0, 0, 0, 0],
            [2, 9, 3, 0, 0, 0, 0, 0, 0, 0],
            [2, 4, 11, 12, 13, 14, 15, 16, 17, 3],
            [2, 1, 19, 3, 0, 0, 0, 0, 0, 0],
        ]
    )
    with torch.no_grad():
        memory, _ = model.fusion(f1, f2)
        logits = model.decoder(memory, tokens)
        ref = decoder_logits(dec, memory, tokens, heads=DEC_HEADS)  # training mask: <NULL> and <END> keys
        real = tokens != NULL_ID
        assert logits.shape == (4, 10, 20)
        torch.testing.assert_close(logits[real], ref[real], rtol=1e-9, atol=1e-9)
        seqs = model.generate(memory, max_length=SMALL.max_length, beam_size=1)
        uncached = model.generate(memory, max_length=SMALL.max_length, beam_size=1, use_cache=False)
    ref_seqs = greedy(dec, memory, heads=DEC_HEADS, max_length=SMALL.max_length)
    assert seqs == ref_seqs == uncached
    lengths = {len(s) for s in ref_seqs}
    assert SMALL.max_length + 1 in lengths and min(lengths) < SMALL.max_length  # stops early and at the limit
    assert all(s[0] == START_ID for s in seqs) and any(s[-1] == END_ID for s in seqs)


def test_clip_encoder_matches_openai_reference(converted: dict) -> None:
    model, ckpt = converted["model"], converted["ckpt"]
    image = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        tokens = model.encoder(image)
    ref = clip_patch_tokens(double(ckpt["encoder_dict"]), image, heads=CLIP_HEADS)
    assert tokens.shape == (2, 16, 32)
    torch.testing.assert_close(tokens, ref, rtol=1e-9, atol=1e-9)
    cfg = model.config.encoder
    assert cfg.pretrained is None and cfg.config["hidden_act"] == "quick_gelu" and cfg.config["image_size"] == 16


def test_no_encoder_runs_from_backbone_tokens(converted: dict, tmp_path: Path) -> None:
    import changecap

    out = convert_hisem_official(
        converted["tmp"] / "official.pth", tmp_path / "m", converted["vocab"], encoder="none", **CONVERT_OPTS
    )
    model = changecap.load_model(out).double()
    assert model.encoder is None
    f1, f2 = features(2)
    with torch.no_grad():
        memory, logits = model.fusion(f1, f2, route=None)
        full_memory, _ = converted["model"].fusion(f1, f2)
        torch.testing.assert_close(memory, full_memory, rtol=0, atol=0)
        assert model.decoder(memory, torch.tensor([[2, 5, 3], [2, 6, 3]])).shape == (2, 3, 20)
        assert len(model.generate(memory, max_length=5)) == 2
    assert "none" in (out / "README.md").read_text()


def test_checkpoint_without_encoder_dict_gives_a_model_without_backbone(tmp_path: Path) -> None:
    import changecap

    torch.save(small_checkpoint(), tmp_path / "c.pth")
    vocab = write_vocab(tmp_path / "vocab.json", 20)
    out = convert_hisem_official(tmp_path / "c.pth", tmp_path / "m", vocab, **CONVERT_OPTS)
    assert changecap.load_model(out).encoder is None


def test_vocabulary_size_must_match(tmp_path: Path) -> None:
    torch.save(small_checkpoint(), tmp_path / "c.pth")
    vocab = write_vocab(tmp_path / "small_vocab.json", 19)
    with pytest.raises(ModelError) as err:
        convert_hisem_official(tmp_path / "c.pth", tmp_path / "m", vocab, **CONVERT_OPTS)
    assert "small_vocab.json" in str(err.value) and "19" in str(err.value) and "20" in str(err.value)
    assert not (tmp_path / "m").exists()


def test_conversion_errors_are_one_line(tmp_path: Path) -> None:
    vocab = write_vocab(tmp_path / "vocab.json", 20)
    ckpt = small_checkpoint()
    del ckpt["encoder_trans_dict"]["moe.changemoe.experts.2.down_proj.weight"]
    torch.save(ckpt, tmp_path / "missing.pth")
    with pytest.raises(ModelError, match=r"missing\.pth.*experts\.2\.down_proj\.weight.*missing official key"):
        convert_hisem_official(tmp_path / "missing.pth", tmp_path / "m", vocab, **CONVERT_OPTS)
    torch.save({"decoder_dict": {}}, tmp_path / "partial.pth")
    with pytest.raises(ModelError, match="encoder_trans_dict"):
        convert_hisem_official(tmp_path / "partial.pth", tmp_path / "m", vocab, **CONVERT_OPTS)
    torch.save(small_checkpoint(), tmp_path / "ok.pth")
    with pytest.raises(ConfigError, match="heads"):
        convert_hisem_official(tmp_path / "ok.pth", tmp_path / "m", vocab, **{**CONVERT_OPTS, "heads": 5})
    with pytest.raises(ConfigError, match="n_group"):
        convert_hisem_official(tmp_path / "ok.pth", tmp_path / "m", vocab, **{**CONVERT_OPTS, "n_group": 3})
    with pytest.raises(DataError, match="nope.json"):
        convert_hisem_official(tmp_path / "ok.pth", tmp_path / "m", tmp_path / "nope.json", **CONVERT_OPTS)


class _NotATensor:  # pickled as a global: weights_only loading must refuse it instead of running code
    pass


def test_checkpoint_is_loaded_weights_only(tmp_path: Path) -> None:
    ckpt = small_checkpoint()
    ckpt["extra"] = _NotATensor()  # type: ignore[assignment]
    torch.save(ckpt, tmp_path / "pickled.pth")
    vocab = write_vocab(tmp_path / "vocab.json", 20)
    with pytest.raises(ModelError, match="weights-only") as err:
        convert_hisem_official(tmp_path / "pickled.pth", tmp_path / "m", vocab, **CONVERT_OPTS)
    assert "\n" not in str(err.value)


def test_dataparallel_prefix_and_legacy_serialisation(tmp_path: Path) -> None:
    from changecap.convert.official_layout import load_official_checkpoint

    ckpt = small_checkpoint()
    wrapped = {part: {f"module.{k}": v for k, v in sd.items()} for part, sd in ckpt.items()}
    torch.save(wrapped, tmp_path / "dp.pth", _use_new_zipfile_serialization=False)  # not mmap-able: fallback path
    loaded = load_official_checkpoint(tmp_path / "dp.pth")
    for part, sd in ckpt.items():
        assert loaded[part].keys() == sd.keys() and all(torch.equal(loaded[part][k], v) for k, v in sd.items())


def test_export_round_trip_is_identity_on_used_tensors(converted: dict, tmp_path: Path) -> None:
    import changecap
    from changecap.convert.official_layout import is_unused_key

    ckpt = converted["ckpt"]
    model = changecap.load_model(converted["dir"])  # float32, as converted
    back = export_hisem_official(model)
    for part in ("encoder_trans_dict", "decoder_dict"):
        assert set(back[part]) == set(ckpt[part])
        for key, value in ckpt[part].items():
            if is_unused_key(key):
                assert torch.count_nonzero(back[part][key]) == 0 and back[part][key].shape == value.shape
            else:
                assert torch.equal(back[part][key], value), key
    enc = ckpt["encoder_dict"]
    visual = {k: v for k, v in enc.items() if k.startswith("clip_model.visual.") and k != "clip_model.visual.proj"}
    assert set(back["encoder_dict"]) == set(visual)
    assert all(torch.equal(back["encoder_dict"][k], v) for k, v in visual.items())
    # keep_unused: the unused tensors survive too, so the round trip is the identity on everything
    out = convert_hisem_official(
        converted["tmp"] / "official.pth", tmp_path / "k", converted["vocab"], keep_unused=True, **CONVERT_OPTS
    )
    kept = changecap.load_model(out)
    assert kept.fusion.config.official_unused_params and kept.decoder.config.official_unused_params
    again = export_hisem_official(kept)
    for part in ("encoder_trans_dict", "decoder_dict"):
        assert all(torch.equal(again[part][k], v) for k, v in ckpt[part].items())


def test_encoder_from_a_transformers_clip_directory(converted: dict, tmp_path: Path) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    import changecap

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=16, patch_size=4, hidden_act="quick_gelu")  # fmt: skip
    CLIPVisionModel(cfg).save_pretrained(tmp_path / "clip")
    out = convert_hisem_official(
        converted["tmp"] / "official.pth", tmp_path / "m", converted["vocab"], encoder=str(tmp_path / "clip"),
        **CONVERT_OPTS,
    )  # fmt: skip
    model = changecap.load_model(out)
    saved = CLIPVisionModel.from_pretrained(tmp_path / "clip").state_dict()
    ours = model.encoder.vision.state_dict()
    assert model.encoder.num_layers == 1 and all(torch.equal(ours[k], v) for k, v in saved.items())
    assert "transformers CLIP" in (out / "README.md").read_text()
    # a backbone whose grid does not match the fusion's is refused with a config error naming the field
    cfg.image_size = 20
    CLIPVisionModel(cfg).save_pretrained(tmp_path / "clip20")
    with pytest.raises(ConfigError, match="grid_size"):
        convert_hisem_official(
            converted["tmp"] / "official.pth", tmp_path / "m20", converted["vocab"], encoder=str(tmp_path / "clip20"),
            **CONVERT_OPTS,
        )  # fmt: skip
