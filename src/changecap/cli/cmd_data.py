"""``changecap data check`` (validate a dataset on disk and print its statistics), ``changecap data audit`` (find
label errors, leakage and caption problems), ``changecap data import`` (the user's own pairs and captions → a dataset
in the LEVIR-CC layout) and ``changecap data pack`` (decode its images once into memory-mapped arrays that training
reads instead of the image files, ``data.packed``)."""

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
    p = sub.add_parser("data", help="dataset tools (check, audit, import, pack)", description="Dataset tools.")
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

    _register_audit(data_sub)


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
        if len(e.problems) == 1:  # one problem, one line
            print(f"error: {e.problems[0]} (nothing written; --skip-bad imports the rest)", file=sys.stderr)
            return 2
        for line in e.problems:
            print(f"error: {line}", file=sys.stderr)
        print(f"error: {len(e.problems)} problem(s); nothing written (--skip-bad imports the rest)", file=sys.stderr)
        return 2
    for line in report.skipped:
        print(f"skipped: {line}", file=sys.stderr)
    print(report.format_text())
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


# ---------------------------------------------------------------------------------------------------------- audit
def _register_audit(data_sub: argparse._SubParsersAction) -> None:
    a = data_sub.add_parser(
        "audit",
        help="find label errors, leakage and caption problems",
        description=(
            "Audit a dataset in any supported format: change flag vs captions and vs mask, nearly identical dates "
            "captioned as changed, duplicate pairs across splits, spatial words vs the mask, and empty, garbled, "
            "outlier-length, out-of-vocabulary or rare captions. Checks that need images or masks are skipped, "
            "saying so, when the dataset has none. Prints counts per check; --json writes every finding, --html a "
            "self-contained page with thumbnails of every flagged pair. docs/audit.md describes each check."
        ),
    )
    a.add_argument("--root", required=True, help="dataset root folder")
    a.add_argument("--format", required=True, metavar="FMT", help=f"dataset format: {', '.join(FORMATS)}")
    a.add_argument("--json", metavar="FILE", help="write the report and every finding as JSON")
    a.add_argument("--html", metavar="FILE", help="write a self-contained HTML report with thumbnails")
    t = a.add_argument_group("thresholds")
    t.add_argument(
        "--min-changed-pixels",
        type=int,
        default=1,
        metavar="N",
        help="a mask with fewer changed pixels counts as empty (default 1)",
    )
    t.add_argument(
        "--identical-below",
        type=float,
        default=4.0,
        metavar="G",
        help="dates whose aligned difference score is below G grey levels are nearly identical (default 4)",
    )
    t.add_argument(
        "--hash-bits",
        type=int,
        default=16,
        metavar="B",
        help="duplicate candidates: both dates' 64-bit hashes within B bits (default 16)",
    )
    t.add_argument(
        "--duplicate-below",
        type=float,
        default=4.0,
        metavar="G",
        help="a candidate is a duplicate when both dates' mean aligned residual is at most G grey levels (default 4)",
    )
    t.add_argument(
        "--rare-count",
        type=int,
        default=1,
        metavar="N",
        help="words used at most N times in train are rare (default 1)",
    )
    t.add_argument(
        "--max-words",
        type=int,
        default=None,
        metavar="N",
        help="captions longer than N words are outliers (default: Q3 + 3 IQR of the dataset's caption lengths)",
    )
    a.add_argument("--workers", type=int, default=1, help="processes reading the images (default 1)")
    a.add_argument("--thumb-size", type=int, default=96, help="side of the HTML thumbnails in pixels (default 96)")
    a.add_argument("--show", type=int, default=20, help="findings printed on the terminal (default 20)")
    a.add_argument("--strict", action="store_true", help="exit with status 1 when there is an error-level finding")
    a.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    add_layout_arguments(a)
    a.set_defaults(func=run_audit)


def run_audit(args: argparse.Namespace) -> int:
    from changecap.data.annotations import check_format
    from changecap.data.audit import AuditOptions, audit_dataset
    from changecap.data.files import atomic_write_text, check_output_file
    from changecap.errors import ConfigError, DataError

    check_format(args.format)
    json_out = check_output_file(args.json, "--json") if args.json else None
    html_out = check_output_file(args.html, "--html") if args.html else None
    if not 16 <= args.thumb_size <= 512:
        raise ConfigError("thumb-size", f"must be between 16 and 512 pixels, got {args.thumb_size}")
    options = AuditOptions(
        min_changed_pixels=args.min_changed_pixels,
        identical_below=args.identical_below,
        hash_bits=args.hash_bits,
        duplicate_below=args.duplicate_below,
        rare_count=args.rare_count,
        max_words=args.max_words,
    )
    progress = False if args.no_progress else None
    report = audit_dataset(
        Path(args.root),
        args.format,
        layout=layout_from_args(args),
        options=options,
        workers=args.workers,
        progress=progress,
    )
    print(report.format_text(show=max(args.show, 0)))
    if json_out is not None:
        try:
            atomic_write_text(json_out, json.dumps(report.to_dict(), indent=1) + "\n")
        except OSError as e:
            raise DataError(json_out, f"cannot write the JSON report ({e.strerror or e})") from None
        print(f"json: {json_out}")
    if html_out is not None:
        from changecap.data.audit_report import write_html

        write_html(report, html_out, thumb_size=args.thumb_size, progress=progress)
        print(f"html: {html_out}")
    if args.strict and any(f.severity == "error" for f in report.findings):
        return 1
    return 0
