"""Resuming a run from its checkpoint: weights, optimiser, scheduler, progress, this process's random streams.

Exactness depends on everything being restored, so the checks that would make a resume silently different are
here too: a mid-epoch checkpoint needs the same global batch (the position in the epoch is counted in updates),
and a different number of processes restarts the random streams (said once on rank 0, not hidden).
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from changecap.engine.checkpoint import STATE_FILE, Checkpoint, TrainProgress, load_weights, restore_rng_state
from changecap.engine.config import TrainConfig
from changecap.engine.distributed import DistContext
from changecap.errors import ConfigError, ModelError, first_line

# Config fields whose change between an interrupted run and its resumption does not alter the computation.
RESUME_NEUTRAL = (
    "data.num_workers",
    "train.max_steps",
    "train.output_dir",
    "train.checkpoint_every_steps",
    "train.val_batch_size",
    "logging.",
)


def restore_training(
    ckpt: Checkpoint,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ctx: DistContext,
    config: TrainConfig,
    source: str | None = None,
) -> TrainProgress:
    """Load a checkpoint into the run's objects and return the progress to continue from."""
    t = config.train
    old = ckpt.config.get("train", {})
    if ckpt.progress.step_in_epoch and old.get("batch_size") != t.batch_size:
        raise ConfigError(
            "train.batch_size",
            f"is {t.batch_size} but the checkpoint {ckpt.path} was written mid-epoch with {old.get('batch_size')}",
            path=source,
        )
    if ckpt.note and ctx.is_main:
        print(f"warning: {ckpt.note}", file=sys.stderr)
    load_weights(model, ckpt.weights, ctx.device)
    state_file = ckpt.path / STATE_FILE
    try:
        optimizer.load_state_dict(ckpt.optimizer)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise ModelError(f"{state_file}: optimiser state does not fit the model ({first_line(e)[:200]})") from None
    try:
        scheduler.load_state_dict(ckpt.scheduler)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelError(f"{state_file}: damaged scheduler state ({type(e).__name__}: {first_line(e)[:200]})") from None
    progress = ckpt.progress
    if ctx.rank < len(ckpt.rng) and len(ckpt.rng) == ctx.world_size:
        try:
            restore_rng_state(ckpt.rng[ctx.rank])
        except (ValueError, KeyError, TypeError, RuntimeError, AttributeError) as e:
            reason = f"{type(e).__name__}: {first_line(e)[:200]}"
            raise ModelError(f"{state_file}: damaged random-generator state ({reason})") from None
    elif ctx.is_main:
        print(
            f"warning: checkpoint written by {len(ckpt.rng)} process(es), resuming with {ctx.world_size}: "
            "random streams restart from the seed (the run is no longer bit-identical)",
            file=sys.stderr,
        )
    if ctx.is_main:
        print(
            f"resuming from {ckpt.path} (update {progress.global_step}, epoch {progress.epoch}, "
            f"{progress.step_in_epoch} update(s) into it)",
            file=sys.stderr,
        )
        changed = changed_fields(config.to_dict(), ckpt.config)
        if changed:
            print(f"warning: resuming with changed config fields: {', '.join(changed)}", file=sys.stderr)
    return progress


def changed_fields(now: dict[str, Any], before: dict[str, Any]) -> list[str]:
    """Dotted config fields that differ between two configs, ignoring those that do not alter the computation."""
    a, b = _flatten(now), _flatten(before)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(RESUME_NEUTRAL))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
