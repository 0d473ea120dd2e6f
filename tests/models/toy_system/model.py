"""The toy system's model: a patch encoder shared by both dates, a per-cell change head (mask and probability) and
changecap's Transformer caption decoder, which brings greedy and beam decoding and the ONNX step graphs."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from changecap.models.contract import ChangeModel, Decoding, OnnxExport, RawPrediction
from changecap.models.onnx_graphs import step_decoder_export
from changecap.models.parts.caption_decoder import TransformerCaptionDecoder
from changecap.models.parts.decoding import generate
from tests.models.toy_system.config import ToyConfig


class ToyCaptioner(ChangeModel):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        d = config.decoder.dim
        self.encoder = nn.Conv2d(3, d, kernel_size=config.patch, stride=config.patch)
        self.fusion = nn.Linear(2 * d, d)
        self.change_head = nn.Linear(d, 1)
        self.decoder = TransformerCaptionDecoder(config.decoder)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def fuse(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pairs [B, 2, 3, S, S] → decoder memory [B, L, D] and one change logit per grid cell [B, L]."""
        b = images.shape[0]
        cells = self.encoder(images.flatten(0, 1)).flatten(2).transpose(1, 2)  # [2B, L, D]
        cells = cells.unflatten(0, (b, 2))  # [B, 2, L, D]
        memory = self.fusion(torch.cat([cells[:, 0], cells[:, 1] - cells[:, 0]], dim=-1))  # [B, L, D]
        return memory, self.change_head(memory).squeeze(-1)  # [B, L, D], [B, L]

    def heads(self, cell_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-cell logits [B, L] → mask logits [B, 1, S, S] and the image-level change logit [B] (their mean)."""
        grid = self.config.image_size // self.config.patch
        cells = cell_logits.unflatten(1, (grid, grid)).unsqueeze(1)  # [B, 1, g, g]
        return F.interpolate(cells, size=self.config.image_size, mode="nearest"), cell_logits.mean(dim=1)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Teacher forcing: caption logits [B, T, V], mask logits [B, 1, S, S], change logit [B]."""
        memory, cell_logits = self.fuse(images)
        return (self.decoder(memory, tokens), *self.heads(cell_logits))

    def infer(self, images: torch.Tensor, decoding: Decoding) -> RawPrediction:
        memory, cell_logits = self.fuse(images)
        mask_logits, change_logit = self.heads(cell_logits)
        seqs = generate(self.decoder, memory, decoding.max_length or self.decoder.max_length,
                        decoding.beam_size or 1, decoding.length_penalty or 0.0)  # fmt: skip
        return RawPrediction(captions=seqs, change_probability=torch.sigmoid(change_logit), mask_logits=mask_logits)

    def onnx_export(self, image_size: int, batch: int = 2) -> OnnxExport:
        def memory(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            memory, cell_logits = self.fuse(images)
            return memory, torch.sigmoid(cell_logits.mean(dim=1))

        meta = {"architecture": self.architecture, "capabilities": self.capabilities.names()}
        return step_decoder_export(self, memory, self.decoder, image_size, batch, meta)


def build_toy(config: ToyConfig, load_pretrained: bool = True, init_weights: bool = True) -> ToyCaptioner:
    config.validate()
    return ToyCaptioner(copy.deepcopy(config))
