"""``changecap pretrain TARGET CONFIG.yaml [--set a.b=value ...] [--split train] [--output-dir DIR] [--overwrite]``.

Pretrains a foundation (``clip``, ``sam``, ``qformer``, ``lm``) on the train split of single-date data and writes a
directory the systems load where the real weights would go. Multi-process:
``torchrun --nproc-per-node N -m changecap pretrain TARGET CONFIG.yaml`` (every process runs this command).
"""

from __future__ import annotations

import argparse
import json
import os

from changecap.cli.config_args import add_overrides_argument
from changecap.cli.threads import add_threads_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain a foundation (CLIP, SAM, Q-Former, LM) on single-date training data",
        description="Pretrain a foundation model on the train split of single-date images, captions and land-cover "
        "maps (SynthCC or your own folder) and write it where a system config loads real weights from. "
        "See docs/pretraining.md.",
    )
    # checked by the target registry (models/foundations/target.py), which the parser does not import: it stays fast
    p.add_argument("target", metavar="TARGET", help="what to pretrain: clip, sam, qformer or lm")
    p.add_argument("config", help="YAML config (see configs/pretrain/)")
    add_overrides_argument(p)
    p.add_argument("--split", help="the split to read (only 'train' is accepted: pretraining never reads val/test)")
    p.add_argument("--output-dir", help="directory to write (overrides train.output_dir)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    add_threads_argument(p, auto_default=False)  # as train: a long run outlives the load it starts under
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from changecap.engine.pretrain import pretrain
    from changecap.engine.pretrain_config import load_pretrain_config

    overrides = list(args.overrides)
    if args.split is not None:
        overrides.append(f"data.split={json.dumps(args.split)}")
    if args.output_dir:
        overrides.append(f"train.output_dir={json.dumps(str(args.output_dir))}")  # quoted: YAML reads it as text
    config = load_pretrain_config(args.config, overrides=overrides)
    result = pretrain(args.target, config, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        losses = ", ".join(f"{k} {v:.4f}" for k, v in result.final_losses.items())
        held = "" if not result.held_out else "; held-out " + ", ".join(
            f"{k} {v:.4g}" for k, v in result.held_out.items()
        )
        print(
            f"pretrained {result.target}: {result.updates} updates, {result.epochs_completed} epoch(s) in "
            f"{result.seconds:.0f} s; last epoch {losses}{held}; wrote {result.output_dir}"
        )
    return 0
