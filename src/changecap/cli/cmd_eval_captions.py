"""``changecap eval-captions``: score a predictions file against a references file (``docs/evaluation.md``)."""

from __future__ import annotations

import argparse
import json

from changecap.cli.embedding_args import add_embedding_arguments, embedder_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval-captions",
        help="score predicted captions (BLEU, METEOR, ROUGE-L, CIDEr-D, S_m) against references",
        description=(
            "Score PRED.json ({id: caption}) against REFS.json ({id: [captions]}) with the coco scorers. "
            "Protocol rsicc (default) scores vocabulary-id strings as the RSICC papers do (give the model's "
            "--vocab to reproduce published numbers); coco applies PTB tokenisation; none scores the strings "
            "as given."
        ),
    )
    p.add_argument("--pred", required=True, metavar="PRED.json", help="predictions {id: caption}")
    p.add_argument("--refs", required=True, metavar="REFS.json", help="references {id: [caption, ...]}")
    p.add_argument("--protocol", default="rsicc", choices=("rsicc", "coco", "none"))
    p.add_argument("--vocab", metavar="VOCAB.json", help="vocabulary for --protocol rsicc (default: from the refs)")
    p.add_argument(
        "--meteor",
        default="java",
        choices=("java", "approx", "off"),
        help="java: METEOR 1.5 jar (reported unavailable without Java); approx: labelled approximation",
    )
    p.add_argument(
        "--ptb", default="auto", choices=("auto", "java", "python"), help="PTB tokenizer for --protocol coco"
    )
    p.add_argument("--no-breakdown", action="store_true", help="skip the changed / unchanged subsets")
    p.add_argument("--per-item", action="store_true", help="also report every pair's scores")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_embedding_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from changecap.data.vocab import Vocabulary
    from changecap.errors import ConfigError
    from changecap.metrics.caption_eval import METRIC_KEYS, evaluate_captions, load_caption_json
    from changecap.metrics.embedding import EMBEDDING_KEY

    if args.vocab and args.protocol != "rsicc":
        raise ConfigError("--vocab", f"only used with --protocol rsicc (got --protocol {args.protocol})")
    preds = load_caption_json(args.pred, kind="pred")
    refs = load_caption_json(args.refs, kind="refs")
    vocab = Vocabulary.load(args.vocab) if args.vocab else None
    embed = embedder_from_args(args)
    result = evaluate_captions(
        preds,
        refs,
        protocol=args.protocol,
        vocab=vocab,
        meteor=args.meteor,
        per_item=args.per_item,
        breakdown=not args.no_breakdown,
        ptb=args.ptb,
        pred_path=args.pred,
        refs_path=args.refs,
        **({} if embed is None else {"embed": embed[0], "embed_label": embed[1]}),
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(result.format_table())
    if result.per_item is not None:
        print()
        keys = [*METRIC_KEYS, *([EMBEDDING_KEY] if result.embedding is not None else [])]
        print("per item (x100): id " + " ".join(keys))
        for key, scores in result.per_item.items():
            cells = " ".join("n/a" if v is None else f"{100 * v:.2f}" for v in (scores[k] for k in keys))
            print(f"{key} {cells}")
    return 0
