"""DFM's configuration (``docs/dfm.md``). The paper's equations and settings are lost; every reconstructed choice
is a named option here, its default changecap's reading, so a run can try the alternatives.

=============================  ===============================  ==================================================
option                         default                          alternatives
=============================  ===============================  ==================================================
``temporal.layers``            3 (RSCaMa's encoder depth)       any ≥ 0 (0: only the fusion of the two dates)
``temporal`` operator          Transformer substitute for       — (a Mamba SSM is not a dependency we take; this is
                               RSCaMa's SSMs, a deviation       a documented deviation)
``prior.level``                −1: the CD encoder's last,       any fused level of the prior, finest = 0
                               coarsest fused stage
``prior.enabled``              true                             false: no prior, JFM's cross-attentions are skipped
``jfm.difference``             ``after_minus_before`` (eq. 8)   ``absolute``
``jfm.bsa``                    ``joint``: one encoder layer     ``cross``: two cross-attentions dd→st and st→dd
                               over both streams
``jfm.weights``                ``softmax`` (convex, init 0)     ``free``: unconstrained scalars (init ½, ½)
=============================  ===============================  ==================================================

TGCL's visual side is the [CLS] difference of the encoder and its text side a frozen sentence encoder whose
embeddings (``text_dim`` wide) this model projects (``text_proj``) into the visual width; the learnable logit scale
starts at ln(1/0.07). Loss weights, the gate and the false-negative option are the ``loss`` section's (objective
``dfm``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from changecap.models.parts.caption_decoder import CaptionDecoderConfig
from changecap.models.parts.clip_encoder import EncoderConfig
from changecap.models.registry import ArchitectureConfig
from changecap.schema import require


@dataclass
class TemporalConfig:
    """The spatio-temporal feature extractor (eq. 7; RSCaMa's encoder, here as attention layers — a deviation)."""

    layers: int = 3  # each: difference-conditioned self-attention per date, then cross-date attention
    heads: int = 8
    ffn_mult: int = 4
    dropout: float = 0.1

    def validate(self, prefix: str = "model.temporal") -> None:
        require(self.layers >= 0, f"{prefix}.layers", f"must be >= 0, got {self.layers}")
        require(self.heads >= 1, f"{prefix}.heads", f"must be >= 1, got {self.heads}")
        require(self.ffn_mult >= 1, f"{prefix}.ffn_mult", f"must be >= 1, got {self.ffn_mult}")
        require(0.0 <= self.dropout < 1.0, f"{prefix}.dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass
class PriorConfig:
    """The frozen change-detection prior (eq. 9): a ``change_detection`` model (its fused encoder levels) or the
    change branch of a ``semantic_cc`` model (its CD decoder's pyramid levels), whose features are
    projected to the ViT width, resized to the ViT grid and injected by JFM's cross-attentions.

    ``model_dir`` names a trained detector (its weights are copied into DFM's own model directory, so the saved
    model is self-contained); ``config`` holds its architecture (filled in from ``model_dir``; given directly, the
    prior is randomly initialised — tests only, a random prior carries no change knowledge). ``image_size``, ``mean``
    and ``std`` are the detector's own preprocessing: DFM's CLIP-normalised images are re-normalised and resized
    for it inside the model.
    """

    enabled: bool = True
    model_dir: str | None = None
    config: dict[str, Any] | None = None
    image_size: int | None = None  # default: the detector's image_size
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])  # the detector's normalisation
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # DFM's own input normalisation (CLIP's: DFM runs use ``data.normalize: clip``), undone before the detector's
    input_mean: list[float] = field(default_factory=lambda: [0.48145466, 0.4578275, 0.40821073])
    input_std: list[float] = field(default_factory=lambda: [0.26862954, 0.26130258, 0.27577711])
    level: int = -1  # which fused level (0 = finest); -1: the last, coarsest stage

    def validate(self, prefix: str = "model.prior") -> None:
        if not self.enabled:
            return
        require(self.model_dir is not None or self.config is not None, f"{prefix}.model_dir",
                "give a trained change_detection or semantic_cc model directory (or 'config' for a random prior in "
                "tests), or "
                "set enabled: false")  # fmt: skip
        for name in ("mean", "std", "input_mean", "input_std"):
            value = getattr(self, name)
            require(len(value) == 3, f"{prefix}.{name}", f"needs 3 values (R, G, B), got {value}")
        for name in ("std", "input_std"):
            require(all(v > 0 for v in getattr(self, name)), f"{prefix}.{name}", "must be > 0")


