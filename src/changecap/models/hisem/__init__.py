"""HiSem (CLIP ViT → BDAM → HASD router + MoE → Transformer decoder) and the plain baseline it is measured against.

Modules: ``config`` (HiSemConfig, PlainConfig, presets), ``model`` (the HiSem captioner and its builder), ``fusion``
(position embedding → BDAM → HASD), ``bdam``, ``hasd``, ``moe``, ``plain`` (ConcatFusion), ``output``. Both
architectures train with the engine's ``hisem`` objective (router warm-up and ramp, ground-truth routing, MoE
balance loss; the router terms vanish for the plain baseline, which has no router).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from changecap.models.hisem.config import (
    PAPER_CLIP_ID,
    HiSemConfig,
    PlainConfig,
    paper_config,
    tiny_config,
    tiny_training_config,
)
from changecap.models.hisem.fusion import HiSemFusion, HiSemFusionConfig
from changecap.models.hisem.model import HiSem, build_hisem
from changecap.models.hisem.output import CaptionModelOutput
from changecap.models.hisem.plain import ConcatFusion, ConcatFusionConfig
from changecap.models.registry import Architecture, Capabilities


def card_rows(model: nn.Module, config: Any) -> list[tuple[str, str]]:
    """The model card's architecture table (part, module)."""
    enc = config.encoder
    backbone = "none (runs from backbone tokens)" if enc is None else (enc.pretrained or "CLIP vision tower (random)")
    if config.architecture == "hisem":
        fusion = "HiSem fusion (2-D positions, BDAM, HASD)"
    else:
        fusion = "ConcatFusion (plain baseline)"
    decoder = f"Transformer caption decoder ({config.decoder.layers} layer(s), d={config.decoder.dim})"
    return [("encoder", backbone), ("fusion", fusion), ("decoder", decoder)]


HISEM = Architecture(
    name="hisem",
    config_class=HiSemConfig,
    build=build_hisem,
    objective="hisem",
    card_rows=card_rows,
    description="HiSem: CLIP ViT, BDAM, HASD router + MoE, Transformer caption decoder",
    tiny_config=partial(tiny_training_config, "hisem"),
    capabilities=Capabilities(
        captions=True, change_probability=True, beam_search=True, onnx=True, attention_maps=True
    ),
)
PLAIN = Architecture(
    name="plain",
    config_class=PlainConfig,
    build=build_hisem,
    objective="hisem",
    card_rows=card_rows,
    description="plain baseline: CLIP ViT, concatenation fusion, Transformer caption decoder",
    tiny_config=partial(tiny_training_config, "plain"),
    # no router: no change probability
    capabilities=Capabilities(captions=True, beam_search=True, onnx=True, attention_maps=True),
)

__all__ = [
    "HISEM",
    "PAPER_CLIP_ID",
    "PLAIN",
    "CaptionModelOutput",
    "ConcatFusion",
    "ConcatFusionConfig",
    "HiSem",
    "HiSemConfig",
    "HiSemFusion",
    "HiSemFusionConfig",
    "PlainConfig",
    "build_hisem",
    "paper_config",
    "tiny_config",
    "tiny_training_config",
]
