"""One optimiser update, and the statistics window between two log lines.

An update (the DDP contract, in plain sight):

1. count the objective's normalisers over this process's ``grad_accum`` micro-batches and all-reduce them, so
   every process knows the global batch's totals (``objectives/base.py`` explains why);
2. forward + backward each micro-batch through the module DDP wraps, under ``no_sync()`` for all but the last so
   DDP all-reduces the summed gradients once;
3. drop the gradients of parameters that do not train in this phase, clip (optional), ``optimizer.step()``,
   ``scheduler.step()``.

Statistics stay on the device between log lines (no host sync per update); the window is all-reduced only when a
line is written, which every process does at the same update.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from changecap.engine.distributed import DistContext, all_reduce_sum
from changecap.engine.objectives.base import GlobalCounts, Objective, Phase, StepInfo, StepLoss


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors of a collated batch moved to ``device``; lists (names, captions) as they are."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def set_phase_trainable(
    model: nn.Module, base: set[int], phase: Phase, groups: Mapping[str, list[nn.Parameter]]
) -> list[nn.Parameter]:
    """Let exactly the phase's parameters require gradients; return the ones frozen for this phase.

    ``base`` holds the ids of the parameters that are trainable at all (``requires_grad`` when the model was built);
    a phase can only narrow that set, by module prefix (``phase.trainable``) and by optimiser group (``phase.groups``).
    """
    allowed = set(base)
    if phase.trainable is not None:
        prefixes = tuple(phase.trainable)
        inside = {id(p) for name, p in model.named_parameters() if any(_under(name, q) for q in prefixes)}
        allowed &= inside
    if phase.groups is not None:
        allowed &= {id(p) for g in phase.groups for p in groups.get(g, ())}
    frozen = []
    for p in model.parameters():
        if id(p) in base:
            p.requires_grad_(id(p) in allowed)
            if id(p) not in allowed:
                frozen.append(p)
    return frozen


def _under(name: str, prefix: str) -> bool:
    """``fusion.bdam.0.weight`` is under ``fusion`` and ``fusion.bdam``, not under ``fus``."""
    return name == prefix or name.startswith(prefix + ".")


class StatsWindow:
    """Sums of the objective's named statistics ``(sum, count)`` since the last log line, on the device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}  # name → float64 [2] (sum, count)
        self.counts: dict[str, float] = {}  # normaliser name → total since the last line (throughput)
        self.weights: dict[str, float] = {}  # loss term → its weight (constant within a phase), in summation order

    def add(self, step: StepLoss) -> None:
        self.weights.update(step.weights)
        for name, (total, count) in step.stats.items():
            pair = torch.stack([total.detach().double(), torch.as_tensor(count, device=self.device).double()])
            if name in self.sums:
                self.sums[name] += pair
            else:
                self.sums[name] = pair

    def add_counts(self, counts: GlobalCounts) -> None:
        for name, value in counts.totals.items():
            self.counts[name] = self.counts.get(name, 0.0) + float(value)

    def means(self, ctx: DistContext) -> dict[str, float]:
        """All-reduce (collective: every process calls it at the same update) → ``{name: sum / count}``."""
        if not self.sums:
            return {}
        names = sorted(self.sums)
        reduced = all_reduce_sum(torch.stack([self.sums[n] for n in names]), ctx).cpu().tolist()  # [K, 2]
        return {n: total / max(count, 1.0) for n, (total, count) in zip(names, reduced)}

    def reset(self) -> None:
        self.sums.clear()
        self.counts.clear()
        self.weights.clear()


class UpdateStep:
    """Runs one optimiser update (module docstring) and feeds the statistics window."""

    def __init__(
        self,
        step_module: nn.Module,
        model: nn.Module,
        objective: Objective,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        ctx: DistContext,
        grad_clip: float | None,
        autocast_dtype: torch.dtype | None,
        window: StatsWindow,
    ) -> None:
        self.step_module = step_module
        self.model = model
        self.objective = objective
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.ctx = ctx
        self.grad_clip = grad_clip
        self.autocast_dtype = autocast_dtype
        self.window = window

    def global_counts(self, micro_batches: list[dict[str, Any]], phase: Phase, grad_accum: int) -> GlobalCounts:
        """Step 1: the objective's normalisers summed over micro-batches and processes (one all-reduce)."""
        local: dict[str, float] = {}
        for batch in micro_batches:
            for name, value in self.objective.normalizers(batch, phase).items():
                local[name] = local.get(name, 0.0) + float(value)
        names = list(local)
        values = torch.tensor([local[n] for n in names], dtype=torch.float64, device=self.ctx.device)
        totals = all_reduce_sum(values, self.ctx).tolist() if names else []
        return GlobalCounts(dict(zip(names, totals)), self.ctx.world_size, grad_accum)

    def __call__(
        self, micro_batches: list[dict[str, Any]], epoch: int, phase: Phase, frozen: Iterable[nn.Parameter] = ()
    ) -> None:
        counts = self.global_counts(micro_batches, phase, len(micro_batches))
        info = StepInfo(epoch, phase, counts, self.ctx.device, self.autocast_dtype)
        for j, batch in enumerate(micro_batches):
            last = j == len(micro_batches) - 1
            # Accumulate locally; DDP all-reduces the summed gradients once, in the last backward.
            sync = contextlib.nullcontext() if last or not self.ctx.distributed else self.step_module.no_sync()
            with sync:
                out = self.step_module(to_device(batch, self.ctx.device), info)
                out.loss.backward()
            self.window.add(out)
        for p in frozen:
            p.grad = None  # not this phase's parameter: the optimiser must not move it (nor its moments)
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.window.add_counts(counts)
