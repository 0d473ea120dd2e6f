"""Learning-rate schedules as a multiplier of each group's base lr, stepped once per optimiser update.

The multiplier is a pure function of the update index, so the scheduler's state is just its step counter and a
resumed run continues the same curve. The schedule always spans the full run (``epochs × steps_per_epoch``),
independent of ``train.max_steps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from changecap.engine.config import ScheduleConfig


def lr_multiplier(config: ScheduleConfig, total_steps: int) -> Callable[[int], float]:
    """``step → factor``: linear warm-up over ``warmup_steps`` updates, then constant / cosine / step decay."""
    warmup = config.warmup_steps

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup  # the first update already uses 1/warmup, never 0
        if config.name == "constant":
            return 1.0
        if config.name == "step":
            return config.gamma ** ((step - warmup) // config.step_size)
        # cosine from 1 at the end of warm-up to min_lr_ratio at the last update
        span = max(1, total_steps - warmup - 1)
        progress = min(1.0, (step - warmup) / span)
        return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, config: ScheduleConfig, total_steps: int) -> LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_multiplier` to every parameter group."""
    return LambdaLR(optimizer, lr_lambda=lr_multiplier(config, total_steps))
