"""Semantic-CC (Zhu et al., TGRS 2024; ``semantic_cc.md``): SAM ViT with bi-temporal change filters → multi-task
neck → change-detection decoder + Q-Former / LLM caption decoder, trained in three stages per epoch.

Modules: ``config`` (every paper/code difference as a named option, paper default), ``encoder`` (SAM + BCSF + LoRA),
``bcsf``, ``neck``, ``cd_decoder``, ``caption`` (Q-Former, enhancer, prompt, LLM), ``model``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from changecap.models.registry import Architecture, Capabilities
from changecap.models.semantic_cc.config import SemanticCCConfig, tiny_training_config
from changecap.models.semantic_cc.model import (
    SemanticCC,
    SemanticCCChangeBranch,
    build_semantic_cc,
    build_semantic_cc_change_branch,
)


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


def summary_parts(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The parts ``changecap summary`` counts: frozen backbones apart from their LoRA, the new modules one by one."""

    def params(module: nn.Module | None, lora: bool | None = None) -> list[nn.Parameter]:
        if module is None:
            return []
        named = module.named_parameters()
        return [p for n, p in named if lora is None or (("lora_" in n) == lora)]

    enc, cap = model.encoder, model.caption_decoder
    enhancer = [getattr(cap, n, None) for n in ("gate_before", "gate_after", "enhancer_proj", "llama_proj")]
    parts = {
        "encoder": params(enc),
        "encoder.sam": params(enc.sam, lora=False),
        "encoder.lora": params(enc.sam, lora=True),
        "encoder.bcsf": params(enc.bcsf),
        "neck": params(model.neck),
        "neck.cc_proj": params(model.neck.cc_proj),
        "neck.units": params(model.neck.units),
        "cd_decoder": params(model.cd_decoder),
        "cd_decoder.fpn": params(model.cd_decoder.fpn),
        "cd_decoder.head": params(model.cd_decoder.head),
        "caption_decoder": params(cap),
        "caption_decoder.qformer": [*params(cap.qformer), cap.query_tokens, *params(cap.ln_vision)],
        "caption_decoder.enhancer": [p for m in enhancer for p in params(m)],
        "caption_decoder.llm": params(cap.llm, lora=False),
        "caption_decoder.llm.lora": params(cap.llm, lora=True),
    }
    return parts


ARCHITECTURE = Architecture(
    name="semantic_cc",
    config_class=SemanticCCConfig,
    build=build_semantic_cc,
    objective="semantic_cc",
    card_rows=card_rows,
    summary_parts=summary_parts,
    description="Semantic-CC: SAM ViT + change filters, multi-task neck, CD decoder, Q-Former + LLM captions",
    change_prior=build_semantic_cc_change_branch,
    tiny_config=tiny_training_config,
    # the LLM decodes greedily, with beams or by nucleus sampling; no image-level probability (a mask instead)
    capabilities=Capabilities(captions=True, change_mask=True, beam_search=True, sampling=True),
)

__all__ = [
    "ARCHITECTURE",
    "SemanticCC",
    "SemanticCCChangeBranch",
    "SemanticCCConfig",
    "build_semantic_cc",
    "build_semantic_cc_change_branch",
]
