"""OpenAI CLIP visual tower (``clip`` package state dict) → ``transformers`` ``CLIPVisionModel`` state dict.

Name map (``{p}`` = ``clip_model.visual.`` in an official HiSem checkpoint, ``visual.`` in a bare CLIP state dict):

=========================================================  ================================================
OpenAI CLIP                                                transformers ``CLIPVisionModel``
=========================================================  ================================================
``{p}conv1.weight`` [W, 3, P, P]                           ``embeddings.patch_embedding.weight``
``{p}class_embedding`` [W]                                 ``embeddings.class_embedding``
``{p}positional_embedding`` [1 + G², W]                    ``embeddings.position_embedding.weight``
``{p}ln_pre.*``                                            ``pre_layrnorm.*`` (sic, transformers' spelling)
``{p}transformer.resblocks.{i}.attn.in_proj_weight/bias``  ``encoder.layers.{i}.self_attn.{q,k,v}_proj.*``
``{p}transformer.resblocks.{i}.attn.out_proj.*``           ``encoder.layers.{i}.self_attn.out_proj.*``
``{p}transformer.resblocks.{i}.ln_1.*`` / ``ln_2.*``       ``encoder.layers.{i}.layer_norm1.*`` / ``layer_norm2.*``
``{p}transformer.resblocks.{i}.mlp.c_fc.*`` / ``c_proj.*`` ``encoder.layers.{i}.mlp.fc1.*`` / ``fc2.*``
``{p}ln_post.*``                                           ``post_layernorm.*``
``{p}proj`` [W, E] and the whole text tower                dropped (not used for patch tokens)
=========================================================  ================================================

Config: ``hidden_act='quick_gelu'`` (OpenAI CLIP's activation), ``layer_norm_eps=1e-5``, width / layers / patch size /
image size / MLP width from shapes; heads are not in the shapes: OpenAI's rule ``width // 64`` unless given.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from changecap.errors import ModelError

StateDict = Mapping[str, torch.Tensor]

#: prefixes under which the visual tower is looked for, in order
VISUAL_PREFIXES: tuple[str, ...] = ("clip_model.visual.", "visual.", "")


def find_visual_prefix(sd: StateDict) -> str | None:
    """The prefix of the OpenAI CLIP visual tower in ``sd`` (``clip_model.visual.`` in official checkpoints)."""
    for p in VISUAL_PREFIXES:
        if p + "conv1.weight" in sd:
            return p
    return None


def _need(sd: StateDict, key: str, where: str, shape: tuple[int, ...] | None = None, ndim: int | None = None):
    if key not in sd:
        exp = f" (expected shape {list(shape)})" if shape is not None else ""
        raise ModelError(f"{where} [{key}]: missing official key{exp}")
    t = sd[key]
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ModelError(f"{where} [{key}]: wrong shape: expected {list(shape)}, found {list(t.shape)}")
    if ndim is not None and t.ndim != ndim:
        raise ModelError(f"{where} [{key}]: expected a {ndim}-D tensor, found shape {list(t.shape)}")
    return t


def infer_clip_vision_config(
    sd: StateDict, prefix: str = "clip_model.visual.", *, heads: int | None = None, where: str = "encoder_dict"
) -> dict[str, Any]:
    """``transformers.CLIPVisionConfig`` keyword arguments inferred from an OpenAI CLIP visual state dict."""
    conv = _need(sd, prefix + "conv1.weight", where, ndim=4)
    width, channels, patch, patch2 = (int(x) for x in conv.shape)
    if patch != patch2:
        raise ModelError(f"{where} [{prefix}conv1.weight]: non-square patch {patch}x{patch2} is not supported")
    pos = _need(sd, prefix + "positional_embedding", where, ndim=2)
    n_tok = int(pos.shape[0]) - 1
    side = math.isqrt(max(n_tok, 0))
    if side * side != n_tok or pos.shape[1] != width:
        raise ModelError(
            f"{where} [{prefix}positional_embedding]: expected [1 + G*G, {width}] for a square G x G patch grid, "
            f"found {list(pos.shape)}"
        )
    pat = re.compile(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.")
    idx = {int(m.group(1)) for k in sd if (m := pat.match(k))}
    layers = 0
    while layers in idx:
        layers += 1
    if layers == 0:
        raise ModelError(f"{where} [{prefix}transformer.resblocks.0.attn.in_proj_weight]: missing official key")
    if idx != set(range(layers)):
        raise ModelError(f"{where} [{prefix}transformer.resblocks.{layers}]: resblock indices are not contiguous")
    c_fc = _need(sd, f"{prefix}transformer.resblocks.0.mlp.c_fc.weight", where, ndim=2)
    n_heads = heads if heads is not None else max(1, width // 64)
    if n_heads <= 0 or width % n_heads:
        raise ModelError(f"CLIP heads: {n_heads} heads do not divide the CLIP width {width}")
    return {
        "hidden_size": width,
        "intermediate_size": int(c_fc.shape[0]),
        "num_hidden_layers": layers,
        "num_attention_heads": n_heads,
        "num_channels": channels,
        "image_size": patch * side,
        "patch_size": patch,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    }


def openai_clip_visual_to_hf(
    sd: StateDict, prefix: str | None = None, *, heads: int | None = None, where: str = "encoder_dict"
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Map an OpenAI CLIP visual tower onto ``CLIPVisionModel`` names.

    Returns ``(config_kwargs, state_dict)``; the state dict uses the names of ``CLIPVisionModel(config).state_dict()``
    minus any ``vision_model.`` prefix (i.e. the names relative to the vision transformer). Every key and shape is
    checked; the text tower and ``proj`` are ignored.
    """
    if prefix is None:
        prefix = find_visual_prefix(sd)
        if prefix is None:
            raise ModelError(f"{where} [clip_model.visual.conv1.weight]: missing official key (no CLIP visual tower)")
    cfg = infer_clip_vision_config(sd, prefix, heads=heads, where=where)
    W, F, P = cfg["hidden_size"], cfg["intermediate_size"], cfg["patch_size"]
    n_tok = (cfg["image_size"] // P) ** 2 + 1
    vec = (W,)
    out: dict[str, torch.Tensor] = {
        "embeddings.patch_embedding.weight": _need(sd, prefix + "conv1.weight", where, (W, cfg["num_channels"], P, P)),
        "embeddings.class_embedding": _need(sd, prefix + "class_embedding", where, vec),
        "embeddings.position_embedding.weight": _need(sd, prefix + "positional_embedding", where, (n_tok, W)),
        "pre_layrnorm.weight": _need(sd, prefix + "ln_pre.weight", where, vec),
        "pre_layrnorm.bias": _need(sd, prefix + "ln_pre.bias", where, vec),
        "post_layernorm.weight": _need(sd, prefix + "ln_post.weight", where, vec),
        "post_layernorm.bias": _need(sd, prefix + "ln_post.bias", where, vec),
    }
    for i in range(cfg["num_hidden_layers"]):
        src = f"{prefix}transformer.resblocks.{i}."
        dst = f"encoder.layers.{i}."
        w_in = _need(sd, src + "attn.in_proj_weight", where, (3 * W, W))
        b_in = _need(sd, src + "attn.in_proj_bias", where, (3 * W,))
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):  # in_proj rows are [q; k; v]
            out[f"{dst}self_attn.{name}.weight"] = w_in[j * W : (j + 1) * W]
            out[f"{dst}self_attn.{name}.bias"] = b_in[j * W : (j + 1) * W]
        out[dst + "self_attn.out_proj.weight"] = _need(sd, src + "attn.out_proj.weight", where, (W, W))
        out[dst + "self_attn.out_proj.bias"] = _need(sd, src + "attn.out_proj.bias", where, vec)
        for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2")):
            out[f"{dst}{b}.weight"] = _need(sd, f"{src}{a}.weight", where, vec)
            out[f"{dst}{b}.bias"] = _need(sd, f"{src}{a}.bias", where, vec)
        out[dst + "mlp.fc1.weight"] = _need(sd, src + "mlp.c_fc.weight", where, (F, W))
        out[dst + "mlp.fc1.bias"] = _need(sd, src + "mlp.c_fc.bias", where, (F,))
        out[dst + "mlp.fc2.weight"] = _need(sd, src + "mlp.c_proj.weight", where, (W, F))
        out[dst + "mlp.fc2.bias"] = _need(sd, src + "mlp.c_proj.bias", where, vec)
    return cfg, {k: v.detach().clone().contiguous() for k, v in out.items()}


