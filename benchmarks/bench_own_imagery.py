"""Caption-your-own-imagery benchmarks: (a) scene throughput and peak memory on synthetic GeoTIFF pairs of growing
size (memory must not grow with the scene), (b) the web API's latency and throughput under 1, 4 and 16 concurrent
clients (loopback only, a bounded load generator), (c) onnxruntime vs PyTorch captioning at batch 1 and 16.

Each scene size runs in its own process so its peak resident set (``ru_maxrss``) is its own. Scenes are mosaics of
SynthCC cells (``changecap synth --geotiff``), made once under ``--out``.

Usage::

    python benchmarks/bench_own_imagery.py --model demo_out/run/best [--parts scene api onnx] [--sides 4096 16384]
        [--tile 128] [--threads 2] [--out bench_out/own_imagery] [--synthcc data/synthcc]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def scene_part(model: str, sides: list[int], tile: int, out: Path, threads: int) -> list[dict[str, Any]]:
    rows = []
    for side in sides:
        folder = out / f"scene_{side}"
        if not (folder / "after.tif").is_file():
            from changecap.synth.geotiff import write_geotiff_pair

            t0 = time.perf_counter()
            write_geotiff_pair(folder, grid=side // 128, size=128)
            print(f"  made the {side}² pair in {time.perf_counter() - t0:.0f} s", flush=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        cmd = [sys.executable, __file__, "--one-scene", str(folder), "--model", model, "--tile", str(tile),
               "--threads", str(threads)]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        res = json.loads(done.stdout.splitlines()[-1])
        res["side"] = side
        rows.append(res)
        print(f"  {side}²: {res['tiles']} tiles in {res['seconds']:.1f} s = {res['tiles_per_s']:.1f} tiles/s, "
              f"peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
    return rows


def one_scene(folder: Path, model: str, tile: int, threads: int) -> None:
    import shutil

    import torch

    from changecap.inference import ChangeCaptioner
    from changecap.inference.scene import SceneSettings, caption_tiles, record_settings, write_outputs

    torch.set_num_threads(threads)
    captioner = ChangeCaptioner.from_pretrained(model, device="cpu")
    out = folder / "run"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    settings = SceneSettings(str(folder / "before.tif"), str(folder / "after.tif"), model, tile, batch_size=16)
    record_settings(out, settings)
    t0 = time.perf_counter()
    n = sum(1 for _ in caption_tiles(captioner, settings, out, progress=False))
    write_outputs(settings, out, captioner.capabilities.change_mask)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tiles": n, "seconds": seconds, "tiles_per_s": n / seconds, "peak_rss_mb": peak}))


def api_part(model: str, requests_per_client: int = 20) -> list[dict[str, Any]]:
    import io

    import httpx
    import numpy as np
    import uvicorn
    from PIL import Image

    from changecap.inference import ChangeCaptioner
    from changecap.serve import create_app

    app = create_app(ChangeCaptioner.from_pretrained(model, device="cpu"), model)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=8766, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.05)
    rng = np.random.default_rng(0)
    pngs = []
    for _ in range(2):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    files = {"before": ("b.png", pngs[0], "image/png"), "after": ("a.png", pngs[1], "image/png")}
    rows = []
    with httpx.Client(base_url="http://127.0.0.1:8766", timeout=120) as client:
        client.post("/api/caption", files=files)  # warm-up
        for clients in (1, 4, 16):

            def one_client(_: int, client: Any = client) -> list[float]:
                lat = []
                for _ in range(requests_per_client):
                    t = time.perf_counter()
                    assert client.post("/api/caption", files=files).status_code == 200
                    lat.append(time.perf_counter() - t)
                return lat

            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=clients) as pool:
                lat = [x for xs in pool.map(one_client, range(clients)) for x in xs]
            wall = time.perf_counter() - t0
            q = statistics.quantiles(lat, n=20)
            rows.append({"clients": clients, "requests": len(lat), "p50_ms": 1000 * statistics.median(lat),
                         "p95_ms": 1000 * q[18], "requests_per_s": len(lat) / wall})  # fmt: skip
            print(f"  {clients:2d} client(s): p50 {rows[-1]['p50_ms']:.0f} ms, p95 {rows[-1]['p95_ms']:.0f} ms, "
                  f"{rows[-1]['requests_per_s']:.1f} req/s", flush=True)  # fmt: skip
    srv.should_exit = True
    return rows


def onnx_agreement(pt: Any, ort: Any, synthcc: Path) -> dict[str, Any]:
    """Greedy captions of both backends on every test pair of a SynthCC folder (LEVIR-MCI layout)."""
    before = sorted((synthcc / "images" / "test" / "A").iterdir())
    after = [synthcc / "images" / "test" / "B" / p.name for p in before]
    a = pt([str(p) for p in before], [str(p) for p in after], batch_size=32)
    b = ort([str(p) for p in before], [str(p) for p in after], batch_size=32)
    same = sum(x.tokens == y.tokens for x, y in zip(a, b, strict=True))
    print(f"  SynthCC test pairs with identical tokens: {same} of {len(a)}", flush=True)
    return {"pairs": len(a), "identical_tokens": same}


def onnx_part(model: str, out: Path, threads: int, repeats: int = 5) -> list[dict[str, Any]]:
    import torch

    from changecap.inference import ChangeCaptioner
    from changecap.inference.onnx_export import OnnxCaptioner, export_onnx

    torch.set_num_threads(threads)
    folder = export_onnx(model, out / "onnx")
    pt, ort = ChangeCaptioner.from_pretrained(model, device="cpu"), OnnxCaptioner(folder, threads=threads)
    size = pt.preprocess.image_size
    rows = []
    for batch in (1, 16):
        images = torch.randn(batch, 2, 3, size, size)
        same = [a.tokens for a in pt.caption_tensor(images)] == [b.tokens for b in ort.caption_tensor(images)]
        timing = {}
        for name, captioner in (("torch", pt), ("onnxruntime", ort)):
            captioner.caption_tensor(images)  # warm-up
            t0 = time.perf_counter()
            for _ in range(repeats):
                captioner.caption_tensor(images)
            timing[name] = batch * repeats / (time.perf_counter() - t0)
        rows.append({"batch": batch, "torch_pairs_per_s": timing["torch"], "ort_pairs_per_s": timing["onnxruntime"],
                     "ratio": timing["onnxruntime"] / timing["torch"], "same_tokens": same})  # fmt: skip
        print(f"  batch {batch:2d}: torch {timing['torch']:.1f} pairs/s, onnxruntime {timing['onnxruntime']:.1f} "
              f"pairs/s ({rows[-1]['ratio']:.2f}×), same tokens: {same}", flush=True)  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--parts", nargs="+", default=["scene", "api", "onnx"], choices=("scene", "api", "onnx"))
    p.add_argument("--sides", type=int, nargs="+", default=[4096, 16384])
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench_out/own_imagery")
    p.add_argument("--synthcc", help="(c): also compare both backends' captions on this SynthCC folder's test split")
    p.add_argument("--one-scene", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one_scene:
        one_scene(Path(args.one_scene), args.model, args.tile, args.threads)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    if "scene" in args.parts:
        print("(a) scene throughput and peak RSS", flush=True)
        results["scene"] = scene_part(args.model, args.sides, args.tile, out, args.threads)
    if "api" in args.parts:
        print("(b) web API under concurrent clients", flush=True)
        results["api"] = api_part(args.model)
    if "onnx" in args.parts:
        print("(c) onnxruntime vs PyTorch captioning", flush=True)
        results["onnx"] = onnx_part(args.model, out, args.threads)
        if args.synthcc:
            from changecap.inference import ChangeCaptioner
            from changecap.inference.onnx_export import OnnxCaptioner

            pt = ChangeCaptioner.from_pretrained(args.model, device="cpu")
            results["onnx_agreement"] = onnx_agreement(pt, OnnxCaptioner(out / "onnx"), Path(args.synthcc))
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
