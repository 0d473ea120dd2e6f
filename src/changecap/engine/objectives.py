"""The HiSem training objective (hisem.md §6.2, §6.5, §7, §9) and the module DDP wraps.

Per optimiser update the loss is

    L = CE_cap + 0.8 · α(e) · CE_router + L_aux

* ``CE_cap``: cross-entropy of the caption decoder under teacher forcing, predictions at positions 0..len−2 scored
  against tokens 1..len−1 — every real target token including ``<END>``, never ``<START>`` or ``<NULL>`` padding —
  averaged over the target tokens of the whole GLOBAL batch (all processes, all accumulation micro-batches).
* ``CE_router``: cross-entropy of the image-level router logits against the change flag, averaged over the samples
  of the global batch. In the warm-up epochs (e ≤ ``router_warmup_epochs``) it is computed on detached logits:
  logged, no gradient. Afterwards its weight ramps with α(e) = ½(1 − cos(π(e − w)/(E − w))).
* ``L_aux``: the MoE balance loss the model returns, already weighted (α = 0.001), added with ``loss.aux_weight``.

Ground-truth routing: for e ≤ ``gt_routing_until_epoch`` the model is given ``route = changed``; afterwards the
router's argmax routes (``route=None``). A model without a router (plain baseline) returns ``router_logits=None``
and the router terms vanish.

**Scaling for gradient accumulation and DDP.** DDP *averages* gradients over the W processes and accumulation
*sums* them over the k micro-batches. Each micro-batch therefore back-propagates

    W · Σ_tokens CE / N_tokens_global  +  w_r · W · Σ_samples CE_router / N_samples_global  +  w_aux · L_aux / k

so that 1 process × k micro-batches and k processes × 1 micro-batch produce the same gradient: the caption and
router terms are exact global means. ``L_aux`` is defined by the model as a mean over the changed samples of ONE
forward pass, so it cannot be re-normalised per token; it is averaged over the W·k micro-batches (÷k here, ÷W by
DDP), which equals the paper's per-batch value when W·k = 1 and is the same for any W·k split of a global batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from changecap.data.vocab import NULL_ID
from changecap.engine.config import TrainConfig
from changecap.engine.precision import autocast


# ---------------------------------------------------------------------------------------------------------- schedules
def router_ramp(epoch: int, warmup_epochs: int, total_epochs: int) -> float:
    """Cosine ramp α(e) = ½(1 − cos(π(e − w)/(E − w))) for e > w, 0 for e ≤ w (hisem.md §9).

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


def plan_epoch(config: TrainConfig, epoch: int) -> EpochPlan:
    """The loss schedule of ``epoch`` (0-indexed) for a run of ``config.train.epochs`` epochs."""
    lo = config.loss
    detached = epoch <= lo.router_warmup_epochs
    alpha = router_ramp(epoch, lo.router_warmup_epochs, config.train.epochs)
    return EpochPlan(
        epoch=epoch,
        gt_routing=epoch <= config.gt_routing_last_epoch(),
        router_detached=detached,
        router_alpha=alpha,
        router_weight=0.0 if detached else lo.router_weight * alpha,
        aux_weight=lo.aux_weight,
    )


# ---------------------------------------------------------------------------------------------------------- terms
@dataclass(frozen=True)
class GlobalCounts:
    """Normalisers of one optimiser update, summed over every process and micro-batch (see module docstring)."""

    tokens: float  # target tokens of the global batch
    samples: float  # samples of the global batch
    world_size: int
    grad_accum: int


@dataclass
class LossTerms:
    """One micro-batch's contribution. ``loss`` carries the gradient; the rest are detached sums for logging."""

    loss: torch.Tensor
    caption_ce_sum: torch.Tensor  # Σ CE over this micro-batch's target tokens
    tokens: torch.Tensor  # number of those tokens
    router_ce_sum: torch.Tensor  # Σ CE_router over the samples (0 without a router)
    router_correct: torch.Tensor  # samples whose router argmax equals the change flag
    samples: torch.Tensor
    aux: torch.Tensor  # L_aux as returned by the model (already α-weighted)


