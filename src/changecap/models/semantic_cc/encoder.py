"""Bi-temporal SAM ViT encoder with change semantic filters and LoRA (``docs/semantic_cc.md``).

Both dates go through one pass of transformers' SAM vision encoder, stacked along the batch with the *before*
images first (rows 0..B−1) and the *after* images second (rows B..2B−1): every BCSF splits the batch in those halves.
After chosen blocks a :class:`~changecap.models.semantic_cc.bcsf.BCSF` mixes the two dates. Two streams leave the
encoder: the raw last-block tokens (captioning) and SAM's own channel-reduction neck (change detection).

Real weights come from ``SamVisionModel.from_pretrained(...)`` at SAM's native 1024 px and are resized onto the
256 px model, as the released code does: absolute position embedding 64×64 → 16×16 (bicubic) and the relative-position
tables of the global-attention blocks 127 → 31 entries (linear); windowed blocks keep their 27 entries. LoRA
(``peft``) adapts the ``qkv`` projections; every original SAM weight, its neck included, stays frozen.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from changecap.errors import ConfigError, ModelError, first_line
from changecap.models.semantic_cc.bcsf import BCSF
from changecap.models.semantic_cc.config import LoraConfig, SAMEncoderConfig

RANDOM_INIT_RANGE = 0.02  # std of a random-init SAM trunk's weights, unless the config sets initializer_range


def sam_vision_config(fields: dict[str, Any], prefix: str = "model.encoder.config") -> Any:
    """``SamVisionConfig`` from plain fields, with one-line errors for unknown or rejected ones."""
    from transformers import SamVisionConfig

    known = set(SamVisionConfig().to_dict())
    for key in fields:
        if key not in known:
            raise ConfigError(f"{prefix}.{key}", "not a SamVisionConfig field")
    # SamVisionConfig's default initializer_range is 1e-10 (SAM is only ever loaded pretrained): a randomly
    # initialised trunk would start with every Linear and the patch embedding at ~0, so the image barely reaches the
    # output and learning stalls for hundreds of updates, or for good on some seeds. 0.02 is ViT's / CLIP's init.
    fields = {"initializer_range": RANDOM_INIT_RANGE, **fields}
    try:
        cfg = SamVisionConfig(**fields)
    except (TypeError, ValueError) as e:
        raise ConfigError(prefix, f"rejected by SamVisionConfig: {' '.join(str(e).split())}") from None
    cfg._attn_implementation = "sdpa"
    return cfg


def inject_lora(module: nn.Module, lora: LoraConfig, what: str) -> nn.Module:
    """Add LoRA adapters to ``module``'s target Linear layers in place (``peft.inject_adapter_in_model``)."""
    import peft

    config = peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        bias=lora.bias,
        target_modules=list(lora.target_modules),
    )
    try:
        return peft.inject_adapter_in_model(config, module)
    except ValueError as e:  # no module of that name: a config error, not a crash
        raise ConfigError(f"{what}.target_modules", f"{' '.join(str(e).split())[:200]}") from None


def freeze_except_lora(module: nn.Module, bias: str) -> None:
    """Only LoRA tensors train (and, with ``bias="lora_only"``, the biases of the adapted layers)."""
    adapted = {name.rsplit(".lora_A", 1)[0] for name, _ in module.named_modules() if name.endswith(".lora_A")}
    adapted_biases = {f"{a}.base_layer.bias" for a in adapted}
    for name, p in module.named_parameters():
        trainable = "lora_" in name
        if bias == "lora_only":
            trainable = trainable or name in adapted_biases
        elif bias == "all":
            trainable = trainable or name.endswith(".bias")
        p.requires_grad_(trainable)


def adapt_pretrained(module: nn.Module, lora: LoraConfig, field: str, train_all: bool) -> None:
    """What of a pretrained backbone trains: only LoRA adapters (``lora.enabled``), nothing, or — for a randomly
    initialised one (``train_all``) — every weight."""
    if lora.enabled:
        inject_lora(module, lora, field)
        freeze_except_lora(module, lora.bias)
    else:
        module.requires_grad_(False)
    if train_all:
        module.requires_grad_(True)


