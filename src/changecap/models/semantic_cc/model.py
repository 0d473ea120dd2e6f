"""Semantic-CC (eq. 1): SAM encoder → multi-task neck → change-detection decoder and caption decoder, by injection.

The model is batched (the released code only runs batch 1). The attribute names ``encoder``, ``neck``,
``cd_decoder`` and ``caption_decoder`` are what the three-stage objective freezes and trains by prefix; within the
neck, ``cc_proj``, ``*.intra_cc`` and ``*.inter`` are the captioning side and ``*.intra_cd`` the detection side.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from changecap.models.contract import ChangeModel, Decoding, RawPrediction
from changecap.models.semantic_cc.caption import (
    SemanticCCCaptionDecoder,
    build_llm,
    build_qformer,
    load_blip2_qformer,
)
from changecap.models.semantic_cc.cd_decoder import ChangeDetectionDecoder
from changecap.models.semantic_cc.config import SemanticCCConfig
from changecap.models.semantic_cc.encoder import BiTemporalSAMEncoder, build_sam_encoder
from changecap.models.semantic_cc.neck import SemanticAggregationNeck


class SemanticCC(ChangeModel):
    """Image pairs [B, 2, 3, S, S] → change-mask logits [B, K, S, S] and captions."""

    def __init__(
        self,
        encoder: BiTemporalSAMEncoder,
        neck: SemanticAggregationNeck,
        cd_decoder: ChangeDetectionDecoder,
        caption_decoder: SemanticCCCaptionDecoder,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.neck = neck
        self.cd_decoder = cd_decoder
        self.caption_decoder = caption_decoder

    # ------------------------------------------------------------------ stages
    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One encoder + neck pass → (F_cc [2B, L, cc_dim], F_cd [2B, L, cd_dim]), before rows first."""
        raw, cd = self.encoder(images)  # [2B, L, C], [2B, L, C_cd]
        return self.neck(raw, cd)

    def change_logits(self, f_cd: torch.Tensor) -> torch.Tensor:
        """F_cd tokens [2B, L, cd_dim] → per-pixel logits [B, K, S, S] (K = 1 for BCE, 2 for CE)."""
        g = self.encoder.config.grid_size
        grid = f_cd.transpose(1, 2).unflatten(2, (g, g))  # [2B, cd_dim, G, G]
        return self.cd_decoder(grid)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and change logits; the caption loss needs the captions (see ``caption_loss_sum``)."""
        f_cc, f_cd = self.features(images)
        return f_cc, self.change_logits(f_cd)

    def caption_loss_sum(
        self, f_cc: torch.Tensor, captions: list[str], instructions: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.caption_decoder.caption_loss_sum(f_cc, captions, instructions)

    def caption_target_length(self, caption: str) -> int:
        """How many tokens ``caption`` is trained on (the caption loss's normaliser, counted before the forward)."""
        return len(self.caption_decoder.target_ids(caption))

    @property
    def num_instructions(self) -> int:
        """How many instructions the prompt draws from (one per training sample, uniformly)."""
        return len(self.caption_decoder.config.instructions)

    # ------------------------------------------------------------------ the model contract
    @property
    def image_size(self) -> int:
        return int(self.encoder.config.config["image_size"])

    @property
    def compile_target(self) -> nn.Module:
        return self.encoder

    def infer(self, images: torch.Tensor, decoding: Decoding) -> RawPrediction:
        """Captions (text, from the LLM; the first instruction) and change-mask logits from one encoder pass. No
        image-level change probability. Decoding options the caller leaves out come from
        ``caption.generation``; ``max_length`` counts the LLM's new tokens (the end symbol included)."""
        f_cc, f_cd = self.features(images)
        captions = self.caption_decoder.generate(
            f_cc, beam_size=decoding.beam_size, max_new_tokens=decoding.max_length,
            length_penalty=decoding.length_penalty, sampling=decoding.sampling,
        )  # fmt: skip
        return RawPrediction(captions=captions, mask_logits=self.change_logits(f_cd))

    # ------------------------------------------------------------------ saving
    def saved_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict without the frozen pretrained LLM's own weights when the config references them
        (``caption.llm`` + ``save_llm_weights: false``): a 7B model is not copied into every model directory.
        Its LoRA tensors, and everything else, are saved."""
        state = self.state_dict()
        if self.config is None or not self.config.references_pretrained():
            return state
        prefix = "caption_decoder.llm."
        return {k: v for k, v in state.items() if not k.startswith(prefix) or "lora_" in k}

    # ------------------------------------------------------------------ introspection
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        parts = {"encoder": self.encoder, "neck": self.neck, "cd_decoder": self.cd_decoder}
        groups = {name: list(m.parameters()) for name, m in parts.items()}
        groups["caption_decoder"] = list(self.caption_decoder.parameters())
        return groups


class SemanticCCChangeBranch(nn.Module):
    """Semantic-CC's change-detection branch alone — encoder → neck → CD decoder, no caption decoder (so no LLM) —
    as another system's frozen change prior (DFM, ``docs/dfm.md``). Its state-dict keys are the full model's, so it
    loads from a Semantic-CC model directory's own weights. The neck's captioning side stays: the detection side
    reads it through the inter-task attention."""

    def __init__(
        self, encoder: BiTemporalSAMEncoder, neck: SemanticAggregationNeck, cd_decoder: ChangeDetectionDecoder
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.neck = neck
        self.cd_decoder = cd_decoder
        self.config: Any = None

    @property
    def image_size(self) -> int:
        return int(self.encoder.config.config["image_size"])

    @property
    def feature_widths(self) -> list[int]:
        """Width of each level of :meth:`change_features`, finest first."""
        return [self.cd_decoder.fpn_dim] * self.cd_decoder.fpn.num_levels

    def change_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Image pairs [B, 2, 3, S, S] → the CD decoder's pyramid levels [B, fpn_dim, h_i, w_i], finest first."""
        _, f_cd = self.neck(*self.encoder(images))  # [2B, L, cd_dim]
        g = self.encoder.config.grid_size
        return self.cd_decoder.pyramid(f_cd.transpose(1, 2).unflatten(2, (g, g)))  # from [2B, cd_dim, G, G]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Change logits [B, K, S, S]."""
        return self.cd_decoder.head(self.change_features(images))


def _change_parts(
    config: SemanticCCConfig, load_pretrained: bool, init_weights: bool
) -> tuple[BiTemporalSAMEncoder, SemanticAggregationNeck, ChangeDetectionDecoder]:
    enc = config.encoder
    encoder = build_sam_encoder(enc, load_pretrained=load_pretrained, init_weights=init_weights)
    neck = SemanticAggregationNeck(
        units=config.neck.units,
        encoder_dim=enc.hidden_size,
        cc_dim=config.neck.cc_dim,
        cd_dim=enc.cd_width,
        cc_heads=config.neck.cc_heads,
        cd_heads=config.neck.cd_heads,
        symmetric_inter=config.neck.symmetric_inter,
        intra_residual=config.neck.intra_residual,
        ln_eps=config.neck.ln_eps,
    )
    cd_decoder = ChangeDetectionDecoder(
        in_dim=enc.cd_width,
        grid_size=enc.grid_size,
        image_size=int(enc.config["image_size"]),
        num_classes=config.cd_decoder.num_classes,
        form=config.cd_decoder.form,
        fpn_dim=config.cd_decoder.fpn_dim,
        prior_probability=config.cd_decoder.prior_probability,
    )
    return encoder, neck, cd_decoder


def build_semantic_cc(config: SemanticCCConfig, load_pretrained: bool = True, init_weights: bool = True) -> SemanticCC:
    """Instantiate Semantic-CC; ``load_pretrained`` loads SAM (resized) and the LLM from their ids/directories."""
    config.validate()
    config = copy.deepcopy(config)
    encoder, neck, cd_decoder = _change_parts(config, load_pretrained, init_weights)
    llm, tokenizer = build_llm(config.caption, load_pretrained)
    qformer = build_qformer(config.caption)
    caption = SemanticCCCaptionDecoder(config.caption, qformer, llm, tokenizer, config.neck.cc_dim)
    if config.caption.qformer_pretrained is not None and load_pretrained:
        load_blip2_qformer(caption, config.caption.qformer_pretrained)
    model = SemanticCC(encoder, neck, cd_decoder, caption)
    model.config = config
    return model


def build_semantic_cc_change_branch(
    config: SemanticCCConfig, load_pretrained: bool = True, init_weights: bool = True
) -> SemanticCCChangeBranch:
    """The change-detection branch of the Semantic-CC ``config`` describes (:class:`SemanticCCChangeBranch`)."""
    config.validate()
    config = copy.deepcopy(config)
    branch = SemanticCCChangeBranch(*_change_parts(config, load_pretrained, init_weights))
    branch.config = config
    return branch
