"""Change-detection decoder of Semantic-CC (``docs/semantic_cc.md``, eq. (6)), plus its loss and prediction.

The two dates' CD features are concatenated on channels (so every level sees both dates at once), turned into a
feature pyramid from the single-scale ViT map (:class:`SimpleFPN`, ViTDet style: no backbone pyramid to tap), and
fused by an all-MLP head (:class:`MLPSegHead`) at the output resolution. The pixel losses and the mask prediction
are shared with the other change-detection heads (``models/parts/change_masks.py``).

Forms (the paper's and the released code's):

* ``"code"`` — the released decoder: 5 levels of ``fpn_dim`` (256) channels at grid×4, ×2, ×1, ×½, ×¼ (H/4 … H/64 of a
  256 input), 2-class logits for softmax cross-entropy.
* ``"paper"`` — a **reconstruction**: the paper only says "4 levels of 512 channels at H/4 … H/32". Here that is the
  code's level construction without the fifth (extra max-pool) level, with an FPN width of the concatenated feature
  width (2·``in_dim`` = 512) unless ``fpn_dim`` is given, and the same head. ``num_classes=1`` gives the paper's BCE
  setup.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from changecap.errors import ModelError
from changecap.models.parts.change_masks import (  # noqa: F401 - the decoder's loss and prediction, shared
    LossForm,
    change_detection_loss,
    change_detection_loss_sum,
    predict_mask,
)

DecoderForm = Literal["code", "paper"]

#: eps of the FPN's LayerNorms: the released config builds them as mmcv ``LN2d`` without an eps, so mmcv's default
#: 1e-5 applies (SAM's own neck uses 1e-6)
FPN_LN_EPS = 1e-5


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW map (affine), as SAM / ViTDet use it; eps 1e-5 by default."""

    def __init__(self, channels: int, eps: float = FPN_LN_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] → [N, C, H, W]."""
        channels_last = x.permute(0, 2, 3, 1)  # [N, H, W, C]
        normed = F.layer_norm(channels_last, channels_last.shape[-1:], self.weight, self.bias, self.eps)
        return normed.permute(0, 3, 1, 2)  # [N, C, H, W]


class SimpleFPN(nn.Module):
    """Feature pyramid from one map [N, C, g, g]: levels at g×4, g×2, g, g/2 (and g/4 with ``extra_level``).

    Level ops (``scales``): ConvT k2s2 → LN2d → GELU → ConvT k2s2 (C → C/2 → C/4); ConvT k2s2 (C → C/2); identity;
    max-pool 2. Each level then gets a lateral Conv1×1 + LN2d and an output Conv3×3 + LN2d (convs without bias: the
    norm follows); every LN2d has eps :data:`FPN_LN_EPS`. The extra level is a stride-2 subsampling (max-pool kernel
    1) of the last level's output.
    """

    def __init__(self, in_channels: int, out_channels: int, extra_level: bool = True) -> None:
        super().__init__()
        if in_channels % 4 != 0:
            raise ModelError(f"SimpleFPN input width must be divisible by 4, got {in_channels}")
        c = in_channels
        self.extra_level = extra_level
        self.scales = nn.ModuleList(
            [
                nn.Sequential(
                    nn.ConvTranspose2d(c, c // 2, kernel_size=2, stride=2),
                    LayerNorm2d(c // 2),
                    nn.GELU(),
                    nn.ConvTranspose2d(c // 2, c // 4, kernel_size=2, stride=2),
                ),
                nn.ConvTranspose2d(c, c // 2, kernel_size=2, stride=2),
                nn.Identity(),
                nn.MaxPool2d(kernel_size=2, stride=2),
            ]
        )
        level_in = (c // 4, c // 2, c, c)
        self.lateral_convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(ch, out_channels, kernel_size=1, bias=False), LayerNorm2d(out_channels))
            for ch in level_in
        )
        self.output_convs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False), LayerNorm2d(out_channels)
            )
            for _ in level_in
        )

    @property
    def num_levels(self) -> int:
        return len(self.scales) + int(self.extra_level)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[N, C, g, g] → ``num_levels`` maps [N, out_channels, g·4 / 2^i, …], finest first."""
        levels = [
            out_conv(lateral(scale(x)))
            for scale, lateral, out_conv in zip(self.scales, self.lateral_convs, self.output_convs)
        ]
        if self.extra_level:
            levels.append(F.max_pool2d(levels[-1], kernel_size=1, stride=2))  # [N, out, g/4, g/4]
        return levels


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    # No conv bias: the BatchNorm's shift replaces it (mmseg ConvModule's default with a norm layer).
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU()
    )


