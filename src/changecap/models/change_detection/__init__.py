"""changecap's own change-detection model: a light Siamese CNN (shared encoder, difference fusion per level,
multi-scale decoder, per-pixel logits). Useful on its own (``changecap train`` on LEVIR-CD / LEVIR-MCI / SynthCC
masks, ``changecap caption --mask``, ``changecap evaluate``) and DFM's change-detection prior."""

from __future__ import annotations

from typing import Any

from torch import nn

from changecap.models.change_detection.config import ChangeDetectionConfig, CNNEncoderConfig, tiny_training_config
from changecap.models.change_detection.model import SiameseChangeDetector, build_change_detector
from changecap.models.registry import Architecture, Capabilities


def card_rows(model: nn.Module, config: Any) -> list[tuple[str, str]]:
    widths = ", ".join(str(w) for w in config.encoder.widths)
    return [
        ("encoder", f"shared CNN, stages of {widths} channels ({config.encoder.blocks} residual blocks each)"),
        ("fusion", f"difference fusion per level ({config.fusion})"),
        ("decoder", f"feature pyramid ({config.decoder_dim} channels) → {config.num_classes} logit(s) per pixel"),
    ]


ARCHITECTURE = Architecture(
    name="change_detection",
    config_class=ChangeDetectionConfig,
    build=build_change_detector,
    objective="change_detection",
    card_rows=card_rows,
    description="Siamese CNN change detector: shared encoder, difference fusion, multi-scale decoder (masks only)",
    change_prior=build_change_detector,  # the whole detector is its change branch
    tiny_config=tiny_training_config,
    capabilities=Capabilities(change_mask=True),
)

__all__ = [
    "ARCHITECTURE",
    "ChangeDetectionConfig",
    "CNNEncoderConfig",
    "SiameseChangeDetector",
    "build_change_detector",
]
