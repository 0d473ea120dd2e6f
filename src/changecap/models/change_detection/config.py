"""Configuration of changecap's own Siamese change-detection model (``models/change_detection``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from changecap.models.registry import ArchitectureConfig
from changecap.schema import require

Fusion = Literal["diff", "concat", "diff_concat"]


@dataclass
class CNNEncoderConfig:
    """The shared (Siamese) CNN encoder: a stride-2 stem, then one stage per width, each halving the resolution.

    With the default four widths the stages are at 1/4, 1/8, 1/16 and 1/32 of the input.
    """

    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # channels of each stage
    blocks: int = 2  # residual blocks per stage (the first one strides by 2)

    def validate(self, prefix: str = "model.encoder") -> None:
        require(1 <= len(self.widths) <= 5, f"{prefix}.widths", f"give 1 to 5 stage widths, got {self.widths}")
        require(all(w >= 1 for w in self.widths), f"{prefix}.widths", f"widths must be >= 1, got {self.widths}")
        require(self.blocks >= 1, f"{prefix}.blocks", f"must be >= 1, got {self.blocks}")


@dataclass
class ChangeDetectionConfig(ArchitectureConfig):
    """A light Siamese change detector: shared encoder → per-level difference fusion → multi-scale decoder → per-pixel
    logits at the input resolution. It makes masks, no captions; it is also DFM's change-detection prior."""

    architecture: ClassVar[str] = "change_detection"

    image_size: int = 256  # input side in pixels (a multiple of the encoder's total stride)
    encoder: CNNEncoderConfig = field(default_factory=CNNEncoderConfig)
    # how the two dates meet at every level: |a − b| ("diff"), [a ; b] ("concat") or [a ; b ; |a − b|] ("diff_concat")
    fusion: Fusion = "diff_concat"
    decoder_dim: int = 64  # width of the feature pyramid and of the segmentation head
    num_classes: int = 1  # 1: one logit per pixel, binary cross-entropy; >= 2: softmax cross-entropy over classes
    dropout: float = 0.1  # before the classifier
    # The data vocabulary's size and caption length, recorded (filled in by the trainer) so that a model directory
    # has the same layout as a captioner's; this model makes no captions.
    vocab_size: int = 0
    max_length: int = 0

    @property
    def stride(self) -> int:
        return 2 ** (len(self.encoder.widths) + 1)

    def validate(self, prefix: str = "model") -> None:
        self.encoder.validate(f"{prefix}.encoder")
        stride = self.stride
        require(self.image_size >= 1 and self.image_size % stride == 0, f"{prefix}.image_size",
                f"must be a positive multiple of the total stride {stride}, got {self.image_size}")  # fmt: skip
        require(self.fusion in ("diff", "concat", "diff_concat"), f"{prefix}.fusion",
                f"must be diff, concat or diff_concat, got {self.fusion!r}")  # fmt: skip
        require(self.decoder_dim >= 1, f"{prefix}.decoder_dim", f"must be >= 1, got {self.decoder_dim}")
        require(self.num_classes >= 1, f"{prefix}.num_classes", f"must be >= 1, got {self.num_classes}")
        require(0.0 <= self.dropout < 1.0, f"{prefix}.dropout", f"must be in [0, 1), got {self.dropout}")

    @classmethod
    def with_data(cls, section: dict[str, Any], words: list[str], max_length: int) -> dict[str, Any]:
        """The vocabulary size and caption length of the training data (kept only to describe the run)."""
        return {**section, "vocab_size": len(words), "max_length": max_length}


def tiny_training_config() -> dict[str, Any]:
    """The registry's ``tiny_config``: two stages of 8 and 16 channels at 32 px, selected on the change F1."""
    model = {"architecture": "change_detection", "image_size": 32, "encoder": {"widths": [8, 16], "blocks": 1},
             "decoder_dim": 8}  # fmt: skip
    return {"data": {"image_size": 32, "normalize": "imagenet"}, "model": model, "train": {"select_metric": "cd_F1"}}
