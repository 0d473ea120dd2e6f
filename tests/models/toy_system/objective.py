"""The toy system's objective: caption cross-entropy over tokens, change BCE over pairs, mask BCE over pixels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from changecap.engine.objectives import (
    LossTerm,
    Objective,
    ObjectiveOutput,
    Phase,
    StepInfo,
    caption_ce_sum,
    count_target_tokens,
)
from changecap.models.parts.change_masks import IGNORE, binary_change_loss_sum


@dataclass
class ToyLoss:
    change_weight: float = 0.5
    mask_weight: float = 0.5


class ToyObjective(Objective):
    config_class = ToyLoss

    def normalizers(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, float]:
        pixels = float((batch["mask"] != IGNORE).sum()) if "mask" in batch else 0.0
        return {"tokens": float(count_target_tokens(batch["target"])), "samples": float(len(batch["target"])),
                "pixels": pixels}  # fmt: skip

    def __call__(self, model: nn.Module, batch: Mapping[str, Any], step: StepInfo) -> ObjectiveOutput:
        with step.autocast():
            logits, mask_logits, change_logit = model(batch["image"], batch["target"])
        ce_sum, n_tok = caption_ce_sum(logits, batch["target"])
        bce = F.binary_cross_entropy_with_logits(change_logit.float(), batch["changed"].float(), reduction="sum")
        if "mask" in batch:
            mask_sum, pixels = binary_change_loss_sum(mask_logits.float(), batch["mask"])
        else:  # a batch without masks: the term is there (every process logs the same names) and adds nothing
            mask_sum, pixels = mask_logits.sum() * 0.0, torch.zeros(())
        c = self.config
        return ObjectiveOutput({
            "caption_ce": LossTerm.mean(ce_sum, n_tok, over="tokens"),
            "change_bce": LossTerm.mean(bce, float(len(batch["target"])), over="samples", weight=c.change_weight),
            "mask_bce": LossTerm.mean(mask_sum, pixels, over="pixels", weight=c.mask_weight),
        })  # fmt: skip
