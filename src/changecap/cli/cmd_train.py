"""``changecap train CONFIG.yaml [--set a.b=value ...] [--resume] [--output-dir DIR] [--build-standins]``.

Multi-process: ``torchrun --nproc-per-node N -m changecap train CONFIG.yaml`` (every process runs this command).
A run whose ``<output_dir>/checkpoint/`` exists resumes from it automatically; ``--resume`` makes a missing
checkpoint an error, ``--restart`` ignores (and replaces) an existing one. When ``LATEST`` is missing or names a
damaged checkpoint, the newest readable one is resumed (one warning line); when none is readable, the run is refused
with a one-line error (exit status 2) and the checkpoints are left as they are, until ``--restart``.
``--build-standins`` first pretrains the stand-ins the config names (``standin:FILE``) that are not cached yet.
"""

from __future__ import annotations

import argparse
import os

from changecap.cli.config_args import add_overrides_argument
from changecap.cli.threads import add_threads_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a captioning model from a YAML config",
        description="Train a change captioning model. Resumes automatically from <output_dir>/checkpoint/.",
    )
    p.add_argument("config", help="YAML config (see configs/)")
    add_overrides_argument(p)
    p.add_argument("--output-dir", help="run folder (overrides train.output_dir)")
    p.add_argument(
        "--build-standins",
        action="store_true",
        help="pretrain the stand-ins the config names (standin:FILE) on the data's train split first when they are "
        "not in the cache yet (docs/pretraining.md); one process only",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="resume from <output_dir>/checkpoint/ (required)")
    group.add_argument(
        "--restart", action="store_true", help="start afresh even when a checkpoint exists (it is deleted)"
    )
    add_threads_argument(p, auto_default=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from changecap.engine import load_config, train

    overrides = list(args.overrides)
    config = load_config(args.config, overrides=overrides)
    if args.output_dir:
        config.train.output_dir = str(args.output_dir)
    if args.build_standins:
        from changecap.engine.pretrain import build_standins
        from changecap.errors import ConfigError

        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("--build-standins", "build the stand-ins in one process first, then start torchrun")
        build_standins(config.model, config.data.root, config.source)
    resume = True if args.resume else False if args.restart else None
    result = train(config, resume=resume)
    if int(os.environ.get("RANK", "0")) == 0:
        metric = "n/a" if result.best_metric is None else f"{result.best_metric:.4f}"
        state = "finished" if result.finished else "stopped at train.max_steps"
        print(
            f"{state}: {result.global_step} updates, {result.epochs_completed} epoch(s); "
            f"best val {result.select_metric} {metric} (epoch {result.best_epoch}); model: {result.best_dir}"
        )
    return 0
