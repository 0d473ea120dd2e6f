"""LR multipliers: warm-up, constant, cosine to min_lr_ratio, step decay; per-group base lrs are kept."""

from __future__ import annotations

import math

import pytest
import torch

from changecap.engine.config import ScheduleConfig
from changecap.engine.lr_schedule import build_scheduler, lr_multiplier


def test_constant_with_warmup() -> None:
    f = lr_multiplier(ScheduleConfig(name="constant", warmup_steps=4), total_steps=100)
    assert [f(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_reaches_min_ratio_at_the_last_update() -> None:
    f = lr_multiplier(ScheduleConfig(name="cosine", warmup_steps=10, min_lr_ratio=0.1), total_steps=110)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 50 / 99)))
    assert f(109) == pytest.approx(0.1)
    values = [f(s) for s in range(10, 110)]
    assert values == sorted(values, reverse=True)


def test_step_decay_and_param_groups() -> None:
    f = lr_multiplier(ScheduleConfig(name="step", step_size=3, gamma=0.5), total_steps=10)
    assert [f(s) for s in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    w1, w2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [w1], "lr": 1e-3}, {"params": [w2], "lr": 1e-2}])
    sched = build_scheduler(opt, ScheduleConfig(name="step", step_size=1, gamma=0.1), total_steps=5)
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4, 1e-3])
