"""Semantic-CC (Zhu et al., TGRS 2024; ``semantic_cc.md``): SAM ViT with bi-temporal change filters → multi-task
neck → change-detection decoder + Q-Former / LLM caption decoder, trained in three stages per epoch.

Modules: ``config`` (every paper/code difference as a named option, paper default), ``encoder`` (SAM + BCSF + LoRA),
``bcsf``, ``neck``, ``cd_decoder``, ``caption`` (Q-Former, enhancer, prompt, LLM), ``model``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from changecap.models.registry import Architecture
from changecap.models.semantic_cc.config import SemanticCCConfig
from changecap.models.semantic_cc.model import SemanticCC, build_semantic_cc


def card_rows(model: nn.Module, config: Any) -> list[tuple[str, str]]:
    enc, cap = config.encoder, config.caption
    sam = enc.pretrained or "SAM ViT (random)"
    llm = cap.llm or "causal LM (random)"
    return [
        ("encoder", f"{sam} at {enc.config['image_size']} px, BCSF {enc.bcsf_form} form after {enc.bcsf_placement} "
                    f"blocks, LoRA r {enc.lora.r}"),
        ("neck", f"multi-task semantic aggregation neck, {config.neck.units} unit(s)"),
        ("cd_decoder", f"change-detection decoder ({config.cd_decoder.form} form, {config.cd_decoder.loss} loss)"),
        ("caption_decoder", f"Q-Former ({cap.num_query_tokens} queries) + {cap.enhancer} enhancer + {llm}"),
    ]  # fmt: skip


ARCHITECTURE = Architecture(
    name="semantic_cc",
    config_class=SemanticCCConfig,
    build=build_semantic_cc,
    objective="semantic_cc",
    card_rows=card_rows,
    description="Semantic-CC: SAM ViT + change filters, multi-task neck, CD decoder, Q-Former + LLM captions",
)

__all__ = ["ARCHITECTURE", "SemanticCC", "SemanticCCConfig", "build_semantic_cc"]
