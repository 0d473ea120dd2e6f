"""The training data loader alone — read, decode, resize, normalise, collate — against what one GPU would consume.

Data: the LEVIR-CC layout at 256 px. By default a SynthCC set of ``--pairs`` (2,000) pairs of ``--size`` (256) px,
generated once into ``--out`` (LEVIR-CC's own tiles are 256 px PNGs too); ``--data DIR`` reads another dataset in
the LEVIR-CC layout. The loader is the engine's own: ``configs/hisem_levircc.yaml``'s data section (the paper
HiSem: CLIP preprocessing to 224 px, one random reference per pair), its datasets (``engine.data.build_datasets``)
and the training phase's DataLoader (``engine.data.PhaseLoaders``: deterministic batch sampler, ``collate_pairs``),
iterated without a model, for each ``--workers`` count.

Reported per setting: pairs/s (wall, after the first batch, which pays the workers' start) and pairs/s per worker
(the main process when 0 workers). Since the machine may be shared, the 0-worker run also gives pairs per
CPU-second (this process's CPU time over the timed batches, ``getrusage``): the loader's cost on one core, whatever
else runs on the machine. The load average before and after is printed with the machine's core count.

Then the same with the dataset packed (``changecap data pack``, ``data.packed``): at the native size (the loader
still resizes) and at the training size (``--size 224 --resize-mode clip``: it only copies rows, normalises and
collates); the samples are the same (tested in ``tests/data/test_packing.py``).

GPU demand (an estimate, not a measurement): the paper HiSem's executed FLOPs per training pair (counted here with
``flops.py`` on one update of the random-weight paper model at batch ``--flops-batch``, or ``--train-gflop``) at
``--mfu`` (40 %) of an H100's dense bf16 peak (989 TFLOP/s): pairs/s one GPU would take, and the loader workers (one
CPU core each, at the 0-worker run's pairs per CPU-second) it needs.

Usage::

    python benchmarks/bench_loader.py [--out bench_out/loader] [--pairs 2000] [--size 256] [--workers 0 1 2]
        [--batches 20] [--batch-size 32] [--data DIR] [--no-pack] [--train-gflop X] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
H100_BF16_DENSE_TFLOPS = 989.0


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def loader_rate(root: Path, workers: int, args: argparse.Namespace, packed: Path | None = None) -> dict[str, Any]:
    """Pairs/s of the engine's training loader (no model) with ``workers`` processes."""
    import torch

    from changecap.data.collate import collate_pairs
    from changecap.engine import Phase, load_config
    from changecap.engine.data import PhaseLoaders, build_datasets, build_vocabulary_for
    from changecap.engine.distributed import DistContext

    overrides = [f"data.root={root}", f"data.num_workers={workers}", f"train.batch_size={args.batch_size}",
                 "train.device=cpu", f"data.packed={packed or 'null'}"]  # fmt: skip
    config = load_config(REPO / "configs" / "hisem_levircc.yaml", overrides)
    vocab = build_vocabulary_for(config)
    train_set, _ = build_datasets(config, vocab)
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    data = PhaseLoaders({"train": train_set}, config, ctx, collate_pairs).get(Phase(), 0)
    data.dataset.set_epoch(0)  # type: ignore[attr-defined]
    data.sampler.set_epoch(0)
    wanted = min(args.batches, data.steps_per_epoch - 1)
    if wanted < 1:
        raise SystemExit(f"error: {root} has too few training pairs for two batches of {args.batch_size}")
    batches = iter(data.loader)
    shape = next(batches)["image"].shape  # the workers' start and their first batch are not timed
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    pairs = sum(len(next(batches)["name"]) for _ in range(wanted))
    wall = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    del batches
    rate = pairs / wall
    # without workers this process did all the work of the timed batches: pairs per CPU-second is the loader's
    # cost on one core, whatever else the machine runs (workers' CPU time cannot be split between batches)
    per_cpu = pairs / cpu if workers == 0 and cpu > 0 else None
    return {"workers": workers, "pairs": pairs, "wall_s": wall, "pairs_per_s": rate,
            "pairs_per_s_per_worker": rate / max(workers, 1), "pairs_per_cpu_s": per_cpu,
            "batch_shape": list(shape)}  # fmt: skip


def train_gflop_per_pair(batch: int) -> float:
    """Executed FLOPs of one training update of the random-weight paper HiSem, per pair (``flops.py``)."""
    import torch
    from bench_model_speed import build
    from flops import count_total_flops

    from changecap.engine.objectives import GlobalCounts, StepInfo, TrainingStep, build_objective
    from changecap.models import get_architecture

    torch.manual_seed(0)
    model, max_len = build("paper")
    objective = build_objective(get_architecture(model.config.architecture).objective, {}, None)
    step = TrainingStep(model.train(), objective)
    g = torch.Generator().manual_seed(1)
    target = torch.zeros(batch, max_len, dtype=torch.long)
    target[:, 0], target[:, 21] = 2, 3  # <START> 20 words <END> <NULL>…
    target[:, 1:21] = torch.randint(4, model.config.vocab_size, (batch, 20), generator=g)
    size = model.encoder.image_size
    inputs = {"image": torch.randn(batch, 2, 3, size, size, generator=g), "target": target,
              "changed": torch.arange(batch) % 2 == 0}  # fmt: skip
    phase = objective.phases(5)[0]
    counts = GlobalCounts(objective.normalizers(inputs, phase), world_size=1, grad_accum=1)

    def update() -> None:
        step(inputs, StepInfo(5, phase, counts, torch.device("cpu"), None)).loss.backward()

    return count_total_flops(update) / batch / 1e9


