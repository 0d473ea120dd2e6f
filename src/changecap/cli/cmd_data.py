"""``changecap data check`` (validate a dataset on disk and print its statistics) and ``changecap data import``
(the user's own pairs and captions → a dataset in the LEVIR-CC layout)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from changecap.data.annotations import Layout

# Same as changecap.data.annotations.FORMATS (tested); literal so that building the parser does not import torch.
FORMATS: tuple[str, ...] = ("levir-cc", "levir-mci", "whu-cdc", "dubai-cc", "tokens", "levir-cd", "second-cc")


def add_layout_arguments(p: argparse.ArgumentParser) -> None:
    """Options overriding where a dataset's files are (shared by the data commands)."""
    g = p.add_argument_group("layout overrides (default: discovered under --root)")
    g.add_argument(
        "--annotation",
        help="captions JSON of levir-cc / levir-mci / whu-cdc (LevirCCcaptions.json), second-cc (SECOND-CC-AUG.json)",
    )
    g.add_argument(
        "--image-root",
        help="folder holding {split}/{A,B,label}/ (default ROOT/images; second-cc: {split}/rgb/, sem/, default ROOT)",
    )
    g.add_argument("--captions-dir", help="dubai-cc: folder of Train_*/Validation_*/Test_* JSON files")
    g.add_argument("--before-dir", help="dubai-cc: before images (default: the 500_2000 folder under ROOT)")
    g.add_argument("--after-dir", help="dubai-cc: after images (default: the 500_2010 folder under ROOT)")


def layout_from_args(args: argparse.Namespace) -> Layout:
    """The ``Layout`` described by the override options (unset ones stay None)."""
    from changecap.data.annotations import Layout

    def opt(name: str) -> Path | None:
        value = getattr(args, name, None)  # a layout option of the sub-command, when it has that option
        return Path(value) if value else None

    return Layout(
        annotation=opt("annotation"),
        image_root=opt("image_root"),
        captions_dir=opt("captions_dir"),
        before_dir=opt("before_dir"),
        after_dir=opt("after_dir"),
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset tools (check, import)", description="Dataset tools.")
    p.set_defaults(func=lambda args: _help(p))
    data_sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    c = data_sub.add_parser(
        "check",
        help="validate a dataset and print its statistics",
        description=(
            "Check that every annotation field and file of a dataset is valid (image headers by default, full "
            "decode and mask values with --deep) and print pairs per split, changed share, captions per pair, "
            "caption length and vocabulary size. Exit status 2 with a one-line error on the first problem."
        ),
    )
    c.add_argument("--root", required=True, help="dataset root folder")
    c.add_argument("--format", required=True, choices=FORMATS)
    c.add_argument("--deep", action="store_true", help="decode every image and check every mask value")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    add_layout_arguments(c)
    c.set_defaults(func=run_check)
    i = data_sub.add_parser(
        "import",
        help="turn your own pairs and captions into a dataset (LEVIR-CC layout)",
        description=(
            "Build a dataset in the LEVIR-CC layout (LevirCCcaptions.json with changeflag, "
            "images/{split}/{A,B,label}/) from a folder of pairs (A/, B/) or a CSV of before,after paths, a captions "
            "sheet (CSV name,caption rows with optional split and changed columns, or JSON Lines {name, captions, "
            "split?, changed?}) and optional masks. Every input is checked first: each bad row or pair is one error "
            "line naming the file, row and field, and nothing is written unless all are clean (or --skip-bad). The "
            "output folder appears atomically (built beside it, renamed at the end); PNG files are hard-linked "
            "when possible."
        ),
    )
    i.add_argument("--pairs", required=True, metavar="DIR_OR_CSV", help="folder with A/ and B/, or a before,after CSV")
    i.add_argument("--captions", required=True, metavar="FILE", help="captions: .csv (name,caption[,split][,changed]) "
                   "or .jsonl ({name, captions, split?, changed?} per line)")  # fmt: skip
    i.add_argument("--masks", metavar="DIR", help="change masks named like the pairs (0/128/255 or 0/1)")
    i.add_argument("--split-ratios", metavar="TRAIN,VAL,TEST", default=None,
                   help="split shares when the captions have no split column (default 0.7,0.1,0.2)")  # fmt: skip
    i.add_argument("--seed", type=int, default=0, help="seed of the ratio split (default 0; same seed, same split)")
    i.add_argument("--out", required=True, metavar="DIR", help="new dataset folder (must not exist, or be empty)")
    i.add_argument("--tile", type=int, default=None, metavar="N",
                   help="cut each (Geo)TIFF pair into N×N tiles r{row}_c{col} (bounds in tiles.json)")  # fmt: skip
    i.add_argument("--skip-bad", action="store_true", help="leave out bad rows and pairs (listed) instead of failing")
    i.add_argument("--copy", action="store_true", help="copy PNG files instead of hard-linking them")
    i.add_argument("--lower", action="store_true", help="lower-case the captions")
    i.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    i.set_defaults(func=run_import)


def _help(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 1


def run_check(args: argparse.Namespace) -> int:
    from changecap.data.check import check_dataset

    report = check_dataset(
        Path(args.root),
        args.format,
        deep=args.deep,
        layout=layout_from_args(args),
        progress=False if args.no_progress or args.json else None,
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_text())
    return 0


def run_import(args: argparse.Namespace) -> int:
    from changecap.data.importer import ImportRejected, import_dataset

    try:
        report = import_dataset(
            args.pairs,
            args.captions,
            args.out,
            masks=args.masks,
            split_ratios=args.split_ratios,
            seed=args.seed,
            tile=args.tile,
            skip_bad=args.skip_bad,
            link=not args.copy,
            lower=args.lower,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    except ImportRejected as e:
        for line in e.problems:
            print(f"error: {line}", file=sys.stderr)
        print(f"error: {len(e.problems)} problem(s); nothing written (--skip-bad imports the rest)", file=sys.stderr)
        return 2
    for line in report.skipped:
        print(f"skipped: {line}", file=sys.stderr)
    print(report.format_text())
    return 0
