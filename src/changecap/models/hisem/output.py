"""Output container of every changecap captioner's forward pass (the model contract in ``docs/architecture.md``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CaptionModelOutput:
    """What ``model(image, tokens)`` returns.

    A dataclass rather than a tuple so that the trainer reads fields by name and a fusion without a router (the plain
    baseline) can leave ``router_logits`` empty without shifting positions.
    """

    logits: torch.Tensor  # [B, T, V] teacher-forced next-token scores
    router_logits: torch.Tensor | None  # [B, 2] image-level change router (class 1 = changed), None without a router
    aux_loss: torch.Tensor  # 0-dim, already weighted; add to the total loss with weight 1 (0 without MoE / in eval)
