"""``changecap data check``: validate a dataset on disk and print its statistics; ``changecap data pack``: decode
its images once into memory-mapped arrays that training reads instead of the image files (``data.packed``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from changecap.data.annotations import Layout

# Same as changecap.data.annotations.FORMATS (tested); literal so that building the parser does not import torch.
FORMATS: tuple[str, ...] = ("levir-cc", "levir-mci", "whu-cdc", "dubai-cc", "tokens", "levir-cd")


def add_layout_arguments(p: argparse.ArgumentParser) -> None:
    """Options overriding where a dataset's files are (shared by the data commands)."""
    g = p.add_argument_group("layout overrides (default: discovered under --root)")
    g.add_argument("--annotation", help="captions JSON of levir-cc / levir-mci / whu-cdc (LevirCCcaptions.json)")
    g.add_argument("--image-root", help="folder holding {split}/{A,B,label}/ (default ROOT/images)")
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
    p = sub.add_parser("data", help="dataset tools (check, pack)", description="Dataset tools.")
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

    k = data_sub.add_parser(
        "pack",
        help="decode a dataset's images once into memory-mapped arrays for fast training",
        description=(
            "Decode every image (and mask) of a dataset once into uint8 arrays, one memory-mapped .npy file per "
            "split, with the pairs' records in pack.json. A training config reads it with data.packed: OUT (the "
            "captions still come from data.root): the samples are the same as from the image files, without the "
            "decoding (and, with --size, the resizing) in the data loader. The pack is written to a temporary folder "
            "and renamed into place; an existing pack at OUT is replaced."
        ),
    )
    k.add_argument("--root", required=True, help="dataset root folder")
    k.add_argument("--format", required=True, choices=FORMATS)
    k.add_argument("--out", required=True, help="the pack's folder (new, empty, or an earlier pack)")
    k.add_argument(
        "--size",
        type=int,
        help="store the images fitted to N px, as training reads them with data.image_size N (default: native size)",
    )
    k.add_argument(
        "--resize-mode",
        default="resize",
        choices=["resize", "clip"],
        help="with --size: the data.resize_mode the pack is read with (default resize)",
    )
    k.add_argument("--splits", nargs="+", help="splits to pack (default: every split with pairs)")
    k.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    add_layout_arguments(k)
    k.set_defaults(func=run_pack)


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


def run_pack(args: argparse.Namespace) -> int:
    from changecap.data.packing import write_pack

    summary = write_pack(
        Path(args.root),
        args.format,
        Path(args.out),
        size=args.size,
        resize_mode=args.resize_mode,
        splits=args.splits,
        layout=layout_from_args(args),
        progress=False if args.no_progress else None,
    )
    print(summary.format_text())
    return 0
