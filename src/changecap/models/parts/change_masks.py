"""Pixel-level change detection shared by every model with a change head: the per-pixel loss (BCE on one logit or
softmax cross-entropy on K ≥ 2 classes, with an ignore value), logits → change mask, and the binary scoring of
predicted masks that validation and ``changecap evaluate`` share (:class:`BinaryChangeScore`)."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from changecap.errors import ModelError
from changecap.metrics.change_detection import ChangeDetectionScores, ConfusionMatrix

LossForm = Literal["bce", "ce"]
IGNORE = 255  # mask value excluded from the pixel loss


def change_detection_loss(
    logits: torch.Tensor, mask: torch.Tensor, form: LossForm, ignore_index: int = IGNORE
) -> torch.Tensor:
    """Mean pixel loss over the pixels whose mask value is not ``ignore_index`` (0-dim; 0 if none are valid).

    ``"bce"`` (paper): logits [B, 1, S, S], mask values in {0, 1}; ``"ce"`` (code): logits [B, K ≥ 2, S, S], mask
    class indices. ``mask`` is [B, S, S] (integer or float).
    """
    total, count = change_detection_loss_sum(logits, mask, form, ignore_index)
    # clamp: with no valid pixel the loss is 0 (and still connected to the graph) instead of 0/0
    return total / count.to(total.dtype).clamp_min(1.0)


def change_detection_loss_sum(
    logits: torch.Tensor, mask: torch.Tensor, form: LossForm, ignore_index: int = IGNORE, change_weight: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixel loss summed over the valid pixels, and their count (both 0-dim): what a trainer normalises over a
    global batch. Arguments as :func:`change_detection_loss`; ``change_weight`` multiplies the loss of pixels whose
    label is not 0 (BCE's ``pos_weight``; for CE every class but 0), against the rarity of change pixels."""
    if form not in ("bce", "ce"):
        raise ModelError(f"change-detection loss form must be 'bce' or 'ce', got {form!r}")
    if logits.dim() != 4 or mask.shape != (logits.shape[0], *logits.shape[2:]):
        raise ModelError(
            f"CD loss expects logits [B, K, S, S] and mask [B, S, S], got {list(logits.shape)} and {list(mask.shape)}"
        )
    if form == "bce":
        if logits.shape[1] != 1:
            raise ModelError(f"'bce' CD loss expects 1-channel logits, got {logits.shape[1]} channels")
        valid = mask != ignore_index  # [B, S, S]
        target = torch.where(valid, mask, torch.zeros_like(mask)).to(logits.dtype)  # [B, S, S]
        pos_weight = None if change_weight == 1.0 else logits.new_tensor(change_weight)
        per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0], target, reduction="none",
                                                       pos_weight=pos_weight)  # [B, S, S]  # fmt: skip
        return (per_pixel * valid.to(logits.dtype)).sum(), valid.sum()
    if logits.shape[1] < 2:
        raise ModelError(f"'ce' CD loss expects at least 2 class channels, got {logits.shape[1]}")
    weight = None
    if change_weight != 1.0:
        weight = logits.new_full((logits.shape[1],), change_weight)
        weight[0] = 1.0
    per_pixel = F.cross_entropy(logits, mask.long(), weight=weight, ignore_index=ignore_index,
                                reduction="none")  # [B, S, S]  # fmt: skip
    return per_pixel.sum(), (mask != ignore_index).sum()


def predict_mask(logits: torch.Tensor) -> torch.Tensor:
    """Logits [B, K, S, S] → change mask [B, S, S] (int64): argmax over classes, or logit > 0 for one class."""
    if logits.dim() != 4:
        raise ModelError(f"predict_mask expects logits [B, K, S, S], got {list(logits.shape)}")
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def binary_change_labels(mask: torch.Tensor) -> torch.Tensor:
    """Class masks [B, S, S] → 0 / 1 / ``IGNORE``: every class > 0 is "change" (LEVIR-MCI's roads and buildings)."""
    return torch.where(mask == IGNORE, mask, (mask > 0).long())


def binary_change_loss_sum(
    logits: torch.Tensor, mask: torch.Tensor, change_weight: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of the per-pixel loss over labelled pixels and their count, on :func:`binary_change_labels`; ``IGNORE``
    pixels are left out. One logit per pixel: binary cross-entropy; two or more: softmax cross-entropy.
    """
    form: LossForm = "bce" if logits.shape[1] == 1 else "ce"
    return change_detection_loss_sum(logits, binary_change_labels(mask), form, IGNORE, change_weight)


class BinaryChangeScore:
    """Predicted change masks scored against ground-truth class masks as binary change detection: every class
    > 0 is "change" (:func:`binary_change_labels`), ``IGNORE`` pixels are left out, as the models are trained.

    ``update`` once per batch; ``merge`` the scores of other processes (validation under DDP); ``compute`` the
    per-class scores (None when no labelled pixel was seen), ``selection_scores`` the ``cd_*`` values the trainer
    logs and selects on."""

    def __init__(self) -> None:
        self.confusion = ConfusionMatrix(2, ignore_index=IGNORE)

    def update(self, predicted: torch.Tensor | np.ndarray, truth: torch.Tensor) -> None:
        """``predicted`` [B, S, S] (1 = changed) against ``truth`` [B, S, S] class masks, on any device."""
        predicted = torch.as_tensor(predicted).long().cpu()
        self.confusion.update(predicted, binary_change_labels(truth).cpu())

    def merge(self, other: BinaryChangeScore) -> BinaryChangeScore:
        self.confusion.merge(other.confusion)
        return self

    @property
    def counted(self) -> bool:
        """Whether any labelled pixel was scored."""
        return bool(self.confusion.matrix.sum() > 0)

    def compute(self) -> ChangeDetectionScores | None:
        """Precision / recall / F1 / IoU per class (0 no change, 1 change) and the OA; None when nothing counted."""
        return self.confusion.compute() if self.counted else None

    def selection_scores(self) -> dict[str, float]:
        """The "change" class's F1 / IoU / precision / recall and the OA as ``cd_*`` (empty when nothing counted).

        An undefined ratio (no pixel predicted or labelled as change) is reported as 0, so a log stays valid JSON
        and model selection never compares against NaN."""
        scores = self.compute()
        if scores is None:
            return {}
        values = {"cd_F1": scores.f1[1], "cd_IoU": scores.iou[1], "cd_precision": scores.precision[1],
                  "cd_recall": scores.recall[1], "cd_OA": scores.overall_accuracy}  # fmt: skip
        return {k: 0.0 if math.isnan(float(v)) else float(v) for k, v in values.items()}
