"""The HiSem training objective (``docs/hisem.md``): the only place the engine knows about HiSem.

Per optimiser update the loss is

    L = CE_cap + 0.8 · α(e) · CE_router + L_aux

* ``CE_cap``: cross-entropy of the caption decoder under teacher forcing, predictions at positions 0..len−2 scored
  against tokens 1..len−1 — every real target token including ``<END>``, never ``<START>`` or ``<NULL>`` padding —
  averaged over the target tokens of the whole GLOBAL batch (all processes, all accumulation micro-batches).
* ``CE_router``: cross-entropy of the image-level router logits against the change flag (``batch["changed"]``),
  averaged over the samples of the global batch. In the warm-up epochs (e ≤ ``router_warmup_epochs``) it is computed
  on detached logits: logged, no gradient. Afterwards its weight ramps with α(e) = ½(1 − cos(π(e − w)/(E − w))).
* ``L_aux``: the MoE balance loss the model returns, already weighted (α = 0.001), added with ``loss.aux_weight``.

Ground-truth routing: for e ≤ ``gt_routing_until_epoch`` the model is given ``route = changed``; afterwards the
router's argmax routes (``route=None``). A model without a router (plain baseline) returns ``router_logits=None``
and the router terms vanish.

The terms are returned unscaled (``caption_ce`` a mean over the ``tokens`` normaliser, ``router_ce`` over
``samples``, ``aux`` per forward pass) and ``base.py`` scales them for accumulation and DDP: the caption and router
terms become exact global means; ``L_aux`` is defined by the model as a mean over the changed samples of ONE forward
pass, so it is averaged over the W·k micro-batches, which equals the paper's per-batch value when W·k = 1 and is the
same for any W·k split of a global batch. One phase per epoch over the whole training set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from changecap.engine.objectives.base import (
    LossTerm,
    Objective,
    ObjectiveOutput,
    Phase,
    StepInfo,
    caption_ce_sum,
    count_target_tokens,
)
from changecap.schema import require


@dataclass
class HisemLossConfig:
    """The ``loss`` section of a HiSem (or plain baseline) run. Epochs are 0-indexed.

    ``gt_routing_until_epoch``: an integer is the last epoch (inclusive) routed by the ground-truth change flag
    (paper: 40 of 50); a float in [0, 1] is a fraction of the run, resolved as ``round(f · epochs)`` (0.8 of 50 →
    40); ``-1`` never routes by ground truth.
    """

    router_weight: float = 0.8
    router_warmup_epochs: int = 3
    gt_routing_until_epoch: int | float = 40
    aux_weight: float = 1.0

    def validate(self, prefix: str = "loss") -> None:
        require(self.router_weight >= 0, f"{prefix}.router_weight", f"must be >= 0, got {self.router_weight}")
        require(self.aux_weight >= 0, f"{prefix}.aux_weight", f"must be >= 0, got {self.aux_weight}")
        require(self.router_warmup_epochs >= -1, f"{prefix}.router_warmup_epochs", "must be >= -1 (-1: no warm-up)")
        g = self.gt_routing_until_epoch
        if isinstance(g, float):
            message = f"a float is a fraction of the run in [0, 1], got {g}"
            require(0.0 <= g <= 1.0, f"{prefix}.gt_routing_until_epoch", message)
        else:
            require(g >= -1, f"{prefix}.gt_routing_until_epoch", f"must be an epoch >= -1 (-1: never), got {g}")

    def gt_routing_last_epoch(self, epochs: int) -> int:
        """Last epoch (0-indexed, inclusive) routed by the ground-truth flag in a run of ``epochs``; -1 when never."""
        g = self.gt_routing_until_epoch
        if isinstance(g, float):
            # A fraction f of the run → epoch round(f·E): 0.8 of 50 epochs is 40, the paper's setting (e ≤ 40).
            return int(round(g * epochs))
        return int(g)


# ---------------------------------------------------------------------------------------------------------- schedules
def router_ramp(epoch: int, warmup_epochs: int, total_epochs: int) -> float:
    """Cosine ramp α(e) = ½(1 − cos(π(e − w)/(E − w))) for e > w, 0 for e ≤ w (the official training loop's).

    For E = 50, w = 3: α(4) = 0.0011, α(26) = 0.483, α(49) = 0.9989.
    """
    if epoch <= warmup_epochs:
        return 0.0
    span = total_epochs - warmup_epochs
    if span <= 0:
        return 1.0
    return 0.5 * (1.0 - math.cos(math.pi * (epoch - warmup_epochs) / span))


@dataclass(frozen=True)
class EpochPlan:
    """What the objective does in one epoch: routing source and router-loss weight."""

    epoch: int
    gt_routing: bool  # route by the ground-truth change flag (else by the router's argmax)
    router_detached: bool  # warm-up: the router loss is logged but has no gradient
    router_alpha: float  # α(e) of the cosine ramp (0 in warm-up)
    router_weight: float  # effective weight of CE_router in the loss (router_weight · α(e); 0 in warm-up)
    aux_weight: float


def plan_epoch(loss: HisemLossConfig, epochs: int, epoch: int) -> EpochPlan:
    """The loss schedule of ``epoch`` (0-indexed) for a run of ``epochs`` epochs."""
    detached = epoch <= loss.router_warmup_epochs
    alpha = router_ramp(epoch, loss.router_warmup_epochs, epochs)
    return EpochPlan(
        epoch=epoch,
        gt_routing=epoch <= loss.gt_routing_last_epoch(epochs),
        router_detached=detached,
        router_alpha=alpha,
        router_weight=0.0 if detached else loss.router_weight * alpha,
        aux_weight=loss.aux_weight,
    )


# ---------------------------------------------------------------------------------------------------------- objective
class HisemObjective(Objective):
    """Caption CE + scheduled router CE + MoE balance loss, with ground-truth routing early in the run.

    ``epochs`` (the run length, for the ramp and a fractional ``gt_routing_until_epoch``) comes from the train
    config's ``train.epochs``; without a train config it must be given.
    """

    config_class = HisemLossConfig

    def __init__(self, config: HisemLossConfig | None = None, train_config: Any = None, epochs: int | None = None):
        super().__init__(config or HisemLossConfig(), train_config)
        if epochs is None:
            epochs = int(train_config.train.epochs) if train_config is not None else 50
        self.epochs = epochs

    def plan(self, epoch: int) -> EpochPlan:
        return plan_epoch(self.config, self.epochs, epoch)

    def phases(self, epoch: int) -> Sequence[Phase]:
        return (Phase(name="caption", options={"plan": self.plan(epoch)}),)

    def normalizers(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, float]:
        return {"tokens": float(count_target_tokens(batch["target"])), "samples": float(len(batch["target"]))}

    def __call__(self, model: nn.Module, batch: Mapping[str, Any], step: StepInfo) -> ObjectiveOutput:
        plan: EpochPlan = step.phase.options.get("plan") or self.plan(step.epoch)
        image, target, changed = batch["image"], batch["target"], batch["changed"]
        route = changed.long() if plan.gt_routing else None  # [B]: 1 = changed path, 0 = unchanged path
        with step.autocast():
            output = model(image, target, route=route)
        return self.terms(output, target, changed, plan)

    def terms(self, output: Any, target: torch.Tensor, changed: torch.Tensor, plan: EpochPlan) -> ObjectiveOutput:
        """The named, unscaled loss terms of a model output (``base.py`` scales, sums and logs them)."""
        ce_sum, n_tok = caption_ce_sum(output.logits, target)
        device = ce_sum.device
        samples = torch.tensor(float(target.shape[0]), device=device)
        router_logits = output.router_logits  # CaptionModelOutput: None for a fusion without a router (plain)
        if router_logits is not None:
            labels = changed.long()
            z = router_logits.float()  # [B, 2]
            if plan.router_detached:
                z = z.detach()  # warm-up: logged only; the router receives no gradient from L_cls
            r_sum = F.cross_entropy(z, labels, reduction="sum")
            r_correct = (z.detach().argmax(dim=-1) == labels).sum()
        else:
            r_sum = torch.zeros((), device=device)
            r_correct = torch.zeros((), device=device, dtype=torch.long)
        aux = output.aux_loss  # 0-dim, zero without MoE
        return ObjectiveOutput(
            terms={
                "caption_ce": LossTerm.mean(ce_sum, n_tok, over="tokens"),
                "router_ce": LossTerm.mean(r_sum, samples, over="samples", weight=plan.router_weight),
                "aux": LossTerm.per_pass(aux.float(), weight=plan.aux_weight),
            },
            stats={"router_acc": (r_correct.detach(), samples)},
        )

    def log_values(self, means: Mapping[str, float], step: StepInfo) -> dict[str, Any]:
        plan: EpochPlan = step.phase.options.get("plan") or self.plan(step.epoch)
        return {**means, "router_weight": plan.router_weight, "gt_routing": plan.gt_routing}


#: what ``objective_factory("hisem")`` finds
OBJECTIVE = HisemObjective