def caption_targets(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align teacher-forcing logits with the tokens they predict.

    ``logits`` are ``[B, T, V]`` for input ``target [B, T]`` (a model may also return ``[B, T-1, V]``, having
    dropped the useless last position). Returns ``(logits [B, T-1, V], labels [B, T-1])``; labels of padding
    positions are ``<NULL>`` and are masked out by the caller.
    """
    t = target.shape[1]
    if logits.shape[1] == t:
        logits = logits[:, :-1]  # [B, T-1, V]: the prediction after the last token has no target
    elif logits.shape[1] != t - 1:
        raise ValueError(f"logits cover {logits.shape[1]} positions for targets of length {t}")
    return logits, target[:, 1:]  # [B, T-1]


def caption_ce_sum(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of token cross-entropies over real target tokens (incl. ``<END>``, excl. ``<START>``/``<NULL>``).

    Computed in fp32 whatever the autocast dtype. Returns ``(sum, count)``, both 0-dim.
    """
    logits, labels = caption_targets(logits, target)
    mask = labels != NULL_ID  # [B, T-1]: <START> never appears after position 0, <NULL> pads after <END>
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
    ce = ce.view_as(labels)  # [B, T-1]
    return (ce * mask).sum(), mask.sum()


class HisemObjective:
    """Turns a model output into the scaled micro-batch loss (module docstring explains the scaling)."""

    def __call__(
        self, output: Any, target: torch.Tensor, changed: torch.Tensor, plan: EpochPlan, counts: GlobalCounts
    ) -> LossTerms:
        ce_sum, n_tok = caption_ce_sum(output.logits, target)
        loss = ce_sum * (counts.world_size / counts.tokens)
        device = ce_sum.device
        router_logits = getattr(output, "router_logits", None)
        if router_logits is not None:
            labels = changed.long()
            z = router_logits.float()  # [B, 2]
            if plan.router_detached:
                z = z.detach()  # warm-up: logged only; the router receives no gradient from L_cls
            r_sum = F.cross_entropy(z, labels, reduction="sum")
            if not plan.router_detached and plan.router_weight > 0:
                loss = loss + r_sum * (plan.router_weight * counts.world_size / counts.samples)
            r_correct = (z.detach().argmax(dim=-1) == labels).sum()
        else:
            r_sum = torch.zeros((), device=device)
            r_correct = torch.zeros((), device=device, dtype=torch.long)
        aux = getattr(output, "aux_loss", None)
        if aux is None:
            aux = torch.zeros((), device=device)
        aux = aux.float()
        if plan.aux_weight > 0 and aux.requires_grad:
            loss = loss + aux * (plan.aux_weight / counts.grad_accum)
        return LossTerms(
            loss=loss,
            caption_ce_sum=ce_sum.detach(),
            tokens=n_tok.detach(),
            router_ce_sum=r_sum.detach(),
            router_correct=r_correct.detach(),
            samples=torch.tensor(float(target.shape[0]), device=device),
            aux=aux.detach(),
        )


class TrainingStep(nn.Module):
    """The module that DDP wraps: model forward + objective, returning :class:`LossTerms`.

    The loss is computed *inside* the wrapped forward on purpose. With ``find_unused_parameters=True`` DDP walks
    the autograd graph from the forward's outputs to find the parameters that will receive no gradient. If the
    raw model output were returned, the router logits would be reachable even in warm-up epochs, where only their
    detached copy enters the loss: DDP would then wait forever for the router's gradient. Returning the loss and
    detached statistics makes the graph DDP sees exactly the graph that is back-propagated.
    """

    def __init__(self, model: nn.Module, objective: HisemObjective | None = None) -> None:
        super().__init__()
        self.model = model
        self.objective = objective or HisemObjective()

    def forward(
        self,
        image: torch.Tensor,
        target: torch.Tensor,
        changed: torch.Tensor,
        plan: EpochPlan,
        counts: GlobalCounts,
        autocast_dtype: torch.dtype | None = None,
    ) -> LossTerms:
        route = changed.long() if plan.gt_routing else None  # [B]: 1 = changed path, 0 = unchanged path
        with autocast(image.device, autocast_dtype):
            output = self.model(image, target, route=route)
        return self.objective(output, target, changed, plan, counts)