class BiTemporalSAMEncoder(nn.Module):
    """Image pairs [B, 2, 3, S, S] → (raw tokens [2B, L, C], CD tokens [2B, L, C_cd]); rows 0..B−1 = before."""

    def __init__(self, sam: nn.Module, config: SAMEncoderConfig) -> None:
        super().__init__()
        self.sam = sam  # transformers SamVisionEncoder: patch_embed, pos_embed, layers, neck
        self.config = config
        grid, dim = config.grid_size, config.hidden_size
        self.bcsf = nn.ModuleDict({str(i): BCSF(dim, grid, config.bcsf_form) for i in config.bcsf_blocks()})
        adapt_pretrained(self.sam, config.lora, "model.encoder.lora", config.train_backbone)
        self.bcsf.requires_grad_(config.bcsf_trainable)

    @property
    def image_size(self) -> int:
        return self.config.config["image_size"]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.image_size
        if images.dim() != 5 or images.shape[1] != 2 or images.shape[2] != 3 or images.shape[-2:] != (s, s):
            raise ModelError(f"Semantic-CC expects image pairs [B, 2, 3, {s}, {s}], got {list(images.shape)}")
        x = images.transpose(0, 1).flatten(0, 1)  # [2B, 3, S, S]: all before images, then all after images
        h = self.sam.patch_embed(x)  # [2B, G, G, C]
        if self.sam.pos_embed is not None:
            h = h + self.sam.pos_embed
        checkpoint = self.config.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for i, layer in enumerate(self.sam.layers):
            h = torch.utils.checkpoint.checkpoint(layer, h, use_reentrant=False) if checkpoint else layer(h)
            key = str(i)
            if key in self.bcsf:
                h = self.bcsf[key](h)  # [2B, G, G, C]
        raw = h.flatten(1, 2)  # [2B, L, C]
        cd = self.sam.neck(h)  # [2B, C_cd, G, G]
        return raw, cd.flatten(2).transpose(1, 2)  # [2B, L, C], [2B, L, C_cd]


# ---------------------------------------------------------------------------------------------------- building
def build_sam_encoder(
    config: SAMEncoderConfig, load_pretrained: bool = True, init_weights: bool = True
) -> BiTemporalSAMEncoder:
    """The encoder ``config`` describes; real SAM weights (resized to its input size) when ``pretrained`` is set."""
    from transformers import SamVisionModel

    cfg = sam_vision_config(config.config)
    loading = config.pretrained is not None and load_pretrained
    # random init only when nothing is loaded next (on the meta device, as for `changecap summary`, it is free)
    sam = SamVisionModel(cfg).vision_encoder if init_weights and not loading else _empty_sam(cfg)
    if loading:
        load_resized_sam_weights(sam, config.pretrained)
    return BiTemporalSAMEncoder(sam, copy.deepcopy(config))


def _empty_sam(cfg: Any) -> nn.Module:
    """Allocated but uninitialised (every weight is loaded next): skips transformers' initialisation cost."""
    from transformers import SamVisionModel

    with torch.device("meta"):
        sam = SamVisionModel(cfg).vision_encoder
    return sam.to_empty(device="cpu")


def load_resized_sam_weights(sam: nn.Module, name_or_dir: str | os.PathLike[str]) -> None:
    """Copy a SAM checkpoint's vision encoder into ``sam``, resizing the position tables to its grid."""
    from transformers import SamVisionModel

    name = str(name_or_dir)
    local = Path(name).expanduser()
    if name.startswith(("/", ".", "~")) and not local.is_dir():
        raise ModelError(f"SAM weights directory '{name}' does not exist")
    try:
        source = SamVisionModel.from_pretrained(str(local) if local.is_dir() else name, dtype=torch.float32)
    except (OSError, ValueError) as e:
        first = first_line(e)
        raise ModelError(
            f"cannot load SAM weights '{name}' (offline and not in the Hugging Face cache, or not a SAM "
            f"checkpoint): {first}"
        ) from None
    state = resize_sam_state(source.vision_encoder.state_dict(), sam.state_dict())
    missing, unexpected = sam.load_state_dict(state, strict=False)
    if missing or unexpected:
        key = (missing or unexpected)[0]
        raise ModelError(f"SAM weights '{name}': tensor '{key}' does not fit the configured encoder")


def resize_sam_state(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``source`` tensors resized to ``target``'s shapes where SAM's resolution-dependent tables differ.

    ``pos_embed`` [1, G, G, C] is resized bicubically; ``rel_pos_h/w`` [2G−1, d] linearly along the first axis (as
    SAM's own ``get_rel_pos`` interpolates); any other shape difference is an error naming the tensor.
    """
    out: dict[str, torch.Tensor] = {}
    for key, want in target.items():
        if key not in source:
            continue  # reported by load_state_dict as missing
        t = source[key]
        if t.shape == want.shape:
            out[key] = t
        elif key.endswith("pos_embed") and t.dim() == 4:
            grid = t.permute(0, 3, 1, 2)  # [1, C, G, G]
            grid = F.interpolate(grid, size=tuple(want.shape[1:3]), mode="bicubic", align_corners=False)
            out[key] = grid.permute(0, 2, 3, 1).contiguous()  # [1, G', G', C]
        elif key.endswith(("rel_pos_h", "rel_pos_w")) and t.dim() == 2:
            table = t.t().unsqueeze(0)  # [1, d, 2G−1]
            table = F.interpolate(table, size=want.shape[0], mode="linear", align_corners=False)
            out[key] = table[0].t().contiguous()  # [2G'−1, d]
        else:
            raise ModelError(f"SAM weights: tensor '{key}' has shape {list(t.shape)}, expected {list(want.shape)}")
    return out
