"""changecap's Siamese change detector: one CNN encoder shared by both dates, a difference fusion at every level, a
feature-pyramid decoder, per-pixel logits at the input resolution.

    images [B, 2, 3, S, S] ─ encoder (both dates in one batch) → levels l = 0..L−1: [2B, C_l, S/2^(l+2), …]
                           ─ fusion per level (|a − b| and/or [a ; b])  → [B, C_l, S/2^(l+2), …]
                           ─ decoder: laterals + top-down sum, every level upsampled to S/4, fused, classified
                           → logits [B, K, S, S]

``features`` exposes the fused levels (before the decoder): DFM reads its change prior from them.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from changecap.errors import ModelError
from changecap.models.change_detection.config import ChangeDetectionConfig, CNNEncoderConfig, Fusion
from changecap.models.contract import ChangeModel, Decoding, RawPrediction


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3×3 convolutions with BatchNorm and a skip (a strided 1×1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(c_in, c_out, 3, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.skip(x))


class CNNEncoder(nn.Module):
    """Images [N, 3, S, S] → one feature map per stage, stage l at S / 2^(l+2) with ``widths[l]`` channels."""

    def __init__(self, config: CNNEncoderConfig) -> None:
        super().__init__()
        w = config.widths
        self.stem = conv_bn_relu(3, w[0], 3, stride=2)  # [N, w0, S/2, S/2]
        stages = []
        for i, width in enumerate(w):
            c_in = w[0] if i == 0 else w[i - 1]
            blocks = [ResidualBlock(c_in, width, stride=2)]
            blocks += [ResidualBlock(width, width) for _ in range(config.blocks - 1)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(x)
        levels = []
        for stage in self.stages:
            h = stage(h)
            levels.append(h)
        return levels


class DifferenceFusion(nn.Module):
    """One level's two dates [B, C, h, w] each → [B, C, h, w]: a convolution over |a − b|, [a ; b] or both."""

    def __init__(self, channels: int, mode: Fusion) -> None:
        super().__init__()
        self.mode = mode
        inputs = {"diff": 1, "concat": 2, "diff_concat": 3}[mode]
        self.proj = conv_bn_relu(inputs * channels, channels, 3)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        diff = (after - before).abs()  # symmetric in the two dates: a change is a change either way
        parts = {"diff": [diff], "concat": [before, after], "diff_concat": [before, after, diff]}[self.mode]
        return self.proj(torch.cat(parts, dim=1))  # [B, C, h, w]


class MultiScaleDecoder(nn.Module):
    """Fused levels → logits [B, K, S, S]: 1×1 laterals to ``dim``, a top-down sum (FPN), each level smoothed and
    upsampled to the finest level (S/4), concatenated, fused, classified, and upsampled bilinearly to S."""

    def __init__(self, widths: list[int], dim: int, num_classes: int, image_size: int, dropout: float) -> None:
        super().__init__()
        self.image_size = image_size
        self.laterals = nn.ModuleList(nn.Conv2d(w, dim, 1) for w in widths)
        self.smooth = nn.ModuleList(conv_bn_relu(dim, dim, 3) for _ in widths)
        self.fuse = conv_bn_relu(len(widths) * dim, dim, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        lat = [conv(x) for conv, x in zip(self.laterals, levels, strict=True)]  # [B, D, h_l, w_l]
        for i in range(len(lat) - 2, -1, -1):  # top-down: coarse context into the finer levels
            lat[i] = lat[i] + F.interpolate(lat[i + 1], size=lat[i].shape[-2:], mode="bilinear", align_corners=False)
        finest = lat[0].shape[-2:]
        ups = [
            F.interpolate(s(x), size=finest, mode="bilinear", align_corners=False) if i else s(x)
            for i, (s, x) in enumerate(zip(self.smooth, lat, strict=True))
        ]  # each [B, D, S/4, S/4]
        h = self.fuse(torch.cat(ups, dim=1))  # [B, D, S/4, S/4]
        logits = self.classifier(self.dropout(h))  # [B, K, S/4, S/4]
        size = (self.image_size, self.image_size)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)  # [B, K, S, S]


class SiameseChangeDetector(ChangeModel):
    """Image pairs [B, 2, 3, S, S] → change logits [B, K, S, S] (composed from the three parts)."""

    def __init__(self, encoder: nn.Module, fusions: nn.ModuleList, decoder: nn.Module, image_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.fusion = fusions
        self.decoder = decoder
        self._image_size = image_size

    @property
    def image_size(self) -> int:
        return self._image_size

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The fused bi-temporal levels [B, C_l, S/2^(l+2), S/2^(l+2)], finest first."""
        s = self.image_size
        if images.dim() != 5 or images.shape[1] != 2 or images.shape[2] != 3 or images.shape[-2:] != (s, s):
            raise ModelError(f"the change detector expects image pairs [B, 2, 3, {s}, {s}], got {list(images.shape)}")
        levels = self.encoder(images.transpose(0, 1).flatten(0, 1))  # [2B, C_l, h, w]: all before, then all after
        dates = [x.unflatten(0, (2, -1)) for x in levels]  # [2, B, C_l, h, w] (no Python batch size: ONNX-traceable)
        return [fuse(d[0], d[1]) for fuse, d in zip(self.fusion, dates, strict=True)]  # [B, C_l, h, w]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.features(images))  # [B, K, S, S]

    # the change-prior interface (registry ``Architecture.change_prior``): the fused levels
    @property
    def feature_widths(self) -> list[int]:
        assert self.config is not None  # set by build_change_detector
        return list(self.config.encoder.widths)

    def change_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.features(images)

    # the model contract
    @property
    def compile_target(self) -> nn.Module:
        return self.encoder

    def infer(self, images: torch.Tensor, decoding: Decoding) -> RawPrediction:
        """Change-mask logits; no captions, no image-level probability."""
        return RawPrediction(mask_logits=self(images))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "encoder": list(self.encoder.parameters()),
            "fusion": list(self.fusion.parameters()),
            "decoder": list(self.decoder.parameters()),
        }


def build_change_detector(
    config: ChangeDetectionConfig, load_pretrained: bool = True, init_weights: bool = True
) -> SiameseChangeDetector:
    """Instantiate the detector (nothing pretrained: ``load_pretrained`` and ``init_weights`` change nothing)."""
    config.validate()
    config = copy.deepcopy(config)
    widths = config.encoder.widths
    model = SiameseChangeDetector(
        CNNEncoder(config.encoder),
        nn.ModuleList(DifferenceFusion(w, config.fusion) for w in widths),
        MultiScaleDecoder(widths, config.decoder_dim, config.num_classes, config.image_size, config.dropout),
        config.image_size,
    )
    model.config = config
    return model
