"""Benchmark (c): KV-cached batched decoding vs naive full-prefix decoding, side by side in one run.

The paper decoder (1 layer, D = 768, 8 heads, V = 501, 41 positions) with random weights decodes random fused
memories ``[B, 196, 768]``. Three ways to produce the same captions:

* ``official``: naive full-prefix recomputation, one pair at a time (what the official batch-1 sampler does);
* ``naive``: naive full-prefix recomputation, batched (finished items dropped);
* ``cached``: the decoder's key/value cache, batched (one new position per step).

Random weights rarely emit ``<END>``, so every caption runs to the full 41 steps: the same work for every method,
and the worst case for naive decoding (its cost grows with the square of the length). Every method's tokens are
checked to be identical to the cached ones. Figures are medians of ``--repeat`` runs, in pairs/s, with the speed-up
of ``cached`` over each other method measured in the same run.

Usage::

    python benchmarks/bench_decoding.py [--batch 1 16 64] [--beam 1 3] [--repeat 3] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import sys

import torch
from timing import median_seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--beam", type=int, nargs="+", default=[1, 3])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--max-length", type=int, default=41)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--official-max-batch", type=int, default=16, help="skip the batch-1 loop above this batch")
    args = p.parse_args(argv)

    from changecap.models.parts.caption_decoder import CaptionDecoderConfig, TransformerCaptionDecoder
    from changecap.models.parts.decoding import generate

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device = torch.device(args.device)
    torch.manual_seed(0)
    decoder = TransformerCaptionDecoder(CaptionDecoderConfig(dim=768, vocab_size=501, max_length=41, layers=1, heads=8))
    decoder.to(device).eval()
    n_params = sum(x.numel() for x in decoder.parameters())
    print(
        f"paper decoder ({n_params:,} parameters), memory [B, 196, 768], max_length {args.max_length}, "
        f"device {device}, {torch.get_num_threads()} threads; pairs/s (median of {args.repeat})"
    )
    head = "| beam | batch | official (naive, batch 1) | naive (batched) | cached (batched) | cached / naive | "
    head += "cached / official | same tokens |"
    print(head + "\n|" + "---|" * 8)
    for beam in args.beam:
        for b in args.batch:
            memory = torch.randn(b, 196, 768, generator=torch.Generator().manual_seed(b)).to(device)

            def run(use_cache: bool, m: torch.Tensor = memory, k: int = beam) -> list[list[int]]:
                with torch.inference_mode():
                    return generate(decoder, m, args.max_length, k, 0.0, use_cache)

            def official(m: torch.Tensor = memory, k: int = beam) -> list[list[int]]:
                with torch.inference_mode():
                    return [generate(decoder, m[i : i + 1], args.max_length, k, 0.0, False)[0] for i in range(len(m))]

            ref = run(True)
            same = run(False) == ref
            t_cached = median_seconds(lambda: run(True), args.repeat)
            t_naive = median_seconds(lambda: run(False), args.repeat)
            cells = [str(beam), str(b)]
            if b <= args.official_max_batch:
                same = same and official() == ref
                t_off = median_seconds(official, max(1, args.repeat // 2))
                cells.append(f"{b / t_off:.1f}")
            else:
                t_off = None
                cells.append("—")
            cells += [f"{b / t_naive:.1f}", f"{b / t_cached:.1f}", f"{t_naive / t_cached:.2f}×"]
            cells += [f"{t_off / t_cached:.2f}×" if t_off else "—", "yes" if same else "NO"]
            print("| " + " | ".join(cells) + " |", flush=True)
            if not same:
                print("cached and naive decoding disagree", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
