"""``changecap data audit`` speed on a SynthCC set (default: ``small``, 2,400 pairs of 128 px).

Prints the wall-clock time and the CPU time of the whole audit (annotations, caption checks, one read of every pair
with its mask, duplicate search), pairs per second, and the time of each phase. On a shared machine the CPU figure
is the one to quote for ``--workers 1``.

Usage: ``python benchmarks/bench_audit.py [--data DIR] [--workers 1]`` (the set is generated into DIR when absent).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from changecap.data.audit import audit_dataset
from changecap.synth import generate_synthcc


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the worker processes, once they have exited
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="bench_out/synthcc_small_seed0", help="a SynthCC folder (generated if absent)")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    root = Path(args.data)
    if not (root / "LevirCCcaptions.json").exists():
        generate_synthcc(root, preset="small", seed=0, progress=True)
    w0, c0 = time.perf_counter(), _cpu()
    report = audit_dataset(root, "levir-mci", workers=args.workers, progress=False)
    wall, cpu = time.perf_counter() - w0, _cpu() - c0
    n = sum(report.pairs.values())
    print(f"data audit: {root} ({n} pairs, {report.pairs_with_images} with images and masks), workers={args.workers}")
    print(f"  wall {wall:7.2f} s -> {n / wall:7.1f} pairs/s")
    print(f"  cpu  {cpu:7.2f} s -> {n / cpu:7.1f} pairs/s per core")
    print("  phases (wall s): " + ", ".join(f"{k} {v:.2f}" for k, v in report.seconds.items()))
    print(f"  duplicate search: {report.duplicate_search}")
    print(f"  findings: {len(report.findings)} on {report.flagged_pairs} pairs")


if __name__ == "__main__":
    main()