def hf_clip_visual_to_openai(sd: StateDict, prefix: str = "clip_model.visual.") -> dict[str, torch.Tensor]:
    """Inverse of :func:`openai_clip_visual_to_hf` for the visual tower (``proj`` is not re-created)."""
    sd = {k.removeprefix("vision_model."): v for k, v in sd.items()}
    out = {
        prefix + "conv1.weight": sd["embeddings.patch_embedding.weight"],
        prefix + "class_embedding": sd["embeddings.class_embedding"],
        prefix + "positional_embedding": sd["embeddings.position_embedding.weight"],
        prefix + "ln_pre.weight": sd["pre_layrnorm.weight"],
        prefix + "ln_pre.bias": sd["pre_layrnorm.bias"],
        prefix + "ln_post.weight": sd["post_layernorm.weight"],
        prefix + "ln_post.bias": sd["post_layernorm.bias"],
    }
    i = 0
    while f"encoder.layers.{i}.self_attn.q_proj.weight" in sd:
        s, d = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        out[d + "attn.in_proj_weight"] = torch.cat([sd[f"{s}self_attn.{n}_proj.weight"] for n in "qkv"])
        out[d + "attn.in_proj_bias"] = torch.cat([sd[f"{s}self_attn.{n}_proj.bias"] for n in "qkv"])
        out[d + "attn.out_proj.weight"] = sd[s + "self_attn.out_proj.weight"]
        out[d + "attn.out_proj.bias"] = sd[s + "self_attn.out_proj.bias"]
        for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2")):
            out[f"{d}{a}.weight"] = sd[f"{s}{b}.weight"]
            out[f"{d}{a}.bias"] = sd[f"{s}{b}.bias"]
        out[d + "mlp.c_fc.weight"] = sd[s + "mlp.fc1.weight"]
        out[d + "mlp.c_fc.bias"] = sd[s + "mlp.fc1.bias"]
        out[d + "mlp.c_proj.weight"] = sd[s + "mlp.fc2.weight"]
        out[d + "mlp.c_proj.bias"] = sd[s + "mlp.fc2.bias"]
        i += 1
    return {k: v.detach().clone() for k, v in out.items()}


