"""``changecap data check``: validate a dataset on disk and print its statistics."""

from __future__ import annotations

import argparse
import json
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
        value = getattr(args, name, None)
        return Path(value) if value else None

    return Layout(
        annotation=opt("annotation"),
        image_root=opt("image_root"),
        captions_dir=opt("captions_dir"),
        before_dir=opt("before_dir"),
        after_dir=opt("after_dir"),
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset tools (check)", description="Dataset tools.")
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
