"""Training throughput of a config: data loading, one optimiser update (fp32 vs bf16), validation decoding.

Builds the real :class:`~changecap.engine.Trainer` from a YAML config (data, vocabulary, model, optimiser), then
times separately:

* ``data``: samples/s of the training DataLoader (``data.num_workers`` workers), i.e. PNG decoding + resizing;
* ``update``: one optimiser update (forward + backward + Adam) on batches already in memory, for each precision
  asked for; the first ``--warmup`` updates are not timed;
* ``decode``: batched greedy captioning (``model.caption``; ``model.predict`` for a change detector) of one
  validation batch.

Each figure also comes as executed GFLOP/s (``FlopCounterMode``, counted once) and as a share of the matmul peak
that ``bench_peak.py`` measures in the same run at the same thread count (``--no-peak`` skips it), so every
architecture's CPU config gets the same yardstick as ``bench_model_speed.py``.

From those it estimates the wall time of an epoch and of the whole run (updates + validation passes; loading
overlaps compute only with ``num_workers > 0``). Figures are medians (and minima) of ``--steps`` repetitions;
estimates use the medians.

Usage::

    python benchmarks/bench_train_speed.py configs/hisem_synthcc_cpu_scratch.yaml --set data.root=data/synthcc \
        [--steps 10] [--precision fp32 bf16] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from flops import count_total_flops
from torch.utils.flop_counter import FlopCounterMode


def timed(fn: Callable[[], object], steps: int, warmup: int) -> tuple[float, float]:
    """(median, min) seconds of ``steps`` calls after ``warmup`` untimed ones. On a shared machine the minimum is
    the better estimate of the intrinsic cost; the median is what a run will see under the current load."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def main(argv: list[str] | None = None) -> int:
    from changecap.cli.config_args import add_overrides_argument

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    add_overrides_argument(parser)
    parser.add_argument("--steps", type=int, default=10, help="timed repetitions per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-peak", action="store_true", help="skip the matmul peak (no %% of peak)")
    args = parser.parse_args(argv)

    from changecap.engine import Trainer, load_config
    from changecap.engine.precision import PRECISIONS

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, overrides=args.overrides)
    t = cfg.train
    with tempfile.TemporaryDirectory() as tmp:
        cfg.train.output_dir = str(Path(tmp) / "run")
        trainer = Trainer(cfg, resume=False)
        counts = trainer.model.parameter_counts() if hasattr(trainer.model, "parameter_counts") else {}
        print(
            f"config {args.config}: {len(trainer.train_set)} train items, {trainer.steps_in_epoch[0]} updates/epoch, "
            f"batch {t.batch_size}, vocab {len(trainer.vocab)}, max_length {trainer.max_length}, "
            f"torch threads {torch.get_num_threads()}"
        )
        if counts:
            print(f"parameters: {counts}")

        # ---- data loading
        phase_data = trainer.epoch_data(0)[0]  # the first phase of the first epoch
        phase_data.dataset.set_epoch(0)
        phase_data.sampler.set_epoch(0)
        it = iter(phase_data.loader)
        batches = [next(it) for _ in range(t.grad_accum)]  # first batch also starts the workers
        t0 = time.perf_counter()
        n = 0
        for _ in range(args.steps):
            batch = next(it)
            n += len(batch["image"])
        data_rate = n / (time.perf_counter() - t0)
        print(f"data: {data_rate:.1f} samples/s ({cfg.data.num_workers} workers)")

        # ---- executed FLOPs of one update and of decoding one validation batch (FlopCounterMode), and the peak
        with FlopCounterMode(display=False) as counter:
            trainer.update(batches, 0, phase_data.phase)
        update_flops = float(counter.get_total_flops())
        peak: dict[str, float] = {}
        if not args.no_peak:
            from bench_peak import measure_peak

            peak = {k: v["peak"] * 1e9 for k, v in measure_peak(args.precision, str(trainer.ctx.device), 5).items()}
            print("matmul peak: " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peak.items()))

        def share(flops: float, seconds: float, precision: str) -> str:
            rate = flops / seconds
            text = f"{rate / 1e9:.1f} GFLOP/s"
            return text + (f", {100 * rate / peak[precision]:.0f} % of peak" if precision in peak else "")

        # ---- one update per precision (the weights move, which does not change the cost)
        update_s: dict[str, float] = {}
        for precision in args.precision:
            trainer.update.autocast_dtype = PRECISIONS[precision]
            sec, best = timed(lambda: trainer.update(batches, 0, phase_data.phase), args.steps, args.warmup)
            update_s[precision] = sec
            print(
                f"update [{precision}]: median {sec * 1000:.0f} ms = {t.batch_size / sec:.1f} samples/s "
                f"(min {best * 1000:.0f} ms); {update_flops / t.batch_size / 1e9:.2f} GFLOP/sample, "
                f"{share(update_flops, sec, precision)}"
            )

        # ---- validation decoding
        model = trainer.model.eval()
        images = batches[0]["image"][: t.val_batch_size].to(trainer.ctx.device)
        decode_s: dict[str, float] = {}
        for precision in args.precision:
            dtype = PRECISIONS[precision]

            def decode(dtype: torch.dtype | None = dtype, mode: Callable = torch.inference_mode) -> None:
                amp = torch.autocast(images.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
                with mode(), amp:  # as validation decodes: the model's one entry point
                    model.predict(images, max_length=t.val_max_length, beam_size=t.val_beam_size)

            # without FlopCounterMode's module tracker, which fails inside BLIP-2's Q-Former (Semantic-CC)
            decode_flops = count_total_flops(lambda: decode(mode=torch.no_grad))
            decode_s[precision] = timed(decode, max(3, args.steps // 3), 1)[0] / len(images)
            flops_text = (
                f"{decode_flops / len(images) / 1e9:.3f} GFLOP/pair, "
                f"{share(decode_flops, decode_s[precision] * len(images), precision)}"
            )
            print(
                f"decode [{precision}]: {decode_s[precision] * 1000:.1f} ms/pair (greedy, batch {len(images)}); "
                + flops_text
            )

        # ---- estimate
        for precision in args.precision:
            step = update_s[precision]
            load = t.batch_size / data_rate
            epoch = trainer.steps_in_epoch[0] * (max(step, load) if cfg.data.num_workers else step + load)
            vals = (t.epochs // t.val_every) if t.val_every else 0
            val = len(trainer.val_set) * (decode_s[precision] + 1 / data_rate)
            total = epoch * t.epochs + val * vals
            print(
                f"estimate [{precision}]: {epoch:.0f} s/epoch, {val:.0f} s/validation, "
                f"{total / 60:.1f} min for {t.epochs} epochs + {vals} validations"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