class MLPSegHead(nn.Module):
    """All-MLP head: per level Conv1×1 + BN + ReLU, bilinear resize to the output size, concat, Conv1×1 + BN + ReLU,
    Conv1×1 → classes (with bias)."""

    def __init__(self, in_channels: int, num_levels: int, channels: int, num_classes: int, out_size: int) -> None:
        super().__init__()
        self.out_size = out_size
        self.level_convs = nn.ModuleList(_conv_bn_relu(in_channels, channels) for _ in range(num_levels))
        self.fuse = _conv_bn_relu(num_levels * channels, channels)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """``num_levels`` maps [N, in, h_i, w_i] → logits [N, classes, out_size, out_size]."""
        if len(levels) != len(self.level_convs):
            raise ModelError(f"the segmentation head expects {len(self.level_convs)} levels, got {len(levels)}")
        size = (self.out_size, self.out_size)
        resized = [
            F.interpolate(conv(level), size=size, mode="bilinear", align_corners=False)  # [N, channels, S, S]
            for conv, level in zip(self.level_convs, levels)
        ]
        return self.classifier(self.fuse(torch.cat(resized, dim=1)))  # [N, classes, S, S]


class ChangeDetectionDecoder(nn.Module):
    """CD features of both dates [2B, in_dim, g, g] (before rows, then after rows) → logits [B, classes, S, S].

    ``fpn`` is the pyramid and ``head`` the segmentation head (counted apart by ``changecap summary``). ``fpn_dim=None``
    means 256 in the code form and 2·``in_dim`` in the paper form; the head width equals the FPN width.
    """

    def __init__(
        self,
        in_dim: int = 256,
        grid_size: int = 16,
        image_size: int = 256,
        num_classes: int = 2,
        form: DecoderForm = "code",
        fpn_dim: int | None = None,
        prior_probability: float | None = None,
    ) -> None:
        super().__init__()
        if form not in ("code", "paper"):
            raise ModelError(f"CD decoder form must be 'code' or 'paper', got {form!r}")
        if num_classes < 1:
            raise ModelError(f"the CD decoder needs at least one class, got {num_classes}")
        if fpn_dim is None:
            fpn_dim = 256 if form == "code" else 2 * in_dim
        self.in_dim = in_dim
        self.grid_size = grid_size
        self.image_size = image_size
        self.num_classes = num_classes
        self.form: DecoderForm = form
        self.fpn_dim = fpn_dim
        self.fpn = SimpleFPN(2 * in_dim, fpn_dim, extra_level=form == "code")
        self.head = MLPSegHead(fpn_dim, self.fpn.num_levels, fpn_dim, num_classes, image_size)
        if prior_probability is not None:
            self.init_change_prior(prior_probability)

    @torch.no_grad()
    def init_change_prior(self, p: float) -> None:
        """Start the classifier at a "change" probability of ``p`` everywhere: bias logit(p) on one logit (BCE), or
        a class-bias gap of logit(p) with softmax (CE: only the difference of the two biases matters)."""
        if not 0 < p < 1:
            raise ModelError(f"the change prior must be in (0, 1), got {p}")
        bias = self.head.classifier.bias
        bias.zero_()
        bias[-1] = math.log(p / (1 - p))  # the last class is "change" in both forms

    def forward(self, f_cd: torch.Tensor) -> torch.Tensor:
        """[2B, in_dim, g, g] → [B, num_classes, image_size, image_size]."""
        return self.head(self.pyramid(f_cd))

    def pyramid(self, f_cd: torch.Tensor) -> list[torch.Tensor]:
        """[2B, in_dim, g, g] → the pair's feature levels [B, fpn_dim, 4g / 2^i, …], finest first (what the head
        fuses; what DFM takes as its change prior)."""
        g = self.grid_size
        if f_cd.dim() != 4 or tuple(f_cd.shape[1:]) != (self.in_dim, g, g) or f_cd.shape[0] % 2 or not f_cd.shape[0]:
            raise ModelError(
                f"the CD decoder expects [2B, {self.in_dim}, {g}, {g}] features (before rows, then after rows), "
                f"got {list(f_cd.shape)}"
            )
        before, after = f_cd.chunk(2, dim=0)  # [B, in_dim, g, g] each
        pair = torch.cat([before, after], dim=1)  # [B, 2·in_dim, g, g]
        return self.fpn(pair)

    def extra_repr(self) -> str:
        return f"form={self.form!r}, grid_size={self.grid_size}, image_size={self.image_size}"
