"""``changecap caption BEFORE AFTER --model DIR``: caption one pair; ``--pairs DIR_OR_CSV [--out F]``: a folder of
pairs (``A/`` and ``B/`` with matching names) or a CSV of ``before,after`` paths, one record per pair."""

from __future__ import annotations

import argparse
import json
from typing import Any

from changecap.cli.predictor_args import add_predictor_arguments, predictor_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("caption", help="caption a before/after image pair with a trained model")
    p.add_argument("before", nargs="?", help="before image (time 1)")
    p.add_argument("after", nargs="?", help="after image (time 2)")
    p.add_argument(
        "--pairs",
        metavar="DIR_OR_CSV",
        help="caption many pairs: a folder with A/ and B/ (matching names) or a CSV of before,after paths",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        help="with --pairs: write the records to FILE (.jsonl or .csv; default: JSON lines on stdout)",
    )
    p.add_argument("--mask-dir", metavar="DIR", help="with --pairs: write each pair's change mask to DIR/<name>.png")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per forward pass (default 16)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--backend",
        choices=["torch", "onnx"],
        default="torch",
        help="onnx: --model is a folder from `changecap export onnx`, run by onnxruntime (greedy)",
    )
    p.add_argument("--model", required=True, help="saved model directory or Hugging Face Hub repo id (owner/name)")
    p.add_argument("--beam-size", type=int, default=None,
                   help="1 = greedy, k > 1 = beam search (default: the model's own decoding, greedy for most)")
    p.add_argument("--max-length", type=int, default=None, metavar="N",
                   help="most decoding steps, in the model's tokens (default: the model's own limit)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda when available)")
    add_predictor_arguments(p)
    p.add_argument("--json", action="store_true", help="print caption, change probability and tokens as JSON")
    p.add_argument("--mask", metavar="PNG", help="write the predicted change mask (models with a CD head)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from changecap.errors import ChangeCapError

    for flag in ("beam_size", "max_length"):
        value = getattr(args, flag)  # an option of this command's parser
        if value is not None and value < 1:
            raise ChangeCapError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.pairs is not None:
        if args.before is not None or args.mask or args.json:
            raise ChangeCapError("--pairs captions a folder or CSV: give no BEFORE AFTER images, --mask or --json")
        return run_pairs(args)
    if args.before is None or args.after is None:
        raise ChangeCapError("give BEFORE and AFTER images, or --pairs DIR_OR_CSV")
    for flag in ("out", "mask_dir"):
        if getattr(args, flag) is not None:  # an option of this command's parser
            raise ChangeCapError(f"--{flag.replace('_', '-')} goes with --pairs (one pair: --json, --mask PNG)")
    if args.mask:
        from changecap.data.files import check_not_input, check_output_file

        images = [args.before, args.after]  # both checked before the model is loaded
        check_not_input(args.mask, images, "--mask", "is one of the input images; choose another file")
        check_output_file(args.mask, "--mask")
    captioner = _captioner(args)
    if args.mask and not captioner.capabilities.change_mask:
        raise ChangeCapError(f"--mask: the model {args.model} predicts no change mask (it has no CD head)")
    res = captioner(args.before, args.after, beam_size=args.beam_size, max_length=args.max_length)
    if args.mask:
        from changecap.data.image_io import save_mask_png

        save_mask_png(res.mask, args.mask)  # the change_mask capability was checked above
    if args.json:
        record = {"caption": res.caption, "change_probability": res.change_probability, "tokens": res.tokens}
        print(json.dumps(record, allow_nan=False))  # strict JSON: the predictor never returns NaN
    elif res.caption is None:  # a change detector: the mask is its whole answer
        changed = int(res.mask.sum()) if res.mask is not None else 0
        total = res.mask.size if res.mask is not None else 0
        where = f", mask written to {args.mask}" if args.mask else " (--mask PNG writes the mask)"
        print(f"changed pixels: {changed} of {total} ({100 * changed / max(total, 1):.2f} %){where}")
    else:
        print(res.caption)
        if res.change_probability is not None:
            print(f"P(change) = {res.change_probability:.3f}")
    return 0


def run_pairs(args: argparse.Namespace) -> int:
    import sys

    from changecap.data.files import check_output_dir
    from changecap.errors import ChangeCapError
    from changecap.inference.pairs import (
        RecordWriter,
        caption_pairs,
        check_outputs_spare_inputs,
        check_records_path,
        find_pairs,
    )

    # every argument and output path before the pairs are listed or the model is loaded: a mistake fails at once
    if args.batch_size < 1:
        raise ChangeCapError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.out is not None:
        check_records_path(args.out)
    if args.mask_dir is not None:
        check_output_dir(args.mask_dir, "--mask-dir")
    pairs, problems = find_pairs(args.pairs)
    check_outputs_spare_inputs(pairs, args.pairs, args.out, args.mask_dir)
    captioner = _captioner(args)
    if args.mask_dir and not captioner.capabilities.change_mask:
        raise ChangeCapError(f"--mask-dir: the model {args.model} predicts no change mask (it has no CD head)")
    records = caption_pairs(captioner, pairs, batch_size=args.batch_size, beam_size=args.beam_size,
                            max_length=args.max_length, mask_dir=args.mask_dir,
                            progress=not args.no_progress)  # fmt: skip
    writer = RecordWriter(args.out)
    captioned = 0
    try:
        for record in records:
            if record.error is not None:
                problems.append(record)
                continue
            writer.write(record)
            captioned += 1
        for record in problems:  # after the captions, in the output as well as on the terminal
            writer.write(record)
        writer.close()
    except BaseException as e:
        partial = writer.abort()  # the temporary file never survives; records written so far are kept
        if partial is not None:
            how = "interrupted" if isinstance(e, KeyboardInterrupt) else "stopped"
            print(f"{how}: the {writer.count} record(s) written so far are in {partial}", file=sys.stderr)
        raise
    where = f" to {args.out}" if args.out else ""
    print(f"{captioned} pair(s) captioned{where}; {len(problems)} problem(s)", file=sys.stderr)
    for record in problems:
        print(f"  {record.name}: {record.error}", file=sys.stderr)
    return 0


def _captioner(args: argparse.Namespace) -> Any:
    from changecap.errors import ChangeCapError
    from changecap.models.device import parse_device

    device = parse_device(args.device, "--device")  # checked for either backend: a typo never passes silently
    if args.backend == "onnx":
        from changecap.inference.onnx_export import OnnxCaptioner

        if args.beam_size not in (None, 1):
            raise ChangeCapError("--backend onnx decodes greedily: --beam-size must be 1")
        if args.precision != "fp32":
            raise ChangeCapError(f"--backend onnx runs the exported graphs as they are: --precision {args.precision} "
                                 "goes with --backend torch")  # fmt: skip
        return OnnxCaptioner(args.model, threads=args.threads)
    from changecap.inference import ChangeCaptioner

    return ChangeCaptioner.from_pretrained(args.model, device=device, **predictor_options(args))
