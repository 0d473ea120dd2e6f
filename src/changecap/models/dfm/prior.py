"""DFM's change-detection prior (``docs/dfm.md``, eq. 9): a frozen change detector's fused encoder features, projected
to the ViT width, resized to the ViT grid, with a learned position per cell → P [B, N, D].

The detector is any registered architecture's change branch (``Architecture.change_prior``): changecap's Siamese
CNN (its fused encoder levels) or Semantic-CC's encoder + neck + CD decoder (the decoder's pyramid levels).

The detector never changes: its parameters have no gradient, it stays in eval mode whatever the model's mode (its
BatchNorm statistics never move), and it runs under ``no_grad``. Only the projection and the positions train. DFM's
images (CLIP-normalised, the ViT's size) are re-normalised and resized to what the detector was trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from changecap.errors import ModelError


class ChangePrior(nn.Module):
    """Image pairs [B, 2, 3, S, S] (DFM's preprocessing) → prior tokens [B, G·G, D]."""

    def __init__(
        self,
        detector: nn.Module,
        level: int,
        dim: int,
        grid_size: int,
        image_size: int,
        mean: list[float],
        std: list[float],
        input_mean: list[float],
        input_std: list[float],
    ) -> None:
        super().__init__()
        self.detector = detector
        self.detector.requires_grad_(False)
        self.detector.eval()
        widths = list(detector.feature_widths)  # the registry's change-prior interface
        if not -len(widths) <= level < len(widths):
            raise ModelError(f"model.prior.level {level}: the detector has {len(widths)} levels")
        self.level = level
        self.image_size = image_size
        self.grid_size = grid_size
        self.proj = nn.Conv2d(widths[level], dim, 1)
        self.position = nn.Parameter(torch.zeros(grid_size * grid_size, dim))  # [N, D]
        nn.init.trunc_normal_(self.position, std=0.02)
        # x_detector = (x · input_std + input_mean − mean) / std, per channel: one scale and one shift
        scale = torch.tensor(input_std) / torch.tensor(std)
        shift = (torch.tensor(input_mean) - torch.tensor(mean)) / torch.tensor(std)
        self.register_buffer("scale", scale.view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> ChangePrior:
        super().train(mode)
        self.detector.eval()  # frozen: BatchNorm statistics and dropout as at the end of its own training
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = images * self.scale + self.shift  # [B, 2, 3, S, S] in the detector's normalisation
            if x.shape[-1] != self.image_size:
                s = self.image_size
                # antialiasing only matters when shrinking (enlarging: the same values up to rounding, 5e-7, and the
                # plain kernel has an ONNX form)
                x = F.interpolate(x.flatten(0, 1), size=(s, s), mode="bilinear", align_corners=False,
                                  antialias=s < x.shape[-1]).unflatten(0, (-1, 2))  # fmt: skip
            feats = self.detector.change_features(x)[self.level]  # [B, C, h, w]
        p = self.proj(feats)  # [B, D, h, w]
        g = self.grid_size
        if p.shape[-2:] != (g, g):
            p = F.interpolate(p, size=(g, g), mode="bilinear", align_corners=False)  # [B, D, G, G]
        return p.flatten(2).transpose(1, 2) + self.position  # [B, N, D]
