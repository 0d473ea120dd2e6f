"""fp32 vs bf16 inference of trained models: token agreement and speed, side by side on one split.

For each saved model directory, every pair of the split is captioned three ways through ``ChangeCaptioner``
(greedy, the same batches):

* ``fp32``: full precision (the tokens of training-time validation);
* ``bf16 autocast``: fp32 weights under ``torch.autocast(bfloat16)`` (weights re-cast on every call);
* ``bf16``: ``ChangeCaptioner(precision="bf16")``, the linear / convolution weights cast once.

Reported: the share of pairs whose bf16 caption equals the fp32 one exactly, the share of fp32 token positions
that bf16 reproduces, whether ``bf16`` equals ``bf16 autocast`` bit for bit (it must), and pairs/s of each way
with the ratio to fp32. On CPUs without bf16 matrix instructions (no AMX / AVX-512 BF16) bf16 is much slower than
fp32; ``bench_peak.py`` shows the machine's two peaks.

Usage::

    python benchmarks/bench_precision_agreement.py DATA_ROOT MODEL_DIR [MODEL_DIR ...] [--format levir-cc]
        [--split test] [--batch-size 32] [--threads N] [--limit N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader


def caption_split(captioner, loader, autocast: bool) -> tuple[list[list[int]], float]:  # noqa: ANN001
    """Token lists of every pair and the wall seconds it took."""
    tokens: list[list[int]] = []
    t0 = time.perf_counter()
    for batch in loader:
        if autocast:
            with torch.autocast(captioner.device.type, dtype=torch.bfloat16):
                results = captioner.caption_tensor(batch["image"])
        else:
            results = captioner.caption_tensor(batch["image"])
        tokens += [r.tokens for r in results]
    return tokens, time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("models", nargs="+")
    p.add_argument("--format", default="levir-cc")
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="only the first N pairs")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from changecap.data.collate import collate_pairs
    from changecap.data.datasets import open_dataset
    from changecap.inference import ChangeCaptioner

    print(f"{args.split} split of {args.data}, greedy, batch {args.batch_size}, {torch.get_num_threads()} threads")
    print("| model | pairs | captions equal | tokens equal | bf16 == bf16 autocast | pairs/s fp32 / autocast / bf16 |")
    print("|---|---|---|---|---|---|")
    for model_dir in args.models:
        fp32 = ChangeCaptioner.from_pretrained(model_dir, device="cpu")
        pp = fp32.preprocess
        sizes = {"image_size": pp.image_size, "resize_mode": pp.resize_mode, "max_length": fp32.max_length}
        ds = open_dataset(args.data, args.format, args.split, vocab=fp32.vocab, normalize=(pp.mean, pp.std), **sizes)
        if args.limit:
            ds = torch.utils.data.Subset(ds, range(min(args.limit, len(ds))))
        loader = DataLoader(ds, batch_size=args.batch_size, shuffle=False, collate_fn=collate_pairs)
        ref, t_fp32 = caption_split(fp32, loader, autocast=False)
        auto, t_auto = caption_split(fp32, loader, autocast=True)
        bf16 = ChangeCaptioner.from_pretrained(model_dir, device="cpu", precision="bf16")
        cast, t_cast = caption_split(bf16, loader, autocast=False)
        n = len(ref)
        same_caption = sum(a == b for a, b in zip(ref, cast)) / n
        positions = sum(len(a) for a in ref)
        same_tokens = sum(sum(x == y for x, y in zip(a, b)) for a, b in zip(ref, cast)) / positions
        rates = " / ".join(f"{n / t:.1f}" for t in (t_fp32, t_auto, t_cast))
        print(
            f"| {Path(model_dir).as_posix()} | {n} | {100 * same_caption:.1f} % | {100 * same_tokens:.1f} % | "
            f"{'yes' if cast == auto else 'NO'} | {rates} (bf16 {t_fp32 / t_cast:.2f}× fp32) |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
