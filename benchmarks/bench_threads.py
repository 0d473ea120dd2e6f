"""``--threads``: wall time of whole ``changecap caption --pairs`` commands at each thread count, as a user runs them.

Each way is a fresh process (``python -m changecap caption --pairs PAIRS --model MODEL --threads N``, and with
``--onnx FOLDER`` the same through ``--backend onnx``); the ways run round-robin ``--repeat`` times so that every one
sees the same machine load, and ``default`` runs without ``--threads`` (the idle CPUs at start, at most torch's
default). Printed: the median wall seconds of each way and the load average before and after.

Usage::

    python benchmarks/bench_threads.py PAIRS_DIR MODEL_DIR [--onnx EXPORTED_DIR] [--threads 1 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pairs")
    p.add_argument("model")
    p.add_argument("--onnx", help="an exported folder of the same model (changecap export onnx)")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    out = Path(tempfile.mkdtemp()) / "captions.jsonl"  # replaced by every run
    base = [sys.executable, "-m", "changecap", "caption", "--pairs", args.pairs, "--no-progress", "--out", str(out)]
    backends = {"torch": ["--model", args.model]}
    if args.onnx:
        backends["onnx"] = ["--model", args.onnx, "--backend", "onnx"]
    ways = {
        f"{backend} {label}": [*base, *extra, *opts]
        for backend, extra in backends.items()
        for label, opts in [*((f"--threads {n}", ["--threads", str(n)]) for n in args.threads), ("default", [])]
    }
    times: dict[str, list[float]] = {k: [] for k in ways}
    load = os.getloadavg()[0]
    for _ in range(args.repeat):
        for key, cmd in ways.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[key].append(time.perf_counter() - t0)
    print(f"{len(os.listdir(os.path.join(args.pairs, 'A')))} pairs, {os.cpu_count()} CPUs, medians of {args.repeat}, "
          f"load average {load:.1f} before and {os.getloadavg()[0]:.1f} after")  # fmt: skip
    print("| way | wall seconds (whole command) |\n|---|---|")
    for key, t in times.items():
        print(f"| {key} | {statistics.median(t):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