def dataset_root(args: argparse.Namespace) -> Path:
    """``--data``, or a SynthCC set of ``--pairs`` × ``--size`` px in ``--out`` (generated once)."""
    if args.data:
        return Path(args.data)
    from changecap.synth import generate_synthcc

    root = Path(args.out) / f"synthcc_{args.pairs}x{args.size}"
    captions = root / "LevirCCcaptions.json"
    if captions.is_file() and len(json.loads(captions.read_text())["images"]) == args.pairs:
        return root
    t0 = time.perf_counter()
    generate_synthcc(root, pairs=args.pairs, size=args.size, seed=0, workers=args.synth_workers, progress=True)
    print(f"generated {args.pairs} SynthCC pairs of {args.size} px in {time.perf_counter() - t0:.0f} s", flush=True)
    return root


def load_text() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (5 min {five:.2f}) on {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench_out/loader", help="where the generated set and the packs go")
    p.add_argument("--data", help="a dataset in the LEVIR-CC layout instead of a generated SynthCC set")
    p.add_argument("--pairs", type=int, default=2000)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--synth-workers", type=int, default=2)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts to time")
    p.add_argument("--batches", type=int, default=20, help="timed batches per setting (after one untimed)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-pack", action="store_true", help="skip the packed format")
    p.add_argument("--train-gflop", type=float, help="the paper HiSem's GFLOP per training pair (default: counted)")
    p.add_argument("--flops-batch", type=int, default=2, help="batch of the update whose FLOPs are counted")
    p.add_argument("--mfu", type=float, default=0.40, help="share of the H100's bf16 peak assumed for training")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # the loader's arithmetic is per sample; one thread per process, as in workers
    root = dataset_root(args)
    print(f"loader of configs/hisem_levircc.yaml (224 px, clip) on {root}, batch {args.batch_size}; {load_text()}")
    result: dict[str, Any] = {"data": str(root), "batch_size": args.batch_size, "cpu_count": os.cpu_count(),
                              "load_before": os.getloadavg(), "runs": []}  # fmt: skip
    variants: list[tuple[str, Path | None]] = [("image files", None)]
    if not args.no_pack:
        from changecap.data.packing import write_pack

        for label, size in (("packed, 256 px native", None), ("packed, 224 px (training size)", 224)):
            folder = Path(args.out) / f"pack_{root.name}_{size or 'native'}"
            t0 = time.perf_counter()
            summary = write_pack(root, "levir-cc", folder, size=size, resize_mode="clip", progress=False)
            took = time.perf_counter() - t0
            print(f"{summary.format_text()} in {took:.0f} s ({sum(summary.pairs.values()) / took:.0f} pairs/s)")
            variants.append((label, folder))
    for label, packed in variants:
        for workers in args.workers:
            run = {"variant": label, **loader_rate(root, workers, args, packed)}
            result["runs"].append(run)
            per_cpu = f", {run['pairs_per_cpu_s']:.0f} pairs per CPU-s" if run["pairs_per_cpu_s"] else ""
            print(f"  {label}, {workers} worker(s): {run['pairs_per_s']:.0f} pairs/s "
                  f"({run['pairs_per_s_per_worker']:.0f} per worker){per_cpu}", flush=True)  # fmt: skip
    result["load_after"] = os.getloadavg()

    gflop = args.train_gflop or train_gflop_per_pair(args.flops_batch)
    demand = args.mfu * H100_BF16_DENSE_TFLOPS * 1e3 / gflop  # pairs/s
    result["gpu_demand"] = {"train_gflop_per_pair": gflop, "mfu": args.mfu, "pairs_per_s": demand}
    print(f"\n{load_text()} after; machine: {os.cpu_count()} cores")
    print(f"GPU demand (estimate): paper HiSem training, {gflop:.1f} GFLOP per pair at {100 * args.mfu:.0f} % of an "
          f"H100's {H100_BF16_DENSE_TFLOPS:.0f} TFLOP/s dense bf16 = {demand:.0f} pairs/s")  # fmt: skip
    base = {r["workers"]: r for r in result["runs"] if r["variant"] == "image files"}
    head = ["data", "workers", "pairs/s", "per worker", "per worker × image files"]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in result["runs"]:
        ref = base.get(r["workers"])
        r["ratio_per_worker"] = r["pairs_per_s_per_worker"] / ref["pairs_per_s_per_worker"] if ref else None
        cells = [r["variant"], r["workers"], f"{r['pairs_per_s']:.0f}", f"{r['pairs_per_s_per_worker']:.0f}",
                 "—" if r["ratio_per_worker"] is None else f"{r['ratio_per_worker']:.2f}×"]  # fmt: skip
        print("| " + " | ".join(map(str, cells)) + " |")
    print("\nper core (0 workers, CPU time): ")
    one_core = {r["variant"]: r["pairs_per_cpu_s"] for r in result["runs"] if r["pairs_per_cpu_s"]}
    files = one_core.get("image files")
    for variant, rate in one_core.items():
        cores = math.ceil(demand / rate)
        result.setdefault("per_core", {})[variant] = {"pairs_per_cpu_s": rate, "cores_for_h100": cores,
                                                      "ratio": rate / files if files else None}  # fmt: skip
        print(f"- {variant}: {rate:.0f} pairs per CPU-second"
              + (f" ({rate / files:.2f}× the image files)" if files and variant != "image files" else "")
              + f"; one H100 needs {cores} loader cores")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
