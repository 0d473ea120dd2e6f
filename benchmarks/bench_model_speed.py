"""Benchmark (b): training and inference throughput (pairs/s) and peak memory of a model, with random weights.

Models:

* ``paper``: the paper configuration (CLIP ViT-B/16 at 224 px, last 4 blocks trained, 3 BDAM layers, 8 experts,
  V = 501, 41 positions), randomly initialised — the cost of the real model without needing its weights;
* ``cpu``: the model of ``configs/hisem_synthcc_cpu_scratch.yaml`` (HiSem's random-init CPU config), V = 60,
  41 positions;
* ``plain-cpu``: the plain baseline of ``configs/plain_synthcc_cpu.yaml`` at the same sizes;
* ``dfm-cpu``, ``semantic-cc-cpu``, ``cd-cpu``: the models of the DFM, Semantic-CC and change-detection CPU configs
  (DFM with a random prior of the CD config's size), inference only: their training objectives need real masks,
  caption text and sentence embeddings, and ``bench_train_speed.py`` times their updates on real SynthCC batches.

Per model and precision (fp32, bf16 autocast, int8: ``ChangeCaptioner(precision="int8")``'s linear layers, CPU
captioning only):

* **train**: one optimiser update (``TrainingStep``: forward + HiSem objective + backward + Adam) on a batch of
  random images and 20-word captions, half the pairs routed to the changed path (ground-truth routing) — pairs/s;
* **infer**: image pair → caption (encoder, fusion, batched KV-cached greedy decoding; Semantic-CC also its mask, the
  change detector its mask only). Random weights rarely emit ``<END>``, so captions tend to run to the full
  ``max_length``: the figure is a lower bound on real throughput.

With ``--official`` the fp32 captioning is also timed the way the official code runs it (one pair at a time,
every decoding step re-reading the whole prefix, no KV cache; tokens checked equal to the batched ones; DFM, whose
code was not released, gets the same algorithm on its decoder, HiSem's design; Semantic-CC, whose released code runs
batch 1 only, and the change detector get batch 1 of the default path; outputs checked equal), with
``--bf16-cast`` bf16 captioning with the linear / convolution weights cast once (``ChangeCaptioner(precision=
"bf16")``; tokens checked equal to plain autocast), with ``--compile`` captioning with the encoder through
``torch.compile`` (``ChangeCaptioner(compile=True)``; tokens checked equal to eager), with ``--gelu-reference``
the CLIP encoders with transformers' own quick-GELU module instead of changecap's in-place one (the before of that
change; tokens checked equal), with ``--frozen-cache`` the training step with ``train.frozen_feature_cache_gb``'s
cache warm (what every epoch after the first runs: the frozen encoder blocks' outputs looked up, not computed;
its executed FLOPs are printed beside it), and with ``--optim fused
for-loop`` the training step with each Adam kernel (for-loop is PyTorch's CPU default, what the official code gets).

With ``--interleave`` (implied by ``--precision ... int8``) captioning in every asked precision is timed again
round-robin, one batch of each in turn ``--steps`` times, so that on a shared machine every precision sees the same
load; bf16 there is the weights cast once (what ``ChangeCaptioner(precision="bf16")`` runs). These rows give wall
pairs/s and pairs per CPU-second of the process (the work without the waits for a core), and the load average
before and after. ``--int8-alternatives`` adds to that round two other int8 paths for the same linear layers:
``torch.ao.quantization.quantize_dynamic`` (fbgemm, one activation scale per tensor; deprecated in PyTorch 2.13)
and torchao's ``Int8DynamicActivationInt8WeightConfig`` (when ``torchao`` imports).

Executed FLOPs per pair are counted once per model with ``torch.utils.flop_counter.FlopCounterMode`` (all ops and
the encoder's alone); every throughput is also printed as GFLOP/s and as a share of the matmul peak that
``bench_peak.py`` measures in the same run, at the same thread count (``--no-peak`` skips it).

Peak memory: each model runs in its own process; on CPU the figure is that process's peak resident set
(``ru_maxrss``, which includes the Python interpreter and torch, ≈ 0.3 GB), on CUDA the peak allocated tensor memory
of each phase. Timings are medians of ``--steps`` repetitions after ``--warmup`` untimed ones.

Usage::

    python benchmarks/bench_model_speed.py [--models paper cpu plain-cpu] [--precision fp32 bf16] [--steps 5]
        [--device cpu|cuda] [--train-batch N] [--infer-batch N] [--official] [--bf16-cast]
        [--compile] [--gelu-reference] [--frozen-cache] [--optim fused for-loop] [--threads N] [--no-peak]
        [--interleave] [--int8-alternatives] [--infer-only]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from flops import count_total_flops
from timing import median_seconds

REPO = Path(__file__).resolve().parents[1]
# (train, infer) batch on CPU; None: no training step here (bench_train_speed.py times those configs' updates on
# real SynthCC batches, which their objectives need: masks, caption text, sentence embeddings)
DEFAULT_BATCH = {"paper": (8, 8), "cpu": (32, 64), "plain-cpu": (32, 64), "dfm-cpu": (None, 64),
                 "semantic-cc-cpu": (None, 8), "cd-cpu": (None, 16)}  # fmt: skip
CUDA_BATCH = {"paper": (64, 64), "cpu": (256, 256), "plain-cpu": (256, 256), "dfm-cpu": (None, 256),
              "semantic-cc-cpu": (None, 64), "cd-cpu": (None, 128)}  # fmt: skip
CPU_CONFIGS = {"cpu": "hisem_synthcc_cpu_scratch.yaml", "plain-cpu": "plain_synthcc_cpu.yaml",
               "dfm-cpu": "dfm_synthcc_cpu_scratch.yaml", "semantic-cc-cpu": "semantic_cc_synthcc_cpu_scratch.yaml",
               "cd-cpu": "change_detection_synthcc_cpu.yaml"}  # fmt: skip


def build(name: str):  # -> (model, max_length)
    import yaml

    from changecap.data.vocab import Vocabulary
    from changecap.engine.model_setup import with_data_sizes
    from changecap.models import build_model, config_from_dict
    from changecap.models.hisem import paper_config

    if name == "paper":
        model, max_len = build_model(paper_config(vocab_size=501, pretrained=None)), 41
    else:
        section = yaml.safe_load((REPO / "configs" / CPU_CONFIGS[name]).read_text())["model"]
        if name == "dfm-cpu":  # a random prior of the CD config's size instead of a trained model directory
            cd = yaml.safe_load((REPO / "configs" / CPU_CONFIGS["cd-cpu"]).read_text())["model"]
            section["prior"] = {**section["prior"], "model_dir": None,
                                "config": {k: v for k, v in cd.items() if k != "architecture"}}  # fmt: skip
        model, max_len = build_model(config_from_dict(with_data_sizes(section, 60, 41), prefix="model")), 41
    # a vocabulary of the decoder's size (4 special tokens first), which predict needs to give captions as text
    model.vocab = Vocabulary.build([[f"w{i}" for i in range(model.config.vocab_size - 4)]], threshold=0)
    return model, max_len


def image_size(model) -> int:  # noqa: ANN001
    """The pair size a model reads (the model contract's ``image_size``)."""
    return int(model.image_size)


def run_batched(model, pairs, max_len: int):  # noqa: ANN001, ANN201
    """The default path of ``ChangeCaptioner``: the model's one entry point ``predict`` (KV-cached batched greedy
    decoding; captions and masks from one encoder pass), with the model's own decoding limit (``max_len`` for the
    CPU and paper configs' caption decoders)."""
    return model.predict(pairs)


def comparable(out) -> list:  # noqa: ANN001
    """A :func:`run_batched` prediction as plain lists (token ids, mask pixels), to compare paths."""
    return [out.tokens, None if out.mask is None else out.mask.tolist()]


def run_official(model, pairs, max_len: int) -> list:  # noqa: ANN001
    """The reference path, one pair at a time. HiSem and plain: the official code's algorithm (every decoding step
    re-reads the whole prefix, no KV cache); DFM (no released code): the same algorithm on its decoder, HiSem's
    design; Semantic-CC (whose released code runs batch 1 only) and the change detector: batch 1 of the default path.
    Returns what :func:`comparable` gives for the batched path."""
    from changecap.models.parts.decoding import generate

    arch = model.config.architecture
    if arch in ("semantic_cc", "change_detection"):
        outs = [comparable(model.predict(pairs[i : i + 1])) for i in range(len(pairs))]
        tokens = None if outs[0][0] is None else [t for o in outs for t in o[0]]
        return [tokens, [m for o in outs for m in o[1]]]
    seqs: list[list[int]] = []
    for i in range(len(pairs)):
        if arch == "dfm":
            memory, _ = model.memory(pairs[i : i + 1])  # [1, N, D]
        else:
            f_before, f_after = model.encode(pairs[i : i + 1])  # [1, N, D] each
            memory, _ = model.fuse(f_before, f_after, None)
        seqs += generate(model.decoder, memory, max_len, 1, 0.0, False)
    return [[list(map(int, t)) for t in seqs], None]


def measure(name: str, args: argparse.Namespace) -> dict:
    """All figures of one model (runs in a process of its own)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from changecap.engine.config import OptimConfig
    from changecap.engine.objectives import GlobalCounts, StepInfo, TrainingStep, build_objective
    from changecap.engine.optim import build_optimizer
    from changecap.engine.precision import PRECISIONS, autocast
    from changecap.models import get_architecture
    from changecap.models.precision import cast_matmul_weights

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the engine does on CPU
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else None  # CPU work is synchronous
    torch.manual_seed(0)
    model, max_len = build(name)
    model.to(device)
    table = CUDA_BATCH if cuda else DEFAULT_BATCH
    train_b = (args.train_batch or table[name][0]) if table[name][0] and not args.infer_only else 0  # 0: no training
    infer_b = args.infer_batch or table[name][1]
    size = image_size(model)
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in model.named_children()}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out: dict = {
        "model": name,
        "device": str(device),
        "image_size": size,
        "train_batch": train_b,
        "infer_batch": infer_b,
        "parameters": counts,
        "trainable": trainable,
        "threads": torch.get_num_threads(),
        "train": {},
        "infer": {},
        "flops": {},
        "same_tokens": {},
        "peak_mem_gb": {},
    }

    g = torch.Generator().manual_seed(1)
    images = torch.randn(train_b or infer_b, 2, 3, size, size, generator=g).to(device)  # [B, 2, 3, S, S]
    if train_b:
        vocab = model.config.vocab_size
        target = torch.zeros(train_b, max_len, dtype=torch.long)
        target[:, 0] = 2
        target[:, 1:21] = torch.randint(4, vocab, (train_b, 20), generator=g)
        target[:, 21] = 3  # <START> 20 words <END> <NULL>…
        target = target.to(device)
        changed = (torch.arange(train_b) % 2 == 0).to(device)
        # the architecture's own objective with its default loss settings, at epoch 5 of a 50-epoch run
        objective = build_objective(get_architecture(model.config.architecture).objective, {}, None)
        step = TrainingStep(model, objective)
        batch = {"image": images, "target": target, "changed": changed}
        phase = objective.phases(5)[0]
        gc = GlobalCounts(objective.normalizers(batch, phase), world_size=1, grad_accum=1)

    encoder_name = type(model.encoder).__name__

    def count_flops(fn: Callable[[], None], encoder_fn: Callable[[], None] | None = None) -> dict[str, float] | None:
        """Executed FLOPs of one call: all, and the encoder's (no_grad instead of inference_mode for inference:
        the counter's module tracker cannot hook inference tensors). Where the tracker fails (it does inside
        transformers' BLIP-2 Q-Former under no_grad), the same per-op formulas are applied without it
        (:func:`count_total_flops`), the encoder's share from ``encoder_fn``, a call of the encoder alone."""
        try:
            with FlopCounterMode(display=False) as counter:
                fn()
        except Exception as e:  # noqa: BLE001 - a counting failure must not lose the timings
            if encoder_fn is None:
                print(f"  [{name}] FLOPs not counted ({type(e).__name__})", flush=True)
                return None
            print(f"  [{name}] FLOPs counted without the module tracker ({type(e).__name__} in it)", flush=True)
            return {"all": count_total_flops(fn), "encoder": count_total_flops(encoder_fn)}
        # keyed "CLIPPatchEncoder" when the encoder is called directly (captioning), "TrainingStep.model.encoder"
        # when through the training step
        counts = counter.get_flop_counts()
        keys = sorted((k for k in counts if k == encoder_name or k.endswith(".encoder")), key=lambda k: k.count("."))
        encoder = sum(counts[keys[0]].values()) if keys else 0
        return {"all": float(counter.get_total_flops()), "encoder": float(encoder)}

    def make_update(dtype: torch.dtype, impl: str) -> Callable[[], None]:
        """One optimiser update of the training step with the ``impl`` Adam kernel (the engine's default: fused)."""
        opt, _ = build_optimizer(model, OptimConfig(lr=1e-4, implementation=impl))

        def update() -> None:
            opt.zero_grad(set_to_none=True)
            terms = step(batch, StepInfo(5, phase, gc, device, dtype))
            terms.loss.backward()
            opt.step()

        return update

    for precision in args.precision:
        if precision == "int8":
            continue  # captioning only, timed in the interleaved round below
        dtype = PRECISIONS[precision]
        for impl in args.optim if train_b else []:
            model.train()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            update = make_update(dtype, impl)  # the engine's kernel (fused) first, the others for comparison

            if "train" not in out["flops"]:
                flops = count_flops(update)
                out["flops"]["train"] = flops and {k: v / train_b for k, v in flops.items()}  # per pair
            sec = median_seconds(update, args.steps, args.warmup, sync)
            key = precision if impl == args.optim[0] else f"{precision} {impl}"
            out["train"][key] = train_b / sec
            if cuda:
                out["peak_mem_gb"][f"train_{key}"] = torch.cuda.max_memory_allocated() / 2**30
            print(
                f"  [{name}] train {precision} ({impl} Adam): {train_b / sec:.2f} pairs/s (batch {train_b})", flush=True
            )

        encoder = getattr(model, "encoder", None)
        if train_b and args.frozen_cache and getattr(encoder, "frozen_blocks", 0):
            # the step from the second epoch on: the frozen blocks' outputs of these images come from the cache
            model.train()
            cached_update = make_update(dtype, args.optim[0])
            cache = encoder.enable_prefix_cache(16 * 2**30)
            cached_update()  # the first sight of the batch fills the cache
            executed = count_flops(cached_update)
            sec = median_seconds(cached_update, args.steps, args.warmup, sync)
            encoder.disable_prefix_cache()
            out["train"][f"{precision} frozen cache"] = train_b / sec
            if executed and "train_cached" not in out["flops"]:
                out["flops"]["train_cached"] = {k: v / train_b for k, v in executed.items()}  # per pair
            print(
                f"  [{name}] train {precision} (frozen-feature cache warm, {len(cache)} images): "
                f"{train_b / sec:.2f} pairs/s"
                + (f", executing {executed['all'] / train_b / 1e9:.2f} GFLOP per pair" if executed else ""),
                flush=True,
            )

        model.eval()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        n = len(images)
        pairs = images[:infer_b] if infer_b <= n else images.repeat(-(-infer_b // n), 1, 1, 1, 1)[:infer_b]

        def infer(dtype=dtype, pairs=pairs) -> None:
            with torch.inference_mode(), autocast(device, dtype):
                run_batched(model, pairs, max_len)

        if "infer" not in out["flops"]:

            def infer_counted(dtype=dtype, pairs=pairs) -> None:
                with torch.no_grad(), autocast(device, dtype):
                    run_batched(model, pairs, max_len)

            def encoder_counted(dtype=dtype, pairs=pairs) -> None:  # Semantic-CC's encoder reads the pairs as they are
                with torch.no_grad(), autocast(device, dtype):
                    model.encoder(pairs)

            is_scc = model.config.architecture == "semantic_cc"
            flops = count_flops(infer_counted, encoder_counted if is_scc else None)
            out["flops"]["infer"] = flops and {k: v / infer_b for k, v in flops.items()}  # per pair
        sec = median_seconds(infer, max(2, args.steps // 2), 1, sync)
        out["infer"][precision] = infer_b / sec
        if cuda:
            out["peak_mem_gb"][f"infer_{precision}"] = torch.cuda.max_memory_allocated() / 2**30
        print(
            f"  [{name}] infer {precision}: {infer_b / sec:.2f} pairs/s (batch {infer_b}, at most {max_len} steps)",
            flush=True,
        )
        eager_outputs: list | None = None  # the default path's outputs, computed once for every variant below

        def time_variant(variant, key: str, same_key: str, label: str, dtype=dtype, pairs=pairs) -> None:  # noqa: ANN001
            """Time captioning with ``variant`` (a changed copy of the model) beside the default path, whose outputs
            it must give; its first call comes after the default path's (for a compiled copy it compiles)."""
            nonlocal eager_outputs

            def run() -> list:
                with torch.inference_mode(), autocast(device, dtype):
                    return comparable(run_batched(variant, pairs, max_len))

            if eager_outputs is None:
                with torch.inference_mode(), autocast(device, dtype):
                    eager_outputs = comparable(run_batched(model, pairs, max_len))
            same = eager_outputs == run()
            sec = median_seconds(run, max(2, args.steps // 2), 1, sync)
            out["infer"][key] = infer_b / sec
            out["same_tokens"][same_key] = same
            print(f"  [{name}] infer {label}: {infer_b / sec:.2f} pairs/s (same tokens: {same})", flush=True)

        if precision == "bf16" and args.bf16_cast:
            # the weights cast once (ChangeCaptioner(precision="bf16")): must give autocast's tokens exactly
            cast_model = copy.deepcopy(model)
            cast_matmul_weights(cast_model)
            time_variant(cast_model, "bf16 cast", "bf16 cast vs bf16 autocast", "bf16, weights cast once")
            del cast_model
        if args.gelu_reference:
            # before/after of the in-place quick-GELU: the same model with transformers' own activation module
            from transformers.activations import QuickGELUActivation

            from changecap.models.parts.clip_encoder import QuickGELU

            ref_model = copy.deepcopy(model)
            swapped = 0
            for module in ref_model.modules():
                if isinstance(getattr(module, "activation_fn", None), QuickGELU):
                    module.activation_fn = QuickGELUActivation()
                    swapped += 1
            time_variant(ref_model, f"{precision} transformers-gelu",
                         f"{precision} transformers' quick-GELU vs in-place",
                         f"{precision}, transformers' quick-GELU ({swapped} blocks)")  # fmt: skip
            del ref_model
        if args.compile:
            # the encoder through torch.compile (inductor), as ChangeCaptioner(compile=True) runs it
            from changecap.models.compiling import compile_with_fallback

            compiled_model = copy.deepcopy(model)
            compile_with_fallback(compiled_model.compile_target, "the encoder")
            time_variant(compiled_model, f"{precision} compiled", f"{precision} compiled vs eager",
                         f"{precision}, encoder compiled")  # fmt: skip
            del compiled_model
        if precision == "fp32" and args.official:
            # the reference: one pair at a time (HiSem, plain, DFM: every step re-reads the whole prefix, no KV cache)
            def official(pairs=pairs) -> list:
                with torch.inference_mode():
                    return run_official(model, pairs, max_len)

            with torch.inference_mode():
                batched = comparable(run_batched(model, pairs, max_len))
            same = official() == batched
            sec = median_seconds(official, max(1, args.steps // 2), 0, sync)
            out["infer"]["fp32 official"] = infer_b / sec
            out["same_tokens"]["official vs batched fp32"] = same
            print(f"  [{name}] infer fp32, official / batch-1 reference: {infer_b / sec:.2f} pairs/s (same: {same})")
    if args.interleave or "int8" in args.precision:
        model.eval()
        n = len(images)
        pairs = images[:infer_b] if infer_b <= n else images.repeat(-(-infer_b // n), 1, 1, 1, 1)[:infer_b]
        interleaved(model, pairs, max_len, device, args, out)
    if not cuda:
        out["peak_mem_gb"]["process_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def int8_alternatives(model, int8_model) -> dict:  # noqa: ANN001
    """The same linear layers as ``int8_model`` quantised by torch.ao's ``quantize_dynamic`` and by torchao (when
    it imports): ``{label: model}``."""
    import warnings

    import torch

    from changecap.models.precision import Int8Linear

    names = {k for k, m in int8_model.named_modules() if isinstance(m, Int8Linear)}
    variants = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation warnings
        from torch.ao.quantization import quantize_dynamic

        variants["torch.ao"] = quantize_dynamic(copy.deepcopy(model), names, dtype=torch.qint8)
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        print("  torchao does not import: its int8 path is not timed", flush=True)
        return variants
    tao = copy.deepcopy(model)
    quantize_(tao, Int8DynamicActivationInt8WeightConfig(), filter_fn=lambda _m, fqn: fqn in names)
    variants["torchao"] = tao
    return variants


def interleaved(model, pairs, max_len: int, device, args: argparse.Namespace, out: dict) -> None:  # noqa: ANN001
    """Captioning in every asked precision (and the int8 alternatives) timed round-robin: wall and CPU seconds."""
    import torch

    from changecap.models.precision import cast_matmul_weights, quantize_linear_layers

    variants: dict[str, tuple] = {}  # key → (model, autocast dtype or None)
    for precision in args.precision:
        if precision == "fp32":
            variants["fp32"] = (model, None)
        elif precision == "bf16":
            cast = copy.deepcopy(model)
            cast_matmul_weights(cast)
            variants["bf16"] = (cast, torch.bfloat16)
        else:
            q = copy.deepcopy(model)
            layers = quantize_linear_layers(q)
            print(f"  [{model.config.architecture}] int8: {layers} linear layers quantised", flush=True)
            variants["int8"] = (q, None)
            if args.int8_alternatives:
                for label, alt in int8_alternatives(model, q).items():
                    variants[f"int8 {label}"] = (alt, None)

    def run(key: str) -> list:
        variant, dtype = variants[key]
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=bool(dtype)):
            return comparable(run_batched(variant, pairs, max_len))

    outputs = {key: run(key) for key in variants}  # warm-up, and the outputs to compare with fp32
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    load_before = os.getloadavg()[0]
    for _ in range(args.steps):
        for key in variants:
            w0, c0 = time.perf_counter(), time.process_time()
            run(key)
            wall[key].append(time.perf_counter() - w0)
            cpu[key].append(time.process_time() - c0)
    out["load"] = [load_before, os.getloadavg()[0]]
    b = len(pairs)
    for key in variants:
        prec, _, label = key.partition(" ")
        suffix = f"{label}, interleaved" if label else "interleaved"
        out["infer"][f"{prec} {suffix}"] = b / statistics.median(wall[key])
        out["infer"][f"{prec} {suffix} CPU time"] = b / statistics.median(cpu[key])
        ref = outputs.get("fp32")
        got = outputs[key]
        if key != "fp32" and ref and isinstance(ref[0], list) and ref[0] and isinstance(ref[0][0], int):  # tokens
            same = sum(sum(x == y for x, y in zip(a, c)) for a, c in zip(ref, got))
            out["same_tokens"][f"{key} vs fp32 (token positions)"] = same / max(1, sum(len(a) for a in ref))
        elif key != "fp32" and ref and len(ref) == 2 and ref[1] is not None:  # [captions or None, masks]
            import numpy as np

            a, c = np.asarray(ref[1]) > 0, np.asarray(got[1]) > 0
            union = int(np.logical_or(a, c).sum())
            out["same_tokens"][f"{key} vs fp32 (mask IoU)"] = 1.0 if union == 0 else int((a & c).sum()) / union
            if ref[0] is not None:
                equal = sum(x == y for x, y in zip(ref[0], got[0])) / len(ref[0])
                out["same_tokens"][f"{key} vs fp32 (captions equal)"] = equal
        print(f"  [{model.config.architecture}] infer {key}, interleaved: {b / statistics.median(wall[key]):.2f} "
              f"pairs/s wall, {b / statistics.median(cpu[key]):.2f} per CPU-second", flush=True)  # fmt: skip
    print(f"  load average {load_before:.1f} before, {out['load'][1]:.1f} after the interleaved round", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["paper", "cpu", "plain-cpu"], choices=list(DEFAULT_BATCH))
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "int8"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--train-batch", type=int, default=None)
    p.add_argument("--infer-batch", type=int, default=None)
    p.add_argument(
        "--optim",
        nargs="+",
        default=["fused"],
        choices=["fused", "foreach", "for-loop"],
        help="Adam kernels to time the training step with (the first is the engine's default, fused)",
    )
    p.add_argument("--official", action="store_true", help="also time the official batch-1, no-cache captioning")
    p.add_argument("--bf16-cast", action="store_true", help="also time bf16 with the weights cast once")
    p.add_argument("--compile", action="store_true", help="also time captioning with the encoder compiled")
    p.add_argument(
        "--gelu-reference",
        action="store_true",
        help="also time captioning with transformers' quick-GELU module instead of the in-place one (before/after)",
    )
    p.add_argument(
        "--frozen-cache",
        action="store_true",
        help="also time the training step with train.frozen_feature_cache_gb's cache warm (the epochs after the first)",
    )
    p.add_argument("--interleave", action="store_true",
                   help="also time captioning round-robin across the precisions (implied by int8)")
    p.add_argument("--int8-alternatives", action="store_true",
                   help="in the interleaved round, also torch.ao's quantize_dynamic and torchao's int8 paths")
    p.add_argument("--infer-only", action="store_true", help="captioning only, no training step")
    p.add_argument("--no-peak", action="store_true", help="skip the matmul peak (no %% of peak columns)")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.one:  # worker: one model, figures as JSON on the last stdout line
        print(json.dumps(measure(args.one, args)), flush=True)
        return 0
    results = []
    for name in args.models:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--device",
            args.device,
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--precision",
            *args.precision,
            "--optim",
            *args.optim,
            *(["--official"] if args.official else []),
            *(["--bf16-cast"] if args.bf16_cast else []),
            *(["--compile"] if args.compile else []),
            *(["--gelu-reference"] if args.gelu_reference else []),
            *(["--frozen-cache"] if args.frozen_cache else []),
            *(["--interleave"] if args.interleave else []),
            *(["--int8-alternatives"] if args.int8_alternatives else []),
            *(["--infer-only"] if args.infer_only else []),
        ]
        for flag, val in (
            ("--threads", args.threads),
            ("--train-batch", args.train_batch),
            ("--infer-batch", args.infer_batch),
        ):
            if val:
                cmd += [flag, str(val)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            print(f"{name}: failed (exit {proc.returncode})", file=sys.stderr)
            return 1
        print("\n".join(lines[:-1]))
        results.append(json.loads(lines[-1]))

    peak: dict[str, float] = {}
    if not args.no_peak:  # measured now, with the models' thread count, so every figure is a share of this machine
        import torch
        from bench_peak import measure_peak

        if args.threads:
            torch.set_num_threads(args.threads)
        floats = [p for p in args.precision if p != "int8"]  # no int8 peak: its rows show pairs/s only
        peak = {k: v["peak"] * 1e9 for k, v in measure_peak(floats, args.device, repeat=5).items()}
        print("matmul peak: " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peak.items()))

    from bench_peak import cpu_flags

    print(f"\nmodel speed on {args.device} ({results[0]['threads']} threads), medians of {args.steps}; CPU: "
          f"{cpu_flags()}")  # fmt: skip
    print("pairs/s; GFLOP/s (all ops of the default batched path, counted by FlopCounterMode) and its % of the")
    print("matmul peak of the same precision (for the official path: the same useful FLOPs, not its extra work; for")
    print("the frozen-feature cache: the fewer FLOPs it executes, so compare its pairs/s for the speed-up);")
    print("enc = the encoder's FLOPs alone as % of that peak")
    head = ["model", "params", "trainable", "batch t/i", "phase", *args.precision]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in results:
        total = sum(r["parameters"].values())
        first = [
            r["model"],
            f"{total / 1e6:.1f} M",
            f"{r['trainable'] / 1e6:.1f} M",
            f"{r['train_batch'] or '—'}/{r['infer_batch']}",
        ]
        rows: list[tuple[str, str]] = []
        for phase in ("train", "infer"):  # the default way first, then the others (Adam kernels, official, cast)
            if not r[phase]:
                continue  # no training step for this model here
            extras = dict.fromkeys(k.split(" ", 1)[1] for k in r[phase] if " " in k)
            rows += [(phase, ""), *((phase, e) for e in extras)]
        for n, (phase, impl) in enumerate(rows):
            cells = []
            for prec in args.precision:
                rate = r[phase].get(f"{prec} {impl}" if impl else prec)
                if rate is None:
                    cells.append("—")
                    continue
                fl = r["flops"].get("train_cached" if impl == "frozen cache" else phase)
                cell = f"{rate:.2f} pairs/s"
                if fl:
                    cell += f", {rate * fl['all'] / 1e9:.1f} GFLOP/s"
                if fl and prec in peak:
                    share, enc = (100 * rate * fl[k] / peak[prec] for k in ("all", "encoder"))
                    cell += f", {share:.0f} % (enc {enc:.0f} %)"
                cells.append(cell)
            if not impl:
                label = phase
            elif phase == "train" and impl != "frozen cache":
                label = f"train ({impl} Adam)"
            else:
                label = f"{phase} ({impl})"
            lead = first if n == 0 else [""] * len(first)
            print("| " + " | ".join([*lead, label, *cells]) + " |")
    for r in results:
        mem = ", ".join(f"{k} {v:.2f}" for k, v in r["peak_mem_gb"].items())
        per_pair = ", ".join(
            f"{ph} {r['flops'][ph]['all'] / 1e9:.2f} (encoder {r['flops'][ph]['encoder'] / 1e9:.2f})"
            for ph in ("train", "train_cached", "infer")
            if r["flops"].get(ph)
        )
        print(f"{r['model']}: GFLOP per pair {per_pair}; peak memory GB: {mem}")
        if r.get("load"):
            print(f"{r['model']}: load average {r['load'][0]:.1f} before, {r['load'][1]:.1f} after the interleaved "
                  "round")  # fmt: skip
        for k, v in r["same_tokens"].items():
            if k.endswith(("(token positions)", "(mask IoU)", "(captions equal)")):
                print(f"{r['model']}: {k}: {100 * v:.1f} % (random weights: a rough check only)")
    if args.json:
        Path(args.json).write_text(json.dumps({"peak_flops": peak, "models": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
