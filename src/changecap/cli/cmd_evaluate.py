"""``changecap evaluate --model DIR --data DIR --split test``: predictions JSON + metrics report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from changecap.cli.cmd_data import FORMATS
from changecap.cli.embedding_args import add_embedding_arguments
from changecap.cli.predictor_args import add_predictor_arguments, predictor_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="caption a dataset split with a trained model and score it")
    p.add_argument("--model", required=True, help="saved model directory or Hugging Face Hub repo id (owner/name)")
    p.add_argument("--data", required=True, help="dataset root")
    p.add_argument("--format", default="levir-cc", choices=FORMATS, help="dataset layout (levir-cd: masks only)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", help="output directory (default: <model>/eval_<split>; for a Hub id ./eval_<name>_<split>)")
    p.add_argument(
        "--protocol",
        action="append",
        choices=("rsicc", "coco", "none"),
        help="scoring protocol(s); default: rsicc and coco",
    )
    p.add_argument("--meteor", default="java", choices=("java", "approx", "off"))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--beam-size", type=int, default=None,
                   help="1 = greedy, k > 1 = beam search (default: the model's own decoding, greedy for most)")
    p.add_argument("--max-length", type=int, default=None, metavar="N",
                   help="most decoding steps, in the model's tokens (default: the model's own limit)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda when available)")
    add_predictor_arguments(p)
    add_embedding_arguments(p)
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from changecap.data.files import check_output_dir
    from changecap.errors import ChangeCapError
    from changecap.inference import evaluate_model
    from changecap.models.device import parse_device

    for flag, value in (("--batch-size", args.batch_size), ("--beam-size", args.beam_size),
                        ("--max-length", args.max_length)):  # fmt: skip
        if value is not None and value < 1:
            raise ChangeCapError(f"{flag} must be >= 1, got {value}")
    if args.out:
        out = Path(args.out)
    elif Path(args.model).is_dir():
        out = Path(args.model) / f"eval_{args.split}"
    else:  # a Hub id: never write into the Hugging Face cache
        out = Path(f"eval_{str(args.model).replace('/', '_')}_{args.split}")
    check_output_dir(out, "--out")  # before the model is loaded
    ev = evaluate_model(
        args.model,
        args.data,
        args.format,
        args.split,
        out_dir=out,
        protocols=tuple(args.protocol or ("rsicc", "coco")),
        meteor=args.meteor,
        batch_size=args.batch_size,
        beam_size=args.beam_size,
        max_length=args.max_length,
        device=parse_device(args.device, "--device"),
        embedding_model=args.embedding_model,
        embedding_cache=args.embedding_cache,
        **predictor_options(args),
    )
    if args.json:
        payload = {p: r.to_dict() for p, r in ev.results.items()}
        if ev.change_detection is not None:
            payload["change_detection"] = ev.change_detection.to_dict()
        print(json.dumps(payload, indent=2))
    else:
        for proto, res in ev.results.items():
            print(f"== protocol: {proto} ({args.split} split, {len(ev.predictions)} pairs) ==")
            print(res.format_table())
            print()
        if ev.change_detection is not None:
            from changecap.inference.evaluate import format_change_detection

            print(format_change_detection(ev.change_detection))
            print()
        print(f"predictions: {ev.files['predictions']}\nreport: {ev.files['report']}")
        if "masks" in ev.files:
            print(f"predicted masks: {ev.files['masks']}")
    return 0
