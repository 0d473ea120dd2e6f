"""fp32 vs bf16 vs int8 inference of trained models: token and mask agreement, and speed, on one split.

For each saved model directory, every pair of the split is captioned through ``ChangeCaptioner`` (greedy, the same
batches) in fp32 (the tokens of training-time validation) and in each ``--precision`` asked for:

* ``bf16``: ``ChangeCaptioner(precision="bf16")``, the linear / convolution weights cast once; it must equal
  ``bf16 autocast`` (fp32 weights under ``torch.autocast(bfloat16)``, re-cast on every call) bit for bit, which is
  checked;
* ``int8``: ``ChangeCaptioner(precision="int8")``, the linear layers quantised once (CPU); with
  ``--int8-alternatives`` also the same layers through ``torch.ao.quantization.quantize_dynamic`` (fbgemm, one
  activation scale per tensor), the path that int8 does not take (``docs/benchmarks.md``).

Reported per model and precision: the share of pairs whose caption equals the fp32 one exactly, the share of fp32
token positions reproduced, for models with a change-detection head the IoU of the changed pixels against fp32's
masks over the whole split (both empty counts as agreement), and pairs/s against fp32 in the same run. On CPUs
without bf16 matrix instructions (no AMX / AVX-512 BF16) bf16 is much slower than fp32; ``bench_peak.py`` shows the
machine's peaks. ``--cpu-time`` reports pairs per CPU-second of the process instead of wall time (one thread on a
shared machine: the work, not the waits).

Usage::

    python benchmarks/bench_precision_agreement.py DATA_ROOT MODEL_DIR [MODEL_DIR ...] [--format levir-cc]
        [--split test] [--precision bf16 int8] [--batch-size 32] [--threads N] [--limit N] [--cpu-time]
        [--int8-alternatives]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader


def caption_split(captioner, loader, autocast: bool, clock) -> tuple[list[list[int]], list, float]:  # noqa: ANN001
    """Token lists and masks (None for models without) of every pair, and the seconds it took on ``clock``."""
    tokens: list[list[int]] = []
    masks: list = []
    t0 = clock()
    for batch in loader:
        if autocast:
            with torch.autocast(captioner.device.type, dtype=torch.bfloat16):
                results = captioner.caption_tensor(batch["image"])
        else:
            results = captioner.caption_tensor(batch["image"])
        tokens += [r.tokens for r in results]
        masks += [r.mask for r in results]
    return tokens, masks, clock() - t0


def mask_iou(ref: list, got: list) -> float | None:
    """IoU of the changed pixels of two mask lists over the whole split (1.0 when neither marks any change)."""
    if not ref or ref[0] is None:
        return None
    inter = sum(int(np.logical_and(a > 0, b > 0).sum()) for a, b in zip(ref, got, strict=True))
    union = sum(int(np.logical_or(a > 0, b > 0).sum()) for a, b in zip(ref, got, strict=True))
    return 1.0 if union == 0 else inter / union


def torch_ao_int8(model):  # noqa: ANN001, ANN201
    """A copy of ``model`` with the layers ``precision="int8"`` quantises, through torch.ao's ``quantize_dynamic``."""
    import copy
    import warnings

    from changecap.models.precision import Int8Linear, quantize_linear_layers

    probe = copy.deepcopy(model)
    quantize_linear_layers(probe)
    names = {k for k, m in probe.named_modules() if isinstance(m, Int8Linear)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation warnings
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(copy.deepcopy(model), names, dtype=torch.qint8)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("models", nargs="+")
    p.add_argument("--format", default="levir-cc")
    p.add_argument("--split", default="test")
    p.add_argument("--precision", nargs="+", default=["bf16", "int8"], choices=["bf16", "int8"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="only the first N pairs")
    p.add_argument("--cpu-time", action="store_true", help="pairs per CPU-second of this process, not wall time")
    p.add_argument("--int8-alternatives", action="store_true", help="also int8 through torch.ao's quantize_dynamic")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.cpu_time else time.perf_counter

    from changecap.data.collate import collate_pairs
    from changecap.data.datasets import open_dataset
    from changecap.inference import ChangeCaptioner

    unit = "pairs per CPU-second" if args.cpu_time else "pairs/s"
    print(f"{args.split} split of {args.data}, greedy, batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"| model | precision | pairs | captions equal | tokens equal | mask IoU vs fp32 | {unit} (fp32 → this) |")
    print("|---|---|---|---|---|---|---|")
    for model_dir in args.models:
        fp32 = ChangeCaptioner.from_pretrained(model_dir, device="cpu")
        pp = fp32.preprocess
        sizes = {"image_size": pp.image_size, "resize_mode": pp.resize_mode, "max_length": fp32.max_length}
        ds = open_dataset(args.data, args.format, args.split, vocab=fp32.vocab, normalize=(pp.mean, pp.std), **sizes)
        if args.limit:
            ds = torch.utils.data.Subset(ds, range(min(args.limit, len(ds))))
        loader = DataLoader(ds, batch_size=args.batch_size, shuffle=False, collate_fn=collate_pairs)
        ref, ref_masks, t_fp32 = caption_split(fp32, loader, autocast=False, clock=clock)
        n = len(ref)
        ways = list(args.precision)
        if args.int8_alternatives and "int8" in ways:
            ways.append("int8 torch.ao")
        for precision in ways:
            if precision == "int8 torch.ao":
                other = ChangeCaptioner(torch_ao_int8(fp32.model), fp32.vocab, fp32.preprocess, "cpu")
            else:
                other = ChangeCaptioner.from_pretrained(model_dir, device="cpu", precision=precision)
            got, masks, t = caption_split(other, loader, autocast=False, clock=clock)
            note = ""
            if precision == "bf16":
                auto, _, _ = caption_split(fp32, loader, autocast=True, clock=clock)
                note = ", = bf16 autocast" if got == auto else ", NOT bf16 autocast"
            positions = sum(len(a) for a in ref)
            captions = f"{100 * sum(a == b for a, b in zip(ref, got)) / n:.1f} %" if positions else "—"
            tokens = (f"{100 * sum(sum(x == y for x, y in zip(a, b)) for a, b in zip(ref, got)) / positions:.1f} %"
                      if positions else "—")  # fmt: skip
            iou = mask_iou(ref_masks, masks)
            print(
                f"| {Path(model_dir).as_posix()} | {precision}{note} | {n} | {captions} | {tokens} | "
                f"{'—' if iou is None else f'{iou:.4f}'} | {n / t_fp32:.1f} → {n / t:.1f} ({t_fp32 / t:.2f}×) |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