def synthetic_openai_clip_state_dict(
    width: int = 32,
    layers: int = 2,
    patch: int = 8,
    grid: int = 2,
    mlp: int | None = None,
    embed_dim: int = 16,
    *,
    seed: int = 0,
    prefix: str = "clip_model.",
    text_tower: bool = True,
) -> dict[str, torch.Tensor]:
    """A random OpenAI-CLIP-layout state dict (visual tower + a token text tower), for tests."""
    g = torch.Generator().manual_seed(seed)
    F = mlp or 4 * width
    v = prefix + "visual."

    def w(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g) / math.sqrt(shape[-1] if len(shape) > 1 else 1)

    def ln(key: str, out: dict[str, torch.Tensor]) -> None:
        out[key + ".weight"] = 1.0 + 0.1 * torch.randn(width, generator=g)
        out[key + ".bias"] = 0.1 * torch.randn(width, generator=g)

    sd: dict[str, torch.Tensor] = {
        v + "conv1.weight": torch.randn(width, 3, patch, patch, generator=g) / math.sqrt(3 * patch * patch),
        v + "class_embedding": 0.5 * torch.randn(width, generator=g),
        v + "positional_embedding": 0.1 * torch.randn(grid * grid + 1, width, generator=g),
        v + "proj": w(width, embed_dim),
    }
    ln(v + "ln_pre", sd)
    ln(v + "ln_post", sd)
    for i in range(layers):
        r = f"{v}transformer.resblocks.{i}."
        sd[r + "attn.in_proj_weight"] = w(3 * width, width)
        sd[r + "attn.in_proj_bias"] = 0.1 * torch.randn(3 * width, generator=g)
        sd[r + "attn.out_proj.weight"] = w(width, width)
        sd[r + "attn.out_proj.bias"] = 0.1 * torch.randn(width, generator=g)
        ln(r + "ln_1", sd)
        ln(r + "ln_2", sd)
        sd[r + "mlp.c_fc.weight"] = w(F, width)
        sd[r + "mlp.c_fc.bias"] = 0.1 * torch.randn(F, generator=g)
        sd[r + "mlp.c_proj.weight"] = w(width, F)
        sd[r + "mlp.c_proj.bias"] = 0.1 * torch.randn(width, generator=g)
    if text_tower:
        sd[prefix + "positional_embedding"] = torch.randn(7, width, generator=g)
        sd[prefix + "text_projection"] = w(width, embed_dim)
        sd[prefix + "logit_scale"] = torch.tensor(4.6052)
        sd[prefix + "token_embedding.weight"] = torch.randn(11, width, generator=g)
        sd[prefix + "transformer.resblocks.0.attn.in_proj_weight"] = w(3 * width, width)
        sd[prefix + "ln_final.weight"] = torch.ones(width)
        sd[prefix + "ln_final.bias"] = torch.zeros(width)
    return sd
