"""``make bench``: run the benchmarks one after another and print their figures.

Default: the quick ones (minutes on 2 cores) — the matmul peak, caption metrics, METEOR on a LEVIR-CC-size split,
`changecap compare`'s bootstrap and randomisation on that split, SynthCC generation, the data audit on SynthCC
small, KV-cached vs naive decoding, model speed (paper config with random weights and the CPU config, against the
official algorithm, as % of the peak), CPU training throughput, the data loader against one GPU's demand (it
generates 2,000 SynthCC pairs of 256 px once and packs them). ``--quality`` adds benchmark (a), HiSem vs the plain
baseline vs the two ablations on SynthCC (3 seeds × 4 variants, about an hour on 2 cores). Each benchmark is a
script of its own in this folder; run one directly for its options (``--help``).

Usage: ``python benchmarks/run_all.py [--quality] [--only NAME ...] [--out bench_out]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quality", action="store_true", help="also run benchmark (a) (about an hour on 2 cores)")
    p.add_argument("--only", nargs="+", help="run only these (names below)")
    p.add_argument("--out", default="bench_out", help="where benchmarks that need data or write files work")
    args = p.parse_args(argv)
    out = Path(args.out)
    data = out / "synthcc_small_seed0"
    benches: dict[str, list[str]] = {
        "peak": ["bench_peak.py"],
        "caption_metrics": ["bench_caption_metrics.py", "--meteor"],
        "meteor": ["bench_meteor.py"],
        "compare": ["bench_compare.py", "--meteor"],
        "synth": ["bench_synth.py"],
        "audit": ["bench_audit.py", "--data", str(data)],
        "decoding": ["bench_decoding.py"],
        "model_speed": ["bench_model_speed.py", "--official", "--bf16-cast", "--json", str(out / "model_speed.json")],
        "train_speed": [
            "bench_train_speed.py",
            str(REPO / "configs/hisem_synthcc_cpu_scratch.yaml"),
            "--set",
            f"data.root={data}",
        ],
        "loader": ["bench_loader.py", "--out", str(out / "loader"), "--json", str(out / "loader.json")],
    }
    if args.quality:
        benches["quality"] = ["bench_quality.py", "--out", str(out / "quality")]
    names = args.only or list(benches)
    unknown = [n for n in names if n not in benches]
    if unknown:
        print(f"error: unknown benchmark(s) {unknown}; choose from {sorted(benches)}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    if {"train_speed", "audit"} & set(names) and not (data / "LevirCCcaptions.json").exists():
        from changecap.synth import generate_synthcc

        generate_synthcc(data, preset="small", seed=0, progress=True)
    failed = []
    for name in names:
        print(f"\n===== {name} =====", flush=True)
        t0 = time.time()
        rc = subprocess.call([sys.executable, str(HERE / benches[name][0]), *benches[name][1:]])
        print(f"----- {name}: exit {rc}, {time.time() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
