"""Model configuration (``ModelConfig``), the ``build_model`` factory and presets.

A ``ModelConfig`` fully determines the architecture, so ``config.json`` + ``model.safetensors`` rebuild a model
without network access. Serialised form (``to_dict``)::

    {"architecture": "hisem",
     "encoder": {"pretrained": "openai/clip-vit-base-patch16", "config": {...CLIPVisionConfig fields...},
                 "trainable_layers": 4, "patch_ln_post": true},        # or null: no backbone, runs from tokens
     "fusion": {...HiSemFusionConfig or ConcatFusionConfig fields...},
     "decoder": {...CaptionDecoderConfig fields...}}

``vocab_size`` and ``max_length`` are read from the decoder config (a single source of truth; they are properties,
not separate serialised fields, so they can never disagree with the decoder).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from changecap.errors import ConfigError
from changecap.models.baseline import ConcatFusion, ConcatFusionConfig
from changecap.models.caption_decoder import CaptionDecoderConfig, TransformerCaptionDecoder
from changecap.models.clip_encoder import VIT_B16_CONFIG, CLIPPatchEncoder
from changecap.models.config_fields import dataclass_from_dict, require
from changecap.models.hisem import HiSem

ARCHITECTURES: tuple[str, ...] = ("hisem", "plain")

#: Hugging Face id of the paper backbone (OpenAI CLIP ViT-B/16)
PAPER_CLIP_ID = "openai/clip-vit-base-patch16"


@dataclass
class EncoderConfig:
    """The CLIP patch encoder."""

    pretrained: str | None = None  # HF CLIP id or local dir to load real weights from (provenance once saved)
    config: dict[str, Any] | None = None  # CLIPVisionConfig fields; random init when ``pretrained`` is None
    trainable_layers: int = 4  # last k transformer blocks (+ post_layernorm) are fine-tuned; 0 frozen, -1 all
    patch_ln_post: bool = True  # apply post_layernorm to the patch tokens (spec §2)

    def validate(self, prefix: str = "model.encoder") -> None:
        require(
            self.pretrained is not None or self.config is not None,
            f"{prefix}.config",
            "give either 'pretrained' (a CLIP id or directory) or 'config' (CLIPVisionConfig fields)",
        )
        k = self.trainable_layers
        require(k >= -1, f"{prefix}.trainable_layers", f"must be -1 (all), 0 (frozen) or a layer count, got {k}")
        if self.config is not None:
            for key in ("hidden_size", "image_size", "patch_size"):
                require(key in self.config, f"{prefix}.config.{key}", "required CLIPVisionConfig field is missing")

    @property
    def hidden_size(self) -> int | None:
        return None if self.config is None else int(self.config["hidden_size"])

    @property
    def grid_size(self) -> int | None:
        if self.config is None:
            return None
        return int(self.config["image_size"]) // int(self.config["patch_size"])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "model.encoder") -> EncoderConfig:
        return dataclass_from_dict(cls, d, prefix)


def _fusion_config_class(architecture: str) -> type:
    if architecture == "plain":
        return ConcatFusionConfig
    from changecap.models.hisem_fusion import HiSemFusionConfig  # imported lazily: heavy and optional for "plain"

    return HiSemFusionConfig


@dataclass
class ModelConfig:
    """Everything needed to rebuild a captioner; see the module docstring for the serialised form."""

    architecture: str  # "hisem" (CLIP + BDAM/HASD fusion + decoder) or "plain" (CLIP + ConcatFusion + decoder)
    fusion: Any  # HiSemFusionConfig for "hisem", ConcatFusionConfig for "plain"
    decoder: CaptionDecoderConfig
    encoder: EncoderConfig | None = field(default=None)  # None: no backbone (model runs from backbone tokens)

    @property
    def vocab_size(self) -> int:
        return self.decoder.vocab_size

    @property
    def max_length(self) -> int:
        return self.decoder.max_length

    def validate(self, prefix: str = "model") -> None:
        """Cross-field checks: fusion width/grid must match the encoder's tokens and the decoder width."""
        require(
            self.architecture in ARCHITECTURES,
            f"{prefix}.architecture",
            f"must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}",
        )
        expected = _fusion_config_class(self.architecture)
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "encoder": None if self.encoder is None else self.encoder.to_dict(),
            "fusion": self.fusion.to_dict(),
            "decoder": self.decoder.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "model") -> ModelConfig:
        """Strict inverse of :meth:`to_dict`; every problem raises ConfigError naming the dotted field."""
        if not isinstance(d, Mapping):
            raise ConfigError(prefix, f"expected a mapping of fields, got {type(d).__name__}")
        arch = d.get("architecture")
        if arch not in ARCHITECTURES:
            raise ConfigError(f"{prefix}.architecture", f"must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
        fusion_cls = _fusion_config_class(arch)

        def encoder(v: Any, p: str) -> EncoderConfig | None:
            return None if v is None else EncoderConfig.from_dict(v, p)

        return dataclass_from_dict(
            cls,
            d,
            prefix,
            nested={
                "encoder": encoder,
                "fusion": lambda v, p: fusion_cls.from_dict(v, p),
                "decoder": lambda v, p: CaptionDecoderConfig.from_dict(v, p),
            },
        )


def build_model(config: ModelConfig, load_pretrained: bool = True, init_encoder: bool = True) -> HiSem:
    """Instantiate the captioner described by ``config``.

    With ``load_pretrained=True`` and ``encoder.pretrained`` set, the CLIP weights are loaded from that id/directory;
    otherwise the encoder is built (randomly initialised) from ``encoder.config``, which is how ``load_model``
    rebuilds a saved model before loading its own weights (no network). ``init_encoder=False`` skips that random
    initialisation (values are garbage) for callers that load every weight right after. ``model.config`` is set to
    a copy of ``config`` in which ``encoder.config`` holds the encoder's complete architecture fields, so saving it
    rebuilds offline.
    """
    config.validate()
    config = copy.deepcopy(config)
    encoder: CLIPPatchEncoder | None = None
    enc = config.encoder
    if enc is not None:
        if enc.pretrained is not None and (load_pretrained or enc.config is None):
            encoder = CLIPPatchEncoder.from_pretrained(enc.pretrained, enc.trainable_layers, enc.patch_ln_post)
            # the weights define the architecture: record it so the saved config rebuilds offline
            fields = encoder.config_fields
            if enc.config is not None:
                for key in ("hidden_size", "num_hidden_layers", "image_size", "patch_size"):
                    if key in enc.config and enc.config[key] != fields[key]:
                        raise ConfigError(
                            f"model.encoder.config.{key}",
                            f"is {enc.config[key]} but the weights '{enc.pretrained}' have {fields[key]}",
                        )
        else:
            assert enc.config is not None  # validate() guarantees pretrained or config
            encoder = CLIPPatchEncoder.from_config(
                enc.config, enc.trainable_layers, enc.patch_ln_post, init_weights=init_encoder
            )
        enc.config = encoder.config_fields  # canonical (complete) field set, so configs compare equal after a reload
        config.validate()
    if config.architecture == "plain":
        fusion: Any = ConcatFusion(config.fusion)
    else:
        from changecap.models.hisem_fusion import HiSemFusion

        fusion = HiSemFusion(config.fusion)
    model = HiSem(encoder, fusion, TransformerCaptionDecoder(config.decoder))
    model.config = config
    return model


# ---------------------------------------------------------------------------------------------------- presets
def paper_config(vocab_size: int = 501, pretrained: str | None = PAPER_CLIP_ID) -> ModelConfig:
    """The paper model: CLIP ViT-B/16 (last 4 blocks trained), HiSem fusion (3 BDAM layers, 8 experts), 1-layer decoder.

    ``vocab_size`` 501 is the RSCaMa ``vocab.json`` the official run used (spec §10). ``pretrained=None`` gives the
    same architecture randomly initialised (e.g. to load converted weights into).
    """
    fusion_cls = _fusion_config_class("hisem")
    return ModelConfig(
        architecture="hisem",
        encoder=EncoderConfig(pretrained=pretrained, config=dict(VIT_B16_CONFIG), trainable_layers=4),
        fusion=fusion_cls(dim=768, grid_size=14),
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
) -> ModelConfig:
    """A few-hundred-thousand-parameter model for tests and CPU smoke runs (random CLIP, same code paths).

    ``encoder=False`` gives a model without backbone that runs from [B, (image_size/patch_size)², dim] tokens.
    """
    if architecture not in ARCHITECTURES:
        raise ConfigError("model.architecture", f"must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")
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
    if architecture == "plain":
        fusion: Any = ConcatFusionConfig(dim=dim, grid_size=grid, layers=1, heads=heads)
    else:
        fusion = _fusion_config_class("hisem")(
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
    return ModelConfig(
        architecture=architecture,
        encoder=enc if encoder else None,
        fusion=fusion,
        decoder=CaptionDecoderConfig(dim=dim, vocab_size=vocab_size, max_length=max_length, layers=1, heads=heads),
    )
