"""``changecap compare``: paired significance of the differences between systems' captions on one split."""

from __future__ import annotations

import argparse
from pathlib import Path

from changecap.cli.cmd_data import FORMATS, add_layout_arguments, layout_from_args
from changecap.cli.embedding_args import add_embedding_arguments, embedder_from_args

CAPTION_FORMATS: tuple[str, ...] = tuple(f for f in FORMATS if f != "levir-cd")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare systems' captions: paired bootstrap intervals, randomisation p-values, seeds",
        description=(
            "Compare two or more systems' predictions ({pair name: caption}, e.g. the predictions_<split>.json "
            "that changecap evaluate writes) on one split: every metric's difference with a paired bootstrap 95% "
            "confidence interval over the pairs and a paired approximate-randomisation p-value; with --runs, "
            "several runs (seeds) per system: mean ± sd and wins per seed. Differences are b - a, a being the "
            "system given first."
        ),
    )
    p.add_argument(
        "predictions",
        nargs="*",
        metavar="[LABEL=]PRED.json",
        help="one prediction file per single-run system (label: LABEL, else the file name made unique)",
    )
    p.add_argument("--data", required=True, help="dataset root holding the references")
    p.add_argument("--format", default="levir-cc", choices=CAPTION_FORMATS, help="dataset layout")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument(
        "--runs",
        nargs="+",
        action="extend",
        default=[],
        metavar="LABEL=a.json,b.json",
        help="a system with several runs (e.g. seeds), their prediction files comma-separated; repeatable",
    )
    p.add_argument("--json", metavar="FILE", help="write the full result as JSON")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report with the intervals drawn")
    p.add_argument("--protocol", default="rsicc", choices=("rsicc", "coco", "none"))
    p.add_argument("--vocab", metavar="VOCAB.json", help="vocabulary for --protocol rsicc (default: from the refs)")
    p.add_argument(
        "--meteor",
        default="off",
        choices=("off", "approx", "java"),
        help="also METEOR and S_m: java starts the METEOR 1.5 jar (needs Java; adds the JVM start and one pass "
        "over every run), approx is the labelled approximation (default: off)",
    )
    p.add_argument("--ptb", default="auto", choices=("auto", "java", "python"), help="PTB tokenizer for coco")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--permutations", type=int, default=1000, help="randomisation permutations (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")
    add_embedding_arguments(p)
    add_layout_arguments(p)
    p.set_defaults(func=run)


def parse_prediction_arg(text: str) -> tuple[str | None, Path]:
    """``LABEL=FILE`` or ``FILE`` (a file whose own name holds ``=`` is taken as a file when it exists)."""
    from changecap.errors import ConfigError

    if "=" in text and not Path(text).exists():
        label, _, path = text.partition("=")
        if not label or not path:
            raise ConfigError("predictions", f"expected [LABEL=]PRED.json, got {text!r}")
        return label, Path(path)
    return None, Path(text)


def parse_runs_arg(text: str) -> tuple[str, list[Path]]:
    """``LABEL=a.json,b.json,...`` → the label and its files."""
    from changecap.errors import ConfigError

    label, sep, files = text.partition("=")
    paths = [f for f in files.split(",") if f]
    if not sep or not label or not paths:
        raise ConfigError("--runs", f"expected LABEL=a.json,b.json,... got {text!r}")
    return label, [Path(f) for f in paths]


def run(args: argparse.Namespace) -> int:
    from changecap.data.files import check_output_files
    from changecap.errors import ConfigError
    from changecap.inference.compare import compare_files, write_json
    from changecap.inference.compare_report import write_comparison_html

    if args.vocab and args.protocol != "rsicc":
        raise ConfigError("--vocab", f"only used with --protocol rsicc (got --protocol {args.protocol})")
    if args.resamples < 1 or args.permutations < 1:
        raise ConfigError("--resamples/--permutations", "must be >= 1")
    # a bare file name after --runs (no "=") is a prediction file that followed the option: argparse gave it to --runs
    bare = [t for t in args.runs if "=" not in t]
    predictions = [parse_prediction_arg(t) for t in [*args.predictions, *bare]]
    runs = [parse_runs_arg(t) for t in args.runs if "=" in t]
    inputs = [p for _, p in predictions] + [p for _, paths in runs for p in paths]
    # before any file is read: neither report may replace a prediction file or the other report
    check_output_files({"--json": args.json, "--html": args.html}, inputs)
    comparison = compare_files(
        args.data,
        predictions,
        runs,
        fmt=args.format,
        split=args.split,
        layout=layout_from_args(args),
        protocol=args.protocol,
        vocab_path=args.vocab,
        ptb=args.ptb,
        meteor=args.meteor,
        embed=embedder_from_args(args),
        resamples=args.resamples,
        permutations=args.permutations,
        seed=args.seed,
    )
    print(comparison.format_table())
    if args.json:
        print(f"json: {write_json(comparison, args.json)}")
    if args.html:
        print(f"html: {write_comparison_html(comparison, args.html)}")
    return 0
