"""``changecap baselines``: score the trivial caption baselines on a dataset split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FORMATS = ("levir-cc", "levir-mci", "whu-cdc", "dubai-cc")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baselines",
        help="score the nearest-neighbour and most-frequent-caption baselines",
        description="Fit two trivial caption baselines on the train split and score them on --split.",
    )
    p.add_argument("--root", required=True, help="dataset root")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--vocab", help="vocab.json for the rsicc protocol (default: built from train, count > 5)")
    p.add_argument("--meteor", default="java", choices=("java", "approx", "off"))
    p.add_argument("--out", help="directory for predictions and metrics JSON")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from changecap.data.files import check_output_dir

    if args.out is not None:
        check_output_dir(args.out, "--out")  # before the baselines are fitted
    results = run_baselines(
        Path(args.root), args.format, args.split, vocab_path=args.vocab, meteor=args.meteor, out_dir=args.out
    )
    if args.json:
        print(json.dumps({k: r.to_dict() for k, r in results.items()}, indent=2))
    else:
        for name, res in results.items():
            print(f"== baseline: {name} ({args.split} split) ==")
            print(res.format_table())
            print()
    return 0


def run_baselines(
    root: Path,
    fmt: str,
    split: str = "test",
    *,
    vocab_path: str | None = None,
    meteor: str = "java",
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Fit both baselines on ``train`` and evaluate them on ``split`` (rsicc protocol). Returns name → result."""
    from changecap.baselines import MostFrequentCaption, NearestNeighbourCaptioner
    from changecap.data.datasets import build_vocabulary, open_dataset
    from changecap.data.vocab import Vocabulary
    from changecap.metrics import evaluate_captions, meteor_session

    vocab = Vocabulary.load(vocab_path) if vocab_path else build_vocabulary(root, fmt, splits="train")
    train = open_dataset(root, fmt, "train", vocab=vocab)
    test = open_dataset(root, fmt, split, vocab=vocab)
    refs = {rec.name: list(rec.captions) for rec in test.records}
    # the METEOR JVM starts loading while the baselines are fitted, and scores both
    with meteor_session(meteor) as scorer:
        predictions = {
            "nearest-neighbour": NearestNeighbourCaptioner(progress=progress).fit(train).predict(test),
            "most-frequent": MostFrequentCaption().fit(train).predict(test),
        }
        results = {}
        for name, preds in predictions.items():
            results[name] = evaluate_captions(preds, refs, protocol="rsicc", vocab=vocab, meteor=scorer)
    if out_dir is not None:
        from changecap.data.files import atomic_write_text

        out = Path(out_dir)
        for name, preds in predictions.items():
            atomic_write_text(out / f"baseline_{name}_predictions.json", json.dumps(preds, indent=1))
            atomic_write_text(out / f"baseline_{name}_metrics.json", json.dumps(results[name].to_dict(), indent=1))
    return results
