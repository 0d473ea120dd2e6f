"""The objective of mask-only change detectors (``models/change_detection``): the per-pixel loss of the change mask,
an exact mean over the labelled pixels of the global batch (``base.py``).

One phase per epoch over the training pairs that have a mask (LEVIR-CD, LEVIR-MCI, SynthCC; caption-only pairs of a
mixed set are skipped). Masks are binarised (class > 0 = change); pixels labelled 255 are ignored. One logit per
pixel is trained with binary cross-entropy, K ≥ 2 with softmax cross-entropy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from changecap.engine.objectives.base import LossTerm, Objective, ObjectiveOutput, Phase, StepInfo
from changecap.engine.objectives.filters import pairs_with_mask
from changecap.models.parts.change_masks import IGNORE, binary_change_loss_sum


class ChangeDetectionObjective(Objective):
    """Pixel loss of the change mask on every pair with a mask (module docstring)."""

    _PHASES = (Phase("cd", filter=pairs_with_mask),)

    def phases(self, epoch: int) -> Sequence[Phase]:
        return self._PHASES

    def normalizers(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, float]:
        return {"samples": float(len(batch["image"])), "pixels": float((batch["mask"] != IGNORE).sum())}

    def __call__(self, model: nn.Module, batch: Mapping[str, Any], step: StepInfo) -> ObjectiveOutput:
        with step.autocast():
            logits = model(batch["image"])  # [B, K, S, S]
        total, count = binary_change_loss_sum(logits.float(), batch["mask"])
        return ObjectiveOutput({"cd_loss": LossTerm.mean(total, count, over="pixels")})


#: what ``objective_factory("change_detection")`` finds
OBJECTIVE = ChangeDetectionObjective
