"""SynthCC generation speed on one core (target: >= 50 pairs/s at 256 px including PNG writing).

Prints:

* end-to-end ``generate_synthcc`` throughput with ``workers=1`` (wall clock and process CPU time; on a shared
  machine the CPU figure is the one-core figure),
* the time per pair of each stage (layout, rendering of both images + mask + land-cover maps, PNG encoding of the
  three pair files and of the two land-cover maps, the scene captions of both images),
* the PNG encoder against Pillow's on the same tiles.

Usage: ``python benchmarks/bench_synth.py [--pairs 300] [--size 256] [--workers 1]``
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from changecap.synth import generate_synthcc
from changecap.synth.generate import render_pair
from changecap.synth.pngio import encode_png
from changecap.synth.scene import plan_pair
from changecap.synth.scene_captions import scene_record


def _stage_times(n: int, size: int) -> dict[str, float]:
    """Milliseconds per pair spent in each stage, over pairs 0..n-1 (half changed)."""
    t_plan = t_render = t_png = t_lc_png = t_scene = 0.0
    for i in range(n):
        t0 = time.perf_counter()
        plan_pair(0, i, i % 2 == 0)
        t1 = time.perf_counter()
        pair = render_pair(0, i, i % 2 == 0, size)  # includes a second layout; subtracted below
        t2 = time.perf_counter()
        for im in (pair.before, pair.after, np.repeat(pair.mask[..., None], 3, axis=2)):
            encode_png(im)
        t3 = time.perf_counter()
        for lc in pair.landcover:
            encode_png(lc)
        t4 = time.perf_counter()
        for k, date in enumerate("AB"):
            scene_record(pair.scene, date, pair.landcover[k], pair.shifts[k], np.random.default_rng([i, k]))
        t5 = time.perf_counter()
        t_plan += t1 - t0
        t_render += (t2 - t1) - (t1 - t0)
        t_png += t3 - t2
        t_lc_png += t4 - t3
        t_scene += t5 - t4
    return {
        "layout": 1e3 * t_plan / n,
        "render": 1e3 * t_render / n,
        "png (3 files)": 1e3 * t_png / n,
        "png (2 maps)": 1e3 * t_lc_png / n,
        "scene captions": 1e3 * t_scene / n,
    }


def _png_compare(size: int, n: int = 20) -> tuple[float, float, int, int]:
    tiles = [render_pair(1, i, True, size).after for i in range(n)]
    t0 = time.perf_counter()
    ours = sum(len(encode_png(t)) for t in tiles)
    t1 = time.perf_counter()
    pil = 0
    for t in tiles:
        buf = io.BytesIO()
        Image.fromarray(t).save(buf, format="PNG", compress_level=1)
        pil += len(buf.getvalue())
    t2 = time.perf_counter()
    return 1e3 * (t1 - t0) / n, 1e3 * (t2 - t1) / n, ours // n, pil // n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    generate_synthcc(tempfile.mkdtemp(), pairs=10, size=args.size, progress=False)  # warm-up (imports, caches)
    with tempfile.TemporaryDirectory() as tmp:
        w0, c0 = time.perf_counter(), time.process_time()
        root = generate_synthcc(Path(tmp) / "s", pairs=args.pairs, size=args.size, workers=args.workers, progress=False)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20
    print(f"SynthCC generation: {args.pairs} pairs of {args.size} px, workers={args.workers}")
    print(f"  wall  {wall:7.2f} s  -> {args.pairs / wall:7.1f} pairs/s")
    if args.workers == 1:
        print(f"  cpu   {cpu:7.2f} s  -> {args.pairs / cpu:7.1f} pairs/s (one core)")
    print(f"  disk  {mb:7.1f} MiB  ({1024 * mb / args.pairs:.0f} KiB per pair)")
    print("per-pair stage times (ms):")
    for k, v in _stage_times(min(100, args.pairs), args.size).items():
        print(f"  {k:14s} {v:6.2f}")
    ours, pil, ours_b, pil_b = _png_compare(args.size)
    print(
        f"PNG encoder per RGB tile: ours {ours:.2f} ms ({ours_b // 1024} KiB), Pillow level 1 {pil:.2f} ms "
        f"({pil_b // 1024} KiB)"
    )


if __name__ == "__main__":
    main()
