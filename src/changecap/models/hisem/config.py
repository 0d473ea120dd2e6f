"""Configurations of HiSem and of the plain baseline, and their presets.

A config fully determines the architecture, so ``config.json`` + ``model.safetensors`` rebuild a model without
network access. Serialised form (``to_dict``), the same for both architectures and the same as changecap 0.1 wrote::

    {"architecture": "hisem",                                         # or "plain"
     "encoder": {"pretrained": "openai/clip-vit-base-patch16", "config": {...CLIPVisionConfig fields...},
                 "trainable_layers": 4, "patch_ln_post": true},        # or null: no backbone, runs from tokens
     "fusion": {...HiSemFusionConfig (hisem) or ConcatFusionConfig (plain) fields...},
     "decoder": {...CaptionDecoderConfig fields...}}

``vocab_size`` and ``max_length`` are read from the decoder config (a single source of truth; they are properties,
not separate serialised fields, so they can never disagree with the decoder).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from changecap.errors import ConfigError
from changecap.models.hisem.fusion import HiSemFusionConfig
from changecap.models.hisem.plain import ConcatFusionConfig
from changecap.models.parts.caption_decoder import CaptionDecoderConfig
from changecap.models.parts.clip_encoder import VIT_B16_CONFIG, EncoderConfig
from changecap.models.registry import ArchitectureConfig
from changecap.schema import require

#: Hugging Face id of the paper backbone (OpenAI CLIP ViT-B/16)
PAPER_CLIP_ID = "openai/clip-vit-base-patch16"


@dataclass
class _EncoderFusionDecoderConfig(ArchitectureConfig):
    """Shared shape of the two configs: CLIP encoder → fusion → Transformer caption decoder."""

    architecture: ClassVar[str]
    fusion: Any
    decoder: CaptionDecoderConfig
    encoder: EncoderConfig | None = None  # None: no backbone (the model runs from backbone tokens)

    @property
    def vocab_size(self) -> int:
        return self.decoder.vocab_size

    @property
    def max_length(self) -> int:
        return self.decoder.max_length

    def validate(self, prefix: str = "model") -> None:
        """Cross-field checks: fusion width/grid must match the encoder's tokens and the decoder width."""
        expected = typing.get_type_hints(type(self))["fusion"]
        require(
            isinstance(self.fusion, expected),
            f"{prefix}.fusion",
            f"architecture {self.architecture!r} needs a {expected.__name__}, got {type(self.fusion).__name__}",
        )
        if self.encoder is not None:
            hidden, grid = self.encoder.hidden_size, self.encoder.grid_size
            if hidden is not None and hidden != self.fusion.dim:
                raise ConfigError(
                    f"{prefix}.fusion.dim",
                    f"is {self.fusion.dim} but the encoder's hidden_size is {hidden}; the fusion reads encoder tokens",
                )
            if grid is not None and grid != self.fusion.grid_size:
                raise ConfigError(
                    f"{prefix}.fusion.grid_size",
                    f"is {self.fusion.grid_size} but the encoder yields a {grid}×{grid} grid (image_size / patch_size)",
                )
        require(
            self.decoder.dim == self.fusion.dim,
            f"{prefix}.decoder.dim",
            f"is {self.decoder.dim} but the fusion memory width (fusion.dim) is {self.fusion.dim}",
        )


@dataclass
class HiSemConfig(_EncoderFusionDecoderConfig):
    """HiSem: CLIP ViT → HiSem fusion (2-D positions, BDAM, HASD router + MoE) → Transformer decoder."""

    architecture: ClassVar[str] = "hisem"
    fusion: HiSemFusionConfig
    decoder: CaptionDecoderConfig
    encoder: EncoderConfig | None = None


@dataclass
class PlainConfig(_EncoderFusionDecoderConfig):
    """The plain baseline: the same encoder and decoder around a concatenation fusion (no BDAM, no router)."""

    architecture: ClassVar[str] = "plain"
    fusion: ConcatFusionConfig
    decoder: CaptionDecoderConfig
    encoder: EncoderConfig | None = None


# ---------------------------------------------------------------------------------------------------- presets
def paper_config(vocab_size: int = 501, pretrained: str | None = PAPER_CLIP_ID) -> HiSemConfig:
    """The paper model: CLIP ViT-B/16 (last 4 blocks trained), HiSem fusion (3 BDAM layers, 8 experts), 1-layer decoder.

    ``vocab_size`` 501 is the RSCaMa ``vocab.json`` the official run used. ``pretrained=None`` gives the
    same architecture randomly initialised (e.g. to load converted weights into).
    """
    return HiSemConfig(
        encoder=EncoderConfig(pretrained=pretrained, config=dict(VIT_B16_CONFIG), trainable_layers=4),
        fusion=HiSemFusionConfig(dim=768, grid_size=14),
        decoder=CaptionDecoderConfig(dim=768, vocab_size=vocab_size, max_length=41, layers=1, heads=8),
    )


def tiny_config(
    vocab_size: int,
    image_size: int = 64,
    patch_size: int = 16,
    dim: int = 64,
    architecture: str = "hisem",
    max_length: int = 41,
    encoder: bool = True,
) -> HiSemConfig | PlainConfig:
    """A few-hundred-thousand-parameter model for tests and CPU smoke runs (random CLIP, same code paths).

    ``encoder=False`` gives a model without backbone that runs from [B, (image_size/patch_size)², dim] tokens.
    """
    if architecture not in ("hisem", "plain"):
        raise ConfigError("model.architecture", f"must be one of hisem, plain, got {architecture!r}")
    grid = image_size // patch_size
    heads = 4 if dim % 4 == 0 else 1
    enc = EncoderConfig(
        pretrained=None,
        config={
            "hidden_size": dim,
            "intermediate_size": 2 * dim,
            "num_hidden_layers": 2,
            "num_attention_heads": heads,
            "image_size": image_size,
            "patch_size": patch_size,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
        },
        trainable_layers=1,
    )
    decoder = CaptionDecoderConfig(dim=dim, vocab_size=vocab_size, max_length=max_length, layers=1, heads=heads)
    if architecture == "plain":
        fusion = ConcatFusionConfig(dim=dim, grid_size=grid, layers=1, heads=heads)
        return PlainConfig(encoder=enc if encoder else None, fusion=fusion, decoder=decoder)
    hisem_fusion = HiSemFusionConfig(
        dim=dim,
        grid_size=grid,
        bdam_layers=1,
        heads=heads,
        num_experts=4,
        top_k=2,
        n_group=2,
        topk_group=1,
        n_shared_experts=1,
        expert_hidden=2 * dim,
        pwff_hidden=2 * dim,
    )
    return HiSemConfig(encoder=enc if encoder else None, fusion=hisem_fusion, decoder=decoder)


def tiny_training_config(architecture: str = "hisem") -> dict[str, Any]:
    """The registry's ``tiny_config`` of hisem and plain: :func:`tiny_config` at 32 px, 32 wide, its vocabulary size
    and caption length left to the data."""
    model = tiny_config(4, image_size=32, patch_size=8, dim=32, architecture=architecture).to_dict()
    del model["decoder"]["vocab_size"], model["decoder"]["max_length"]
    return {"data": {"image_size": 32, "normalize": "clip"}, "model": model}
