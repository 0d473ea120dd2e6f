"""GPU readiness check: every registered system trains, saves, resumes and predicts on the device, in one command.

On a generated SynthCC set (160 pairs of 128 px; ``--tiny``: 24 of 64 px), for every architecture of the registry
at the size of its CPU config (``configs/<name>_synthcc_cpu_scratch.yaml`` where the system has that random-init
form, else ``configs/<name>_synthcc_cpu.yaml``; ``--tiny``: a few-thousand-parameter version of it):

* **train**: ``--updates`` (20) bf16 updates through the real trainer (``changecap.engine.Trainer``: data loader,
  objective, autocast, clipping, fused Adam), losses finite; ``train.deterministic`` is on, so that a resumed run
  can be compared bit for bit where the device has deterministic kernels;
* **save and resume**: a second run stopped after half the updates (the trainer checkpoints it) and resumed to the
  end; its saved weights against the uninterrupted run's: bit-exact, or the largest difference (on CPU it must be
  bit-exact; on CUDA, kernels without a deterministic version may change the last bits);
* **predict**: the saved model folder through ``ChangeCaptioner`` (bf16) on the test pairs, then fp32 on the
  device against fp32 on the CPU for the same weights: the share of the CPU's token positions the device
  reproduces and of captions equal, or of mask pixels equal for models with a change mask;
* **peak memory** of the device per system (``torch.cuda.max_memory_allocated``, training and prediction apart).

DFM's frozen change-detection prior is the change detector this check has just trained (``--systems dfm`` trains
it too). Semantic-CC's Q-Former and
LLM are randomly initialised, as in its CPU config. Besides the systems:

* **throughput**: the paper HiSem (``bench_model_speed.py``'s ``paper`` model, random weights; ``--tiny``: the CPU
  HiSem) trains and captions in bf16; its pairs/s times its executed FLOPs per pair as a share of the device's
  bf16 matmul peak, measured in the same run (``bench_peak.py``);
* **DDP**: the HiSem run again inside a process group of one that this script initialises (``torch.distributed``
  with a file store; NCCL on CUDA, gloo on CPU): the trainer wraps the model in DistributedDataParallel and every
  collective runs; its weights against the plain run's.

Prints a table and writes every figure to a JSON file. Exit status 0 when every check passed, 1 otherwise (each
failure is one line in the table and the JSON, and the other checks still run). Meant to finish within 5 minutes
on one GPU; ``--device cpu --tiny`` runs in the test suite (``tests/benchmarks/test_gpu_check.py``).

Usage::

    python benchmarks/gpu_check.py [--device cuda] [--tiny] [--out DIR] [--json FILE] [--updates 20]
        [--systems hisem dfm ...] [--no-throughput] [--no-ddp]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:  # the sibling benchmark modules, also when a test imports this file
    sys.path.insert(0, str(HERE))

# A few-thousand-parameter version of each CPU config (--tiny): the same code paths at 32 px.
CLIP_TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
             "image_size": 32, "patch_size": 8}  # fmt: skip
TINY_MODELS: dict[str, dict[str, Any]] = {
    "hisem": {
        "encoder": {"config": CLIP_TINY},
        "fusion": {"dim": 32, "grid_size": 4, "heads": 2, "expert_hidden": 64, "pwff_hidden": 64},
        "decoder": {"dim": 32, "heads": 2},
    },
    "plain": {
        "encoder": {"config": CLIP_TINY},
        "fusion": {"dim": 32, "grid_size": 4, "layers": 1, "heads": 2},
        "decoder": {"dim": 32, "heads": 2},
    },
    "change_detection": {"image_size": 32, "encoder": {"widths": [8, 16], "blocks": 1}, "decoder_dim": 8},
    "dfm": {
        "encoder": {"config": CLIP_TINY},
        "temporal": {"heads": 2},
        "jfm": {"heads": 2},
        "decoder": {"dim": 32, "heads": 2},
    },
    "semantic_cc": {
        "encoder": {"config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_dim": 64,
                               "output_channels": 16, "image_size": 32, "patch_size": 8, "window_size": 2,
                               "global_attn_indexes": [1]}},
        "neck": {"units": 1, "cc_dim": 24, "cc_heads": 2, "cd_heads": 2},
        "cd_decoder": {"fpn_dim": 16},
        "caption": {
            "qformer": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32,
                        "encoder_hidden_size": 24},
            "num_query_tokens": 4,
            "llm_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "num_key_value_heads": 2},
            "generation": {"max_new_tokens": 8},
        },
    },
}  # fmt: skip
# (pairs, tile size) of the generated SynthCC set; batch size (None: the config's)
DATA = {"full": (160, 128), "tiny": (24, 64)}
TINY_BATCH = 4


# ---------------------------------------------------------------------------------------------------------- helpers
def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, nested mappings key by key."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def one_line(e: BaseException) -> str:
    """An exception as one line, with the place it was raised (the check reports, it does not stop)."""
    frames = traceback.extract_tb(e.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(e).__name__}: {' '.join(str(e).split())}{where}"


def attempt(result: dict[str, Any], key: str, fn: Callable[[], Any]) -> Any:
    """Run one check; on an exception record it under ``result["errors"]`` and return None."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - one failing check must not hide the others
        result.setdefault("errors", {})[key] = one_line(e)
        print(f"  {key}: FAILED {one_line(e)}", flush=True)
        return None


