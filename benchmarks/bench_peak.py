"""The machine's matmul peak, fp32 and bf16: the yardstick every throughput in ``bench_model_speed.py`` is read
against (figures from different machines only compare as shares of their own peak).

GEMM shapes (M × K × N, M = tokens of a batch):

* ``vit-qkv`` / ``vit-mlp-up`` / ``vit-mlp-down``: a ViT-B/16 block at 224 px on a batch of 8 pairs (2 × 8 × 197 =
  3,152 tokens, width 768, MLP 3,072) — where the paper HiSem spends its encoder FLOPs;
* ``square-2048``: a large square product, usually the best case of the BLAS library;
* ``decoder``: the caption decoder's vocabulary projection at batch 64 (64 × 512 × 501), a small product;
* on CUDA also ``square-4096`` and ``square-8192``: a GPU reaches its peak only on products this large (one ViT
  GEMM above is some 20 µs on an H100, near the launch and synchronisation overhead).

Each product runs on plain tensors of the dtype (no autocast), as ``torch.matmul`` and as ``F.linear``, up to
``--repeat`` times each (within about 3 s) after a warm-up call, which pays the one-time costs (on CUDA the
context, cuBLAS handles and kernel selection); products that take under 10 ms are timed in groups, sized from a
second untimed call, so that timer resolution and the synchronisation after each group do not count. The figure is
the best time of either (the peak is what the hardware can do, not what a loaded machine did once). A product
slower than the budget is timed once, by its warm-up. FLOPs = 2·M·K·N. The peak of a dtype is the best over the
shapes. fp32 on CUDA is true fp32 (PyTorch's default leaves TF32 off for matmuls).

Usage: ``python benchmarks/bench_peak.py [--threads N] [--device cpu|cuda] [--repeat 10]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

SHAPES: dict[str, tuple[int, int, int]] = {
    "vit-qkv": (3152, 768, 2304),
    "vit-mlp-up": (3152, 768, 3072),
    "vit-mlp-down": (3152, 3072, 768),
    "square-2048": (2048, 2048, 2048),
    "decoder": (64, 512, 501),
}
CUDA_SHAPES: dict[str, tuple[int, int, int]] = {"square-4096": (4096, 4096, 4096), "square-8192": (8192, 8192, 8192)}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def gemm_flops_per_s(
    m: int, k: int, n: int, dtype: torch.dtype, device: torch.device, repeat: int, budget_s: float = 3.0
) -> float:
    """Best FLOP/s of ``[M, K] × [K, N]`` over ``repeat`` timed runs of each of ``torch.matmul`` and ``F.linear``
    (what ``nn.Linear`` runs; on CPUs without bf16 instructions PyTorch's bf16 ``F.linear`` goes through oneDNN
    and is some 10× faster than bf16 ``matmul``), fewer runs once ``budget_s`` seconds are spent on a kernel."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g).to(device=device, dtype=dtype)  # [M, K]
    w = torch.randn(n, k, generator=g).to(device=device, dtype=dtype)  # [N, K], nn.Linear's layout
    b = w.t().contiguous()  # [K, N]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = float("inf")
    for op in (lambda: torch.matmul(a, b), lambda: F.linear(a, w)):
        start = time.perf_counter()
        op()  # warm-up: pays the one-time costs
        sync()
        first = time.perf_counter() - start
        if first > budget_s:  # one product takes the whole budget: its time is the figure
            best = min(best, first)
            continue
        t0 = time.perf_counter()
        op()
        sync()
        once = time.perf_counter() - t0
        best = min(best, once)
        # products that take under ~10 ms are timed in groups so that timer resolution does not matter
        inner = max(1, int(0.01 / max(once, 1e-6)))
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(inner):
                op()
            sync()
            best = min(best, (time.perf_counter() - t0) / inner)
            if time.perf_counter() - start > budget_s:
                break
    return 2 * m * k * n / best


def measure_peak(
    precisions: list[str] | tuple[str, ...] = ("fp32", "bf16"),
    device: str = "cpu",
    repeat: int = 10,
    shapes: dict[str, tuple[int, int, int]] | None = None,
) -> dict[str, dict[str, float]]:
    """``{precision: {shape: GFLOP/s, ..., "peak": best}}`` on this machine with the current torch thread count;
    ``shapes`` (name: (M, K, N)) replaces the default set (``SHAPES``, and ``CUDA_SHAPES`` on a GPU)."""
    dev = torch.device(device)
    if shapes is None:
        shapes = {**SHAPES, **CUDA_SHAPES} if dev.type == "cuda" else SHAPES
    out: dict[str, dict[str, float]] = {}
    for precision in precisions:
        row = {name: gemm_flops_per_s(*shape, DTYPES[precision], dev, repeat) / 1e9 for name, shape in shapes.items()}
        row["peak"] = max(row.values())
        out[precision] = row
    return out


def cpu_flags() -> str:
    """The matrix extensions the CPU reports (AMX / AVX-512 bf16 make bf16 GEMMs fast)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
    return " ".join(f for f in wanted if f" {f}" in flags) or "none of avx2/avx512/amx"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print(f"error: --device {args.device}: CUDA is not available in this torch build or machine", file=sys.stderr)
        return 2
    result = measure_peak(args.precision, args.device, args.repeat)
    where = torch.cuda.get_device_name(args.device) if cuda else f"CPU ({cpu_flags()})"
    threads = torch.get_num_threads()
    print(f"matmul GFLOP/s on {where}, {threads} threads, torch {torch.__version__}, best of up to {args.repeat}")
    names = [*next(iter(result.values()))]
    print("| precision | " + " | ".join(names) + " |\n|" + "---|" * (len(names) + 1))
    for precision, row in result.items():
        print(f"| {precision} | " + " | ".join(f"{row[n]:.0f}" for n in names) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
