"""``changecap vocab``: build a peers'-format ``vocab.json`` from a dataset's captions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from changecap.cli.cmd_data import FORMATS, add_layout_arguments, layout_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "vocab",
        help="build vocab.json from a dataset's captions",
        description=(
            "Count the RSICC-tokenised words of the chosen splits and keep those above the threshold; ids follow the "
            "peers' convention (<NULL> 0, <UNK> 1, <START> 2, <END> 3, then alphabetical). '--splits all' "
            "reproduces the published vocabularies (LEVIR-CC: 468 entries with count > 5, 501 with >= 5); "
            "'--splits train' is leak-free."
        ),
    )
    p.add_argument("--root", required=True, help="dataset root folder")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="output vocab.json")
    p.add_argument("--threshold", type=int, default=None, help="count threshold (default 5; dubai-cc 0)")
    p.add_argument("--rule", choices=("gt", "ge"), default="gt", help="keep count > threshold (gt) or >= (ge)")
    p.add_argument("--splits", choices=("train", "all"), default="train", help="captions counted (default train)")
    p.add_argument("--lower", action="store_true", help="lower-case captions first")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    add_layout_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from changecap.data.datasets import CONVENTIONS, build_vocabulary
    from changecap.data.files import check_output_file

    check_output_file(args.out, "--out")  # before the captions are read
    threshold = CONVENTIONS[args.format].vocab_threshold if args.threshold is None else args.threshold
    vocab = build_vocabulary(
        Path(args.root),
        args.format,
        splits=args.splits,
        threshold=threshold,
        rule=args.rule,
        lower=args.lower,
        layout=layout_from_args(args),
    )
    vocab.save(args.out)
    summary = {
        "out": str(args.out),
        "entries": len(vocab),
        "splits": args.splits,
        "threshold": threshold,
        "rule": args.rule,
        "lower": args.lower,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        op = ">" if args.rule == "gt" else ">="
        print(f"wrote {args.out}: {len(vocab)} entries (splits={args.splits}, count {op} {threshold})")
    return 0