@dataclass
class JFMConfig:
    """Joint feature modelling (eqs. 8, 10): prior cross-attention into both streams, bidirectional self-attention,
    learnable weighted fusion."""

    heads: int = 8
    ffn_mult: int = 4
    dropout: float = 0.1
    difference: Literal["after_minus_before", "absolute"] = "after_minus_before"
    bsa: Literal["joint", "cross"] = "joint"
    weights: Literal["softmax", "free"] = "softmax"

    def validate(self, prefix: str = "model.jfm") -> None:
        require(self.heads >= 1, f"{prefix}.heads", f"must be >= 1, got {self.heads}")
        require(self.ffn_mult >= 1, f"{prefix}.ffn_mult", f"must be >= 1, got {self.ffn_mult}")
        require(0.0 <= self.dropout < 1.0, f"{prefix}.dropout", f"must be in [0, 1), got {self.dropout}")
        for name, allowed in (("difference", ("after_minus_before", "absolute")), ("bsa", ("joint", "cross")),
                              ("weights", ("softmax", "free"))):  # fmt: skip
            value = getattr(self, name)
            require(value in allowed, f"{prefix}.{name}", f"must be one of {', '.join(allowed)}, got {value!r}")


@dataclass
class DFMConfig(ArchitectureConfig):
    """DFM: CLIP ViT → spatio-temporal extractor + direct difference, frozen CD prior → JFM → caption decoder."""

    architecture: ClassVar[str] = "dfm"

    decoder: CaptionDecoderConfig
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    jfm: JFMConfig = field(default_factory=JFMConfig)
    text_dim: int = 768  # the sentence encoder's width (all-mpnet-base-v2: 768)
    logit_scale_init: float = math.log(1 / 0.07)  # TGCL's s (CLIP's initialisation)

    @property
    def vocab_size(self) -> int:
        return self.decoder.vocab_size

    @property
    def max_length(self) -> int:
        return self.decoder.max_length

    def validate(self, prefix: str = "model") -> None:
        self.encoder.validate(f"{prefix}.encoder")
        dim = self.encoder.hidden_size
        if dim is not None:
            message = f"is {self.decoder.dim} but the encoder's hidden_size is {dim} (JFM's output is its memory)"
            require(self.decoder.dim == dim, f"{prefix}.decoder.dim", message)
            for name in ("temporal", "jfm"):
                heads = getattr(self, name).heads
                require(dim % heads == 0, f"{prefix}.{name}.heads", f"{heads} heads do not divide the width {dim}")
        self.temporal.validate(f"{prefix}.temporal")
        self.jfm.validate(f"{prefix}.jfm")
        self.decoder.validate(f"{prefix}.decoder")
        self.prior.validate(f"{prefix}.prior")
        require(self.text_dim >= 1, f"{prefix}.text_dim", f"must be >= 1, got {self.text_dim}")


def tiny_training_config() -> dict[str, Any]:
    """The registry's ``tiny_config``: a 2-block CLIP ViT at 32 px, 1 temporal layer, a random 2-level change
    detector as its prior (``prior.config``: no trained detector needed), TGCL over the built-in bag-of-words
    sentence encoder (offline)."""
    vit = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
           "image_size": 32, "patch_size": 8}  # fmt: skip
    prior = {"image_size": 32, "encoder": {"widths": [8, 16], "blocks": 1}, "decoder_dim": 8}
    model = {
        "architecture": "dfm",
        "encoder": {"config": vit, "trainable_layers": 1},
        "temporal": {"layers": 1, "heads": 2, "ffn_mult": 2},
        "prior": {"config": prior},
        "jfm": {"heads": 2, "ffn_mult": 2},
        "decoder": {"dim": 32, "heads": 2},
        "text_dim": 16,
    }
    return {"data": {"image_size": 32, "normalize": "clip"}, "model": model,
            "loss": {"sentence_model": "builtin:bag-of-words-16"}}  # fmt: skip
