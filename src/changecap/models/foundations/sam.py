"""The ``sam`` pretraining target: a SAM-style image encoder learnt from land-cover maps.

A transformers ``SamVisionModel`` (patch embedding, absolute positions, windowed and global attention blocks with
relative positions, SAM's channel-reduction neck) is trained with a light segmentation head over its neck output:
per-pixel cross-entropy against the land-cover map (class 255 ignored). The head is dropped afterwards:
:meth:`SAMPretrainer.save_pretrained` writes the ``SamVisionModel`` alone (``config.json`` + ``model.safetensors``),
the directory Semantic-CC's ``model.encoder.pretrained`` loads exactly as it loads ``facebook/sam-vit-large``.

Choices (not given by SAM, which is trained on promptable masks):

* the head is one 1×1 convolution over the neck's grid whose logits are upsampled bilinearly to the map
  (``head="linear"``): the head is dropped, so the less it does, the more of what is learnt stays in the encoder
  that is kept. On land-cover maps of SynthCC's renderer (7 classes, 64 px, 150 updates of 16 images) it also
  reached a higher validation mIoU than ``head="upsample"`` (0.51 against 0.46–0.49 on two seeds), which first
  upsamples the grid ×4 with two stride-2 transposed convolutions (as SAM's mask decoder upscales its embedding);
* classes are weighted by the inverse square root of their pixel frequency, counted over every batch seen so far:
  land cover is dominated by bare land and grass, while the buildings, roads and parking lots a caption talks about
  cover a few per cent of the pixels (unweighted, the same run had not yet found roads or buildings after 100
  updates: IoU 0.02 and 0.00). The square root keeps the rarest classes from dominating the loss.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from changecap.data.files import write_folder
from changecap.errors import ConfigError, ModelError
from changecap.models.foundations.target import PretrainInputs, PretrainTarget
from changecap.models.semantic_cc.config import LoraConfig, SAMEncoderConfig
from changecap.models.semantic_cc.encoder import load_resized_sam_weights, sam_vision_config
from changecap.schema import require

IGNORE_INDEX = 255  # land-cover pixels without a class

#: SamVisionConfig fields of the CPU-sized stand-in: the encoder of ``configs/semantic_cc_synthcc_cpu.yaml``
#: (64 px, patch 4 → 16×16 tokens, width 64, 4 blocks of which 2 global, neck to 32 channels)
SAM_CPU: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "mlp_dim": 128,
    "output_channels": 32,
    "image_size": 64,
    "patch_size": 4,
    "window_size": 4,
    "global_attn_indexes": [1, 3],
}


@dataclass
class SAMPretrainConfig:
    """The ``sam`` target: a SAM vision encoder and the segmentation head it is trained with."""

    num_classes: int | None = None  # land-cover classes (values 0..num_classes-1, 255 ignored); None: the data's
    config: dict[str, Any] = field(default_factory=lambda: dict(SAM_CPU))  # SamVisionConfig fields
    pretrained: str | None = None  # start from a SAM checkpoint (Hub id or directory), resized to config's size
    head: Literal["linear", "upsample"] = "linear"  # linear: 1×1 conv on the grid; upsample: 2 transposed convs first
    class_weighting: Literal["inverse_sqrt", "none"] = "inverse_sqrt"  # per-class weights from pixel frequencies

    def validate(self, prefix: str = "model") -> None:
        n = self.num_classes
        require(
            n is None or (isinstance(n, int) and not isinstance(n, bool) and 2 <= n <= IGNORE_INDEX),
            f"{prefix}.num_classes",
            f"must be an integer in 2..{IGNORE_INDEX} or null (the data's classes), got {n!r}",
        )
        # the encoder's own checks (positive sizes, patch divides image, global blocks exist), then transformers'
        SAMEncoderConfig(config=dict(self.config), lora=LoraConfig(enabled=False)).validate(prefix)
        sam_vision_config(self.config, f"{prefix}.config")

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])


class _ChannelNorm(nn.Module):
    """LayerNorm over the channels of a [B, C, H, W] map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # [B, C, H, W]


