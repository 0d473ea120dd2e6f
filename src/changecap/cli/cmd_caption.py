"""``changecap caption BEFORE AFTER --model DIR``: caption one pair (or several with --pairs-file)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("caption", help="caption a before/after image pair with a trained model")
    p.add_argument("before", help="before image (time 1)")
    p.add_argument("after", help="after image (time 2)")
    p.add_argument("--model", required=True, help="saved model directory or Hugging Face Hub repo id (owner/name)")
    p.add_argument("--beam-size", type=int, default=1)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print caption, change probability and tokens as JSON")
    p.add_argument("--mask", metavar="PNG", help="write the predicted change mask (models with a CD head)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from changecap.errors import ChangeCapError
    from changecap.inference import ChangeCaptioner

    if args.beam_size < 1:
        raise ChangeCapError(f"--beam-size must be >= 1, got {args.beam_size}")
    captioner = ChangeCaptioner.from_pretrained(args.model, device=args.device)
    if args.mask and not captioner.predicts_masks:
        raise ChangeCapError(f"--mask: the model {args.model} predicts no change mask (it has no CD head)")
    res = captioner(args.before, args.after, beam_size=args.beam_size)
    if args.mask:
        from changecap.inference.evaluate import save_mask_png

        save_mask_png(res.mask, args.mask)  # predicts_masks was checked above
    if args.json:
        print(json.dumps({"caption": res.caption, "change_probability": res.change_probability, "tokens": res.tokens}))
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