class Device:
    """The device under test and its memory counters (CPU: none)."""

    def __init__(self, name: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(name)
        self.cuda = self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gb(self) -> float | None:
        return self.torch.cuda.max_memory_allocated(self.device) / 2**30 if self.cuda else None

    def release(self) -> None:
        import gc

        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------------- systems
def system_config(name: str, data_root: Path, run_dir: Path, args: argparse.Namespace, **train: Any):  # noqa: ANN201
    """The CPU config of ``name`` on the generated set, for the device, in bf16, without validation. Where the
    system has a random-init form of it (``*_synthcc_cpu_scratch.yaml``: the same sizes, no stand-ins to pretrain
    first), that one: the check times the system, not its foundations' pretraining."""
    import yaml

    from changecap.engine import TrainConfig

    config_file = REPO / "configs" / f"{name}_synthcc_cpu_scratch.yaml"
    if not config_file.exists():
        config_file = REPO / "configs" / f"{name}_synthcc_cpu.yaml"
    raw = yaml.safe_load(config_file.read_text())
    if args.tiny:
        raw["model"] = merged(raw["model"], TINY_MODELS.get(name, {}))
        raw["data"]["image_size"] = 32
        raw["train"]["batch_size"] = TINY_BATCH
    if name == "dfm":
        raw["model"]["prior"]["model_dir"] = str(args.prior_dir)
        raw["loss"]["embedding_cache"] = str(args.work / "caption_embeddings")  # not the user's cache
    raw["data"].update(root=str(data_root), num_workers=0)
    raw["train"].update(
        precision="bf16", device=args.device, val_every=0, deterministic=True, output_dir=str(run_dir), **train
    )
    raw["logging"] = {"tensorboard": False, "log_every": 1, "progress": False}
    return TrainConfig.from_dict(raw, path=f"configs/{config_file.name} (as gpu_check runs it)")


def train_run(config, resume: bool | None = None):  # noqa: ANN001, ANN201
    from changecap.engine import Trainer

    trainer = Trainer(config, resume=resume)
    result = trainer.fit()
    return trainer, result


def losses_of(run_dir: Path) -> list[float]:
    """Every logged training value whose name says loss, in order (one line per update: ``log_every`` 1)."""
    values = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "train":
            values += [float(v) for k, v in record.items() if "loss" in k and isinstance(v, (int, float))]
    return values


def compare_weights(a_dir: Path, b_dir: Path) -> dict[str, Any]:
    """Every tensor of the ``*.safetensors`` files of two model folders: bit-exact, and the largest difference."""
    import torch
    from safetensors.torch import load_file

    exact, worst, tensors = True, 0.0, 0
    for file in sorted(a_dir.glob("*.safetensors")):
        a, b = load_file(str(file)), load_file(str(b_dir / file.name))
        if a.keys() != b.keys():
            return {"bit_exact": False, "max_abs_diff": math.inf, "tensors": tensors, "note": f"{file.name}: keys"}
        for key in a:
            tensors += 1
            if not torch.equal(a[key], b[key]):
                exact = False
                if a[key].is_floating_point():
                    worst = max(worst, float((a[key].double() - b[key].double()).abs().max()))
    return {"bit_exact": exact, "max_abs_diff": worst, "tensors": tensors}


def held_out_pairs(data_root: Path, limit: int) -> list[tuple[Path, Path]]:
    from changecap.data.annotations import parse_annotations

    records = parse_annotations(data_root, "levir-mci", "test")[:limit]
    return [(r.before_path, r.after_path) for r in records]  # type: ignore[misc]


def predict(model_dir: Path, device: str, precision: str, pairs: list[tuple[Path, Path]]) -> list[Any]:
    from changecap.inference import ChangeCaptioner

    captioner = ChangeCaptioner.from_pretrained(model_dir, device=device, precision=precision)
    return captioner([b for b, _ in pairs], [a for _, a in pairs], batch_size=len(pairs))


def agreement(device_out: list[Any], cpu_out: list[Any]) -> dict[str, Any]:
    """The device's fp32 outputs against the CPU's: token positions (of the CPU's) and captions equal; mask
    pixels equal."""
    import numpy as np

    out: dict[str, Any] = {}
    if cpu_out[0].caption is not None:
        positions = sum(len(c.tokens) for c in cpu_out)
        same = sum(sum(x == y for x, y in zip(c.tokens, d.tokens)) for c, d in zip(cpu_out, device_out))
        out["tokens_equal_pct"] = 100.0 * same / max(positions, 1)
        equal = sum(c.tokens == d.tokens for c, d in zip(cpu_out, device_out))
        out["captions_equal_pct"] = 100.0 * equal / len(cpu_out)
    if cpu_out[0].mask is not None:
        pixels = sum(c.mask.size for c in cpu_out)
        same = sum(int(np.sum(c.mask == d.mask)) for c, d in zip(cpu_out, device_out))
        out["mask_pixels_equal_pct"] = 100.0 * same / pixels
    return out


def check_system(name: str, data_root: Path, work: Path, args: argparse.Namespace, dev: Device) -> dict[str, Any]:
    """Train, save, resume and predict one system (module docstring); the figures and the failures."""
    res: dict[str, Any] = {"system": name}
    ref_dir, cut_dir = work / name / "uninterrupted", work / name / "resumed"
    half = max(1, args.updates // 2)
    print(f"[{name}]", flush=True)

    def train_reference() -> None:
        config = system_config(name, data_root, ref_dir, args, max_steps=args.updates)
        dev.reset_peak()
        t0 = time.perf_counter()
        trainer, result = train_run(config, resume=False)
        dev.sync()
        res["train_s"] = time.perf_counter() - t0
        res["train_peak_gb"] = dev.peak_gb()
        res["parameters"] = sum(p.numel() for p in trainer.model.parameters())
        res["batch_size"] = config.train.batch_size
        res["updates"] = result.global_step
        losses = losses_of(ref_dir)
        res["losses_finite"] = bool(losses) and all(math.isfinite(v) for v in losses)
        res["first_loss"], res["last_loss"] = (losses[0], losses[-1]) if losses else (None, None)
        if result.global_step != args.updates:
            raise RuntimeError(f"the run made {result.global_step} updates, not {args.updates}")
        if not res["losses_finite"]:
            raise RuntimeError(f"non-finite or missing training losses: {losses[:8]}")
        res["model_dir"] = str(result.last_dir)
        print(f"  train: {result.global_step} bf16 updates in {res['train_s']:.1f} s, loss "
              f"{res['first_loss']:.3f} -> {res['last_loss']:.3f}", flush=True)  # fmt: skip

    def save_and_resume() -> None:
        _, first = train_run(system_config(name, data_root, cut_dir, args, max_steps=half), resume=False)
        if first.finished or first.global_step != half:
            raise RuntimeError(f"the first half stopped at update {first.global_step}, not {half}")
        _, second = train_run(system_config(name, data_root, cut_dir, args, max_steps=args.updates), resume=True)
        if second.global_step != args.updates:
            raise RuntimeError(f"the resumed run ended at update {second.global_step}, not {args.updates}")
        res["resume"] = compare_weights(ref_dir / "last", cut_dir / "last")
        exact = res["resume"]["bit_exact"]
        print(f"  save + resume at update {half}: "
              + ("bit-exact" if exact else f"max |diff| {res['resume']['max_abs_diff']:.3g}"), flush=True)  # fmt: skip
        if not exact and not dev.cuda:
            raise RuntimeError("the resumed run's weights differ from the uninterrupted run's on CPU")

    def prediction() -> None:
        pairs = held_out_pairs(data_root, args.predict_pairs)
        dev.reset_peak()
        out = predict(ref_dir / "last", args.device, "bf16", pairs)
        dev.sync()
        res["predict_peak_gb"] = dev.peak_gb()
        first = out[0]
        res["predicted"] = {"pairs": len(out), "caption": first.caption,
                            "mask_shape": None if first.mask is None else list(first.mask.shape)}  # fmt: skip
        if first.caption is None and first.mask is None:
            raise RuntimeError("the prediction holds neither a caption nor a mask")
        fp32_dev = predict(ref_dir / "last", args.device, "fp32", pairs)
        fp32_cpu = predict(ref_dir / "last", "cpu", "fp32", pairs)
        res["fp32_vs_cpu"] = agreement(fp32_dev, fp32_cpu)
        shown = ", ".join(f"{k} {v:.1f}" for k, v in res["fp32_vs_cpu"].items())
        print(f"  predict ({len(out)} pairs, bf16): {first.caption!r}; fp32 {args.device} vs cpu: {shown}", flush=True)
        if not dev.cuda and any(v != 100.0 for v in res["fp32_vs_cpu"].values()):
            raise RuntimeError("fp32 on the CPU twice gave different outputs")

    attempt(res, "train", train_reference)
    if "errors" in res:  # nothing to save, resume or predict
        res["ok"] = False
        return res
    attempt(res, "save_resume", save_and_resume)
    attempt(res, "predict", prediction)
    res["ok"] = "errors" not in res
    dev.release()
    return res


# ---------------------------------------------------------------------------------------------------------- others
def check_throughput(args: argparse.Namespace, dev: Device) -> dict[str, Any]:
    """The paper HiSem (``--tiny``: the CPU HiSem) in bf16: pairs/s and share of the bf16 matmul peak."""
    from bench_model_speed import CUDA_BATCH, DEFAULT_BATCH, measure
    from bench_peak import SHAPES, measure_peak

    res: dict[str, Any] = {}
    shapes = {"square-256": (256, 256, 256)} if args.tiny else None
    peak = measure_peak(["fp32", "bf16"], args.device, repeat=2 if args.tiny else 10, shapes=shapes)
    res["peak_gflops"] = {k: v["peak"] for k, v in peak.items()}
    res["peak_shapes"] = list(shapes or SHAPES)
    print(f"[throughput] matmul peak: fp32 {res['peak_gflops']['fp32']:.0f}, bf16 {res['peak_gflops']['bf16']:.0f} "
          "GFLOP/s", flush=True)  # fmt: skip
    model = "cpu" if args.tiny else "paper"
    train_b, infer_b = (2, 2) if args.tiny else (CUDA_BATCH if dev.cuda else DEFAULT_BATCH)[model]
    options = argparse.Namespace(
        threads=None, device=args.device, precision=["bf16"], optim=["fused"], steps=1 if args.tiny else 5,
        warmup=0 if args.tiny else 2, train_batch=args.paper_batch or train_b, infer_batch=args.paper_batch or infer_b,
        official=False, bf16_cast=False, compile=False, gelu_reference=False, frozen_cache=False, infer_only=False,
        int8_alternatives=False, interleave=False,
    )  # fmt: skip
    figures = measure(model, options)
    res.update(model="paper HiSem" if model == "paper" else "CPU HiSem (hisem_synthcc_cpu.yaml)",
               train_batch=figures["train_batch"], infer_batch=figures["infer_batch"],
               peak_mem_gb=figures["peak_mem_gb"])  # fmt: skip
    peak_bf16 = res["peak_gflops"]["bf16"] * 1e9
    for phase in ("train", "infer"):
        rate, flops = figures[phase].get("bf16"), (figures["flops"].get(phase) or {}).get("all")
        res[phase] = {"pairs_per_s": rate, "gflop_per_pair": flops and flops / 1e9,
                      "share_of_bf16_peak_pct": flops and rate and 100.0 * rate * flops / peak_bf16}  # fmt: skip
        print(f"  {phase} bf16: {rate:.2f} pairs/s, {res[phase]['share_of_bf16_peak_pct']:.1f} % of the bf16 peak",
              flush=True)
    del figures
    dev.release()
    return res


def check_ddp(data_root: Path, work: Path, args: argparse.Namespace, reference: Path | None) -> dict[str, Any]:
    """The HiSem run in a process group of one (NCCL on CUDA, gloo on CPU), against the plain run's weights."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    backend = "nccl" if args.device.startswith("cuda") else "gloo"
    res: dict[str, Any] = {"backend": backend, "world_size": 1}
    run_dir = work / "ddp" / "run"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    store = dist.FileStore(str(run_dir.parent / "store"), 1)
    dist.init_process_group(backend, store=store, rank=0, world_size=1)
    try:
        trainer, result = train_run(system_config("hisem", data_root, run_dir, args, max_steps=args.updates), False)
        res["wrapped_in_ddp"] = isinstance(trainer.step_module, DistributedDataParallel)
        res["backend_in_use"] = dist.get_backend()
        res["updates"] = result.global_step
    finally:
        dist.destroy_process_group()
    losses = losses_of(run_dir)
    res["losses_finite"] = bool(losses) and all(math.isfinite(v) for v in losses)
    if reference is not None:
        res["vs_plain_run"] = compare_weights(reference, run_dir / "last")
    print(f"[ddp] {backend}, world size 1: {res['updates']} updates, DDP wrapper {res['wrapped_in_ddp']}"
          + (f", weights bit-exact with the plain run: {res['vs_plain_run']['bit_exact']}" if reference else ""),
          flush=True)  # fmt: skip
    if not (res["wrapped_in_ddp"] and res["losses_finite"] and res["updates"] == args.updates):
        raise RuntimeError(f"DDP run incomplete: {res}")
    return res


# ---------------------------------------------------------------------------------------------------------- report
def report_table(report: dict[str, Any]) -> str:
    def num(v: Any, fmt: str = ".1f") -> str:
        return "—" if v is None else format(v, fmt)

    lines = [
        f"gpu_check on {report['device_name']} ({report['device']}), torch {report['torch']}, "
        f"{report['updates']} bf16 updates per run, {report['data']['pairs']} SynthCC pairs of "
        f"{report['data']['size']} px",
        "",
        "| system | parameters | train | save + resume | predict | fp32 device vs CPU | peak GB train / predict | "
        "status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in report["systems"]:
        resume = s.get("resume")
        agree = s.get("fp32_vs_cpu") or {}
        exact = None if resume is None else resume["bit_exact"]
        cells = [
            s["system"],
            f"{s['parameters'] / 1e6:.2f} M" if "parameters" in s else "—",
            f"{s['updates']} in {s['train_s']:.1f} s" if "train_s" in s else "—",
            "—" if resume is None else "bit-exact" if exact else f"max diff {resume['max_abs_diff']:.2g}",
            "—" if "predicted" not in s else f"{s['predicted']['pairs']} pairs",
            ", ".join(f"{k.replace('_pct', '')} {v:.1f} %" for k, v in agree.items()) or "—",
            f"{num(s.get('train_peak_gb'), '.2f')} / {num(s.get('predict_peak_gb'), '.2f')}",
            "ok" if s.get("ok") else "FAILED: " + "; ".join(f"{k}: {v}" for k, v in s.get("errors", {}).items()),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    t = report.get("throughput")
    if t and "train" in t:
        lines += ["", f"{t['model']}, bf16, matmul peak {t['peak_gflops']['bf16']:.0f} GFLOP/s (fp32 "
                      f"{t['peak_gflops']['fp32']:.0f}):"]  # fmt: skip
        for phase, label in (("train", "training"), ("infer", "captioning")):
            p = t[phase]
            lines.append(f"- {label} (batch {t[f'{phase}_batch']}): {num(p['pairs_per_s'], '.2f')} pairs/s, "
                         f"{num(p['gflop_per_pair'], '.2f')} GFLOP per pair, "
                         f"{num(p['share_of_bf16_peak_pct'])} % of the bf16 peak")  # fmt: skip
    elif report.get("errors", {}).get("throughput"):
        lines += ["", f"throughput: FAILED {report['errors']['throughput']}"]
    d = report.get("ddp")
    if d:
        vs = d.get("vs_plain_run")
        lines += ["", f"DDP ({d['backend']}, world size 1, file store): {d['updates']} updates, wrapped "
                      f"{d['wrapped_in_ddp']}" + (f", weights bit-exact with the plain run: {vs['bit_exact']}" if vs
                                                  else "")]  # fmt: skip
    elif report.get("errors", {}).get("ddp"):
        lines += ["", f"DDP: FAILED {report['errors']['ddp']}"]
    lines += ["", f"{'PASSED' if report['ok'] else 'FAILED'} in {report['wall_s']:.0f} s"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------- main
def cpu_name() -> str:
    """The CPU's model name, its matrix extensions and its core count."""
    from bench_peak import cpu_flags

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.machine() or "CPU"
    return f"{model} ({cpu_flags()}, {os.cpu_count()} cores)"


def ordered_systems(names: list[str]) -> list[str]:
    """The change detector first: DFM's prior is the detector trained here."""
    return sorted(names, key=lambda n: (n != "change_detection", names.index(n)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument("--tiny", action="store_true", help="tiny models and data (the test suite's CPU run)")
    p.add_argument("--out", help="work folder (default: a temporary folder, removed at the end)")
    p.add_argument("--json", help="write the report here (default: gpu_check.json in --out, else here)")
    p.add_argument("--updates", type=int, default=None, help="bf16 updates per training run (default 20; --tiny 4)")
    p.add_argument("--systems", nargs="+", help="only these architectures (default: every registered one)")
    p.add_argument("--predict-pairs", type=int, default=16, help="test pairs captioned per system")
    p.add_argument("--paper-batch", type=int, default=None, help="train and caption batch of the throughput model")
    p.add_argument("--no-throughput", action="store_true", help="skip the paper HiSem throughput")
    p.add_argument("--no-ddp", action="store_true", help="skip the one-process DDP run")
    args = p.parse_args(argv)
    args.updates = args.updates or (4 if args.tiny else 20)
    if args.updates < 2:
        print(f"error: --updates must be at least 2 (the resume check stops half-way), got {args.updates}",
              file=sys.stderr)
        return 2

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # cuBLAS reads this when it starts; the deterministic training runs need it (set before any CUDA work)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    from changecap.models.device import device_problem
    from changecap.models.registry import architecture_names
    from changecap.synth import generate_synthcc

    dev = Device(args.device)
    problem = device_problem(dev.device) if dev.cuda else None
    if problem:
        print(f"error: --device {args.device}: {problem}", file=sys.stderr)
        return 2
    known = architecture_names()
    systems = list(args.systems or known)
    if "dfm" in systems and "change_detection" not in systems:
        systems.append("change_detection")  # DFM's prior is the detector this check trains
    unknown = [s for s in systems if s not in known]
    missing = [s for s in systems if not (REPO / "configs" / f"{s}_synthcc_cpu.yaml").is_file()]
    if unknown or missing:
        print(f"error: --systems: unknown {unknown} or without a CPU config {missing}; known: {known}", file=sys.stderr)
        return 2
    work = args.work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    json_path = Path(args.json) if args.json else (work if args.out else Path.cwd()) / "gpu_check.json"
    t_start = time.perf_counter()
    pairs, size = DATA["tiny" if args.tiny else "full"]
    report: dict[str, Any] = {
        "device": str(dev.device),
        "device_name": torch.cuda.get_device_name(dev.device) if dev.cuda else cpu_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tiny": args.tiny,
        "updates": args.updates,
        "data": {"pairs": pairs, "size": size},
        "systems": [],
    }
    try:
        work.mkdir(parents=True, exist_ok=True)
        data_root = work / "synthcc"
        if (data_root / "LevirCCcaptions.json").is_file():
            shutil.rmtree(data_root)  # a set from an earlier run of another size: regenerate (seconds)
        generate_synthcc(data_root, pairs=pairs, size=size, seed=0, progress=False)

        if not args.no_throughput:  # first: before the deterministic training runs switch kernels
            report["throughput"] = attempt(report, "throughput", lambda: check_throughput(args, dev))
        for name in ordered_systems(systems):
            if name == "dfm":
                cd = next((s for s in report["systems"] if s["system"] == "change_detection"), None)
                args.prior_dir = Path(cd["model_dir"]) if cd and cd.get("model_dir") else None
                if args.prior_dir is None:
                    report["systems"].append({"system": name, "ok": False,
                                              "errors": {"train": "no change detector trained here for its prior"}})
                    continue  # fmt: skip
            report["systems"].append(check_system(name, data_root, work, args, dev))
        if not args.no_ddp:
            hisem = next((s for s in report["systems"] if s["system"] == "hisem" and s.get("model_dir")), None)
            reference = Path(hisem["model_dir"]) if hisem else None
            report["ddp"] = attempt(report, "ddp", lambda: check_ddp(data_root, work, args, reference))
    finally:
        torch.use_deterministic_algorithms(False)  # the training runs switched it on for this process
        report["wall_s"] = time.perf_counter() - t_start
        report["ok"] = all(s.get("ok") for s in report["systems"]) and not report.get("errors")
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1, default=str))
    print()
    print(report_table(report))
    print(f"report: {json_path}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