def segmentation_head(channels: int, num_classes: int, form: str) -> nn.Module:
    """Neck output [B, C, g, g] → class logits [B, K, 4g, 4g] (``upsample``) or [B, K, g, g] (``linear``)."""
    if form == "linear":
        return nn.Conv2d(channels, num_classes, kernel_size=1)
    return nn.Sequential(
        nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2),
        _ChannelNorm(channels),
        nn.GELU(),
        nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2),
        nn.GELU(),
        nn.Conv2d(channels, num_classes, kernel_size=1),
    )


class SAMPretrainer(nn.Module):
    """SAM vision encoder + segmentation head; ``forward(batch)`` → ``{"segmentation": loss}``.

    ``batch["image"]`` [B, 3, S, S] (normalised as the data's ``normalize`` says), ``batch["landcover"]`` [B, H, W]
    class ids (255 = ignore; any H, W: the logits are resized to the map).
    """

    def __init__(self, config: SAMPretrainConfig) -> None:
        super().__init__()
        from transformers import SamVisionModel

        config.validate()
        if config.num_classes is None:
            raise ConfigError("model.num_classes", "is needed to build the segmentation head (null: the data's)")
        self.config = copy.deepcopy(config)
        self.num_classes: int = config.num_classes
        self.sam = SamVisionModel(sam_vision_config(self.config.config))  # saved as it is by save_pretrained
        if self.config.pretrained is not None:
            load_resized_sam_weights(self.sam.vision_encoder, self.config.pretrained)
        channels = int(self.sam.config.output_channels)
        self.head = segmentation_head(channels, self.num_classes, self.config.head)
        # pixels per class over every training batch so far (weights = frequency^-1/2); not saved with the encoder
        self.register_buffer("pixel_counts", torch.zeros(self.num_classes, dtype=torch.float64))
        self.class_names: list[str] | None = None  # names of the classes in the held-out figures (None: their ids)

    @property
    def encoder(self) -> nn.Module:
        """The trained part: transformers' ``SamVisionEncoder`` (what Semantic-CC's encoder wraps)."""
        return self.sam.vision_encoder

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, S, S] → the neck's output [B, C_out, g, g]."""
        s = self.config.image_size
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (s, s):
            raise ModelError(f"the sam target expects images [B, 3, {s}, {s}] (model.config.image_size), got "
                             f"{list(images.shape)}")  # fmt: skip
        return self.encoder(images).last_hidden_state  # [B, C_out, g, g]

    def logits(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Class logits [B, K, H, W] at the map size ``size``."""
        out = self.head(self.features(images))  # [B, K, h, w]
        if tuple(out.shape[-2:]) != tuple(size):
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)  # [B, K, H, W]
        return out

    def class_weights(self, target: torch.Tensor) -> torch.Tensor | None:
        """Inverse-square-root pixel frequencies (counts updated with ``target`` while training); None: unweighted."""
        if self.config.class_weighting == "none":
            return None
        valid = target[target != IGNORE_INDEX]
        if self.training:
            counts = torch.bincount(valid, minlength=self.num_classes)  # [K]
            self.pixel_counts += counts.to(self.pixel_counts)
        counts = self.pixel_counts if self.pixel_counts.sum() > 0 else torch.ones_like(self.pixel_counts)
        freq = counts / counts.sum()
        # unseen classes get weight 1: they are in no target yet, so their weight does not enter the loss
        weights = torch.where(freq > 0, freq.clamp_min(1e-12).rsqrt(), torch.ones_like(freq))
        return weights.to(torch.float32)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        target = batch.get("landcover")
        if target is None:
            raise ModelError("the sam target trains on land-cover maps: the data has none ('landcover' missing)")
        images = batch["image"]
        if target.dim() != 3 or target.shape[0] != images.shape[0]:
            raise ModelError(f"land-cover maps must be [B, H, W] for {images.shape[0]} images, got "
                             f"{list(target.shape)}")  # fmt: skip
        target = target.to(device=images.device, dtype=torch.long)
        valid = target[target != IGNORE_INDEX]
        if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= self.num_classes):
            bad = int(valid.max()) if int(valid.max()) >= self.num_classes else int(valid.min())
            raise ConfigError("model.num_classes", f"is {self.num_classes} but a land-cover map holds class "
                                                   f"{bad}")  # fmt: skip
        logits = self.logits(images, (target.shape[-2], target.shape[-1]))  # [B, K, H, W]
        weights = self.class_weights(target)
        if not valid.numel():  # nothing labelled in this batch: a zero loss that still reaches every weight
            return {"segmentation": logits.sum() * 0.0}
        loss = F.cross_entropy(logits.float(), target, weight=weights, ignore_index=IGNORE_INDEX)
        return {"segmentation": loss}

    @torch.no_grad()
    def evaluate(self, batches: Iterable[dict[str, Any]]) -> dict[str, float]:
        """Held-out segmentation: pixel accuracy, the IoU of every class present in the maps or the predictions,
        and their mean (mIoU)."""
        k = self.num_classes
        confusion = torch.zeros(k, k, dtype=torch.float64)  # [target, predicted]
        for batch in batches:
            target = batch["landcover"].long()
            pred = self.logits(batch["image"], (target.shape[-2], target.shape[-1])).argmax(dim=1)  # [B, H, W]
            valid = target != IGNORE_INDEX
            index = (target[valid] * k + pred[valid]).cpu()
            confusion += torch.bincount(index, minlength=k * k).reshape(k, k).double()
        total = float(confusion.sum())
        if total == 0:
            return {}
        inter = confusion.diag()
        union = confusion.sum(0) + confusion.sum(1) - inter
        seen = union > 0
        iou = inter[seen] / union[seen]
        out = {"pixels": total, "pixel_accuracy": float(inter.sum()) / total, "mIoU": float(iou.mean())}
        names = self.class_names or [str(i) for i in range(k)]
        for i in torch.nonzero(seen).flatten().tolist():
            out[f"IoU_{names[i]}"] = float(inter[i] / union[i])
        return out

    def save_pretrained(self, out_dir: Path) -> None:
        """Write the encoder as a ``SamVisionModel`` directory (``config.json`` + ``model.safetensors``); the
        segmentation head is left out."""
        write_folder(out_dir, lambda tmp: self.sam.save_pretrained(str(tmp)))


def build_sam(config: SAMPretrainConfig, inputs: PretrainInputs) -> SAMPretrainer:
    """A SAM encoder (random, or ``pretrained``) at the data's image size, with a head over the data's classes."""
    classes = inputs.landcover_classes
    if classes is None:
        raise ConfigError("data.root", "the sam target trains on land-cover / segmentation maps, and the data has none")
    if config.num_classes is not None and config.num_classes != len(classes):
        raise ConfigError("model.num_classes", f"is {config.num_classes} but the data has {len(classes)} classes")
    fields = dict(config.config)
    size = fields.setdefault("image_size", inputs.image_size)
    if size != inputs.image_size:
        raise ConfigError("model.config.image_size", f"is {size} but data.image_size is {inputs.image_size}")
    module = SAMPretrainer(dataclasses.replace(config, num_classes=len(classes), config=fields))
    module.class_names = [name.replace(" ", "_") for name in classes]
    return module


TARGET = PretrainTarget(
    name="sam",
    summary="a SAM-style image encoder trained on land-cover maps (its segmentation head is dropped)",
    config_class=SAMPretrainConfig,
    build=build_sam,
    inputs="images",
    needs=("landcover",),
    loads_as="model.encoder.pretrained: DIR (Semantic-CC)",
)
