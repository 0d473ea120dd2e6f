"""Semantic-CC on SynthCC: (a) multi-task vs caption-only and the 1/2/3-stage schedules, (b) the CD branch vs a
plain Siamese change detector of about the same size, (c) the CD branch on the real LEVIR-CD and DSIFN samples in
``../shared/data`` after SynthCC training, (d) speed and peak memory of the CPU config at batch 1 and 8.

(a)–(c) train each variant from scratch on the same SynthCC set (``small`` preset, generated once), several seeds,
each in its own process (``--jobs`` at a time, ``--threads`` torch threads each); a finished run leaves
``result.json`` in its folder and is not repeated. The model and budget are the random-initialisation CPU
config's (``configs/semantic_cc_synthcc_cpu_scratch.yaml``; the same comparisons from the stand-ins are in
``bench_foundations.py``) except ``train.epochs`` (``--epochs``, default 3 instead of 4, so that 15 runs fit in
about an hour on 2 cores); the schedules compare at an equal number of epochs, as the paper's Table IV does (so the
3-stage run makes 3 passes per epoch, the 1-stage run 1; updates and seconds are reported).

Variants:

* ``3-stage`` (paper), ``2-stage``, ``1-stage``: ``loss.schedule``; multi-task (captions + masks);
* ``caption-only``: ``loss.schedule=caption-only`` — everything trained on L_cc alone (paper Table II's single-task
  row); its CD decoder never trains, so it has no CD figures;
* ``siamese``: the plain Siamese change detector — the same SAM ViT trunk (no change filters, no neck, two more
  blocks to make up the parameters), both dates' features concatenated into the same CD decoder, trained on the
  pixel loss alone with the CD stage's optimiser, schedule, batch and number of passes. Its size is printed beside
  the CD branch's (encoder + the neck's CD side + CD decoder).

Scores: captions of the engine's selected checkpoint (``best``, val CIDEr) on the test split (rsicc protocol, METEOR
through the jar); change detection (binary: class > 0 = change) of the final weights (``last``): the CD branch is
not what val CIDEr selects. Real samples: masks predicted at the model's 64 px and resized (nearest) to the label's
size; F1 / IoU / OA of "change" over all pixels of each sample set.

(d) runs in its own process per batch size: one optimiser update of each phase of the 3-stage schedule, fp32, and
inference (encoder, neck, mask, greedy captions of 24 new tokens at most) — pairs/s, and the process's peak resident
set (``ru_maxrss``) minus its resident set before the first measurement.

Usage::

    python benchmarks/bench_semantic_cc.py [--parts quality speed] [--seeds 0 1 2] [--variants ...] [--jobs 2]
        [--threads 1] [--epochs 3] [--out bench_out/semantic_cc]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import _mean_sd, run_pool  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "semantic_cc_synthcc_cpu_scratch.yaml"  # every part from random initialisation
SHARED = REPO.parent / "shared" / "data"
REAL_SETS = {"LEVIR-CD": SHARED / "levir-cd-samples", "DSIFN": SHARED / "dsifn-samples"}
VARIANTS: dict[str, list[str]] = {
    "3-stage": [],
    "2-stage": ["loss.schedule=2-stage"],
    "1-stage": ["loss.schedule=1-stage"],
    "caption-only": ["loss.schedule=caption-only"],
    "siamese": [],
}
SIAMESE_ENCODER = ["model.encoder.bcsf_placement=none", "model.encoder.config.num_hidden_layers=6",
                   "model.encoder.config.global_attn_indexes=[2,5]"]  # fmt: skip
CAPTION_COLUMNS = ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "S_m")
CD_COLUMNS = ("F1", "IoU", "OA")


# ------------------------------------------------------------------------------------------------ change detection
def cd_figures(confusion: Any) -> dict[str, float]:
    """A binary :class:`~changecap.metrics.ConfusionMatrix` → "change" F1, IoU and overall accuracy."""
    scores = confusion.compute()
    return {"F1": float(scores.f1[1]), "IoU": float(scores.iou[1]), "OA": scores.overall_accuracy}


def real_sample_scores(predict_masks: Any) -> dict[str, dict[str, float]]:
    """``predict_masks(before_paths, after_paths) -> [H, W] uint8 masks at the input size`` on each real sample set
    (pairs with a label only) → change F1 / IoU / OA over all their pixels."""
    from PIL import Image

    from changecap.metrics import ConfusionMatrix

    out = {}
    for name, root in REAL_SETS.items():
        if not root.is_dir():
            continue
        names = sorted(p.name for p in (root / "label").iterdir() if (root / "A" / p.name).exists())
        masks = predict_masks([root / "A" / n for n in names], [root / "B" / n for n in names])
        confusion = ConfusionMatrix(2)
        for n, pred in zip(names, masks, strict=True):
            label = (np.asarray(Image.open(root / "label" / n).convert("L")) > 127).astype(np.int64)
            if pred.shape != label.shape:
                pred = np.asarray(Image.fromarray(pred).resize(label.shape[::-1], Image.NEAREST))
            confusion.update((pred > 0).astype(np.int64), label)
        share = int(confusion.matrix[1].sum()) / int(confusion.matrix.sum())
        out[name] = {**cd_figures(confusion), "pairs": len(names), "changed_pixel_share": share}
    return out


def test_confusion(predict: Any, dataset: Any, batch_size: int = 64) -> Any:
    """``predict(images [B, 2, 3, S, S]) -> masks [B, S, S]`` over a dataset with masks → binary ConfusionMatrix."""
    from torch.utils.data import DataLoader

    from changecap.data.collate import collate_pairs
    from changecap.metrics import ConfusionMatrix

    confusion = ConfusionMatrix(2)
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_pairs):
        with torch.inference_mode():
            confusion.update(predict(batch["image"]).long(), (batch["mask"] > 0).long())
    return confusion


# -------------------------------------------------------------------------------------------- Semantic-CC variants
def run_semantic_cc(
    variant: str, seed: int, data: Path, run_dir: Path, epochs: int | None, meteor: str, config: Path = CONFIG
) -> dict:
    """Train ``config`` with the variant's schedule (``epochs``: None keeps the config's), evaluate captions of the
    selected model and the change masks of the final one."""
    from changecap.data.datasets import open_dataset
    from changecap.engine import load_config, train
    from changecap.inference import ChangeCaptioner, evaluate_model

    sets = [f"data.root={data}", f"train.output_dir={run_dir / 'run'}", f"train.seed={seed}"]
    sets += [f"train.epochs={epochs}"] if epochs is not None else []
    sets += ["logging.progress=false", *VARIANTS[variant]]
    t0 = time.time()
    result = train(load_config(config, overrides=sets), resume=None)  # an interrupted run resumes exactly
    train_s = time.time() - t0
    ev = evaluate_model(result.best_dir, data, "levir-mci", "test", protocols=("rsicc",), meteor=meteor,
                        progress=False, device="cpu")  # fmt: skip
    figures: dict[str, Any] = {k: ev.result.scores.get(k) for k in CAPTION_COLUMNS}
    figures |= {"nochange_acc": ev.result.nochange_acc, "change_acc": ev.result.change_acc}
    record: dict[str, Any] = {"updates": result.global_step, "best_epoch": result.best_epoch}
    if variant != "caption-only":
        captioner = ChangeCaptioner.from_pretrained(result.last_dir, device="cpu")
        pp = captioner.preprocess
        test = open_dataset(data, "levir-mci", "test", vocab=captioner.vocab, image_size=pp.image_size,
                            normalize=(pp.mean, pp.std), resize_mode=pp.resize_mode)  # fmt: skip
        model = captioner.model

        def predict(images: torch.Tensor) -> torch.Tensor:
            from changecap.models.semantic_cc.cd_decoder import predict_mask

            return predict_mask(model.change_logits(model.features(images)[1]))

        figures |= cd_figures(test_confusion(predict, test))
        record["real"] = real_sample_scores(
            lambda before, after: [r.mask for r in captioner([str(p) for p in before], [str(p) for p in after])]
        )
        record["cd_branch_parameters"] = cd_branch_parameters(model)
    return {"variant": variant, "seed": seed, "figures": figures, "train_seconds": round(train_s, 1), **record}


def cd_branch_parameters(model: torch.nn.Module) -> int:
    """Parameters of the CD branch: encoder (with its filters), the neck's CD side, CD decoder."""
    from changecap.engine.objectives.semantic_cc import neck_sides

    _, cd_side = neck_sides(len(model.neck.units))
    prefixes = ("encoder.", "cd_decoder.", *(f"{p}." for p in cd_side))
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefixes))


# ---------------------------------------------------------------------------------------------- Siamese baseline
class SiameseChangeDetector(torch.nn.Module):
    """Plain Siamese baseline: a shared SAM ViT trunk per date, both dates' features concatenated by the CD decoder."""

    def __init__(self, encoder: torch.nn.Module, cd_decoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.cd_decoder = cd_decoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _, cd = self.encoder(images)  # [2B, L, C_cd]
        g = self.encoder.config.grid_size
        return self.cd_decoder(cd.transpose(1, 2).unflatten(2, (g, g)))  # [B, 1, S, S]


def run_siamese(seed: int, data: Path, run_dir: Path, epochs: int) -> dict:
    from torch.utils.data import DataLoader

    from changecap.data.collate import collate_pairs
    from changecap.data.datasets import open_dataset
    from changecap.engine import load_config
    from changecap.inference.predictor import preprocess_pair
    from changecap.models.parts.change_masks import binary_change_loss_sum
    from changecap.models.preprocess import PreprocessConfig
    from changecap.models.semantic_cc.cd_decoder import ChangeDetectionDecoder, predict_mask
    from changecap.models.semantic_cc.config import SemanticCCConfig
    from changecap.models.semantic_cc.encoder import build_sam_encoder

    cfg = load_config(CONFIG, overrides=[f"data.root={data}", *SIAMESE_ENCODER])
    torch.manual_seed(seed)
    config = SemanticCCConfig.from_dict(SemanticCCConfig.with_data(cfg.model, ["<NULL>", "<UNK>", "w"], 8))
    enc = config.encoder
    size = int(enc.config["image_size"])
    model = SiameseChangeDetector(
        build_sam_encoder(enc, load_pretrained=False),
        ChangeDetectionDecoder(enc.cd_width, enc.grid_size, size, config.cd_decoder.num_classes,
                               config.cd_decoder.form, config.cd_decoder.fpn_dim),
    )  # fmt: skip
    params = sum(p.numel() for p in model.parameters())
    ds_kw = {"image_size": size, "normalize": "imagenet", "resize_mode": "resize"}
    train_set = open_dataset(data, "levir-mci", "train", **ds_kw)
    test_set = open_dataset(data, "levir-mci", "test", vocab=train_set.vocab, **ds_kw)
    gen = torch.Generator().manual_seed(seed)
    t, o = cfg.train, cfg.optim
    loader = DataLoader(train_set, batch_size=t.batch_size, shuffle=True, generator=gen, collate_fn=collate_pairs,
                        drop_last=True)  # fmt: skip
    total = epochs * len(loader)
    warmup, floor = cfg.schedule.warmup_steps, cfg.schedule.min_lr_ratio
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)

    def lr_factor(step: int) -> float:  # linear warm-up, then cosine to min_lr_ratio (the CPU config's schedule)
        if step < warmup:
            return (step + 1) / warmup
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    t0 = time.time()
    model.train()
    for _ in range(epochs):
        for batch in loader:
            loss_sum, n = binary_change_loss_sum(model(batch["image"]), batch["mask"])
            opt.zero_grad(set_to_none=True)
            (loss_sum / n.clamp(min=1)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            opt.step()
            sched.step()
    train_s = time.time() - t0
    model.eval()
    figures = cd_figures(test_confusion(lambda x: predict_mask(model(x)), test_set))
    pp = PreprocessConfig(image_size=size, resize_mode="resize", mean=test_set.mean, std=test_set.std)

    def predict_files(before: list[Path], after: list[Path]) -> list[np.ndarray]:
        from PIL import Image

        out = []
        for b, a in zip(before, after, strict=True):
            with torch.inference_mode():
                mask = predict_mask(model(preprocess_pair(str(b), str(a), pp)[None]))[0].numpy().astype(np.uint8)
            out.append(np.asarray(Image.fromarray(mask).resize(Image.open(b).size, Image.NEAREST)))
        return out

    return {"variant": "siamese", "seed": seed, "figures": figures, "train_seconds": round(train_s, 1),
            "updates": total, "parameters": params, "real": real_sample_scores(predict_files)}  # fmt: skip


# ---------------------------------------------------------------------------------------------------- (d) speed
def run_speed(batch_size: int, data: Path, steps: int) -> dict:
    """One update of each 3-stage phase and inference at ``batch_size`` (fp32), with peak RSS."""
    import tempfile

    from changecap.engine import Trainer, load_config

    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return math.nan

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(CONFIG, overrides=[f"data.root={data}", f"train.output_dir={tmp}/run",
                                             f"train.batch_size={batch_size}", "logging.progress=false"])  # fmt: skip
        trainer = Trainer(cfg, resume=False)
        phases = trainer.epoch_data(0)
        batches = {}
        for pd in phases:
            pd.dataset.set_epoch(0)
            pd.sampler.set_epoch(0)
            batches[pd.phase.name] = (next(iter(pd.loader)), pd.phase)
        base = rss_mb()
        out: dict[str, Any] = {"batch": batch_size, "rss_before_mb": round(base, 1)}
        for name, (batch, phase) in batches.items():
            trainer.update([batch], 0, phase)  # warm-up
            t0 = time.perf_counter()
            for _ in range(steps):
                trainer.update([batch], 0, phase)
            out[f"train_{name}_pairs_per_s"] = steps * batch_size / (time.perf_counter() - t0)
        train_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        model = trainer.model.eval()
        images = batches["cd"][0]["image"]
        with torch.inference_mode():
            model.predict(images)
            t0 = time.perf_counter()
            for _ in range(steps):
                model.predict(images)
            out["infer_pairs_per_s"] = steps * batch_size / (time.perf_counter() - t0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out |= {"train_peak_rss_mb": round(train_peak, 1), "peak_rss_mb": round(peak, 1)}
        out["train_extra_mb"] = round(train_peak - base, 1)
    return out


# ----------------------------------------------------------------------------------------------------- summary
def _cell(rows: list[dict], key: str, scale: float = 100) -> str:
    vals = [scale * r["figures"][key] for r in rows if r["figures"].get(key) is not None]
    vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        return "—"
    m, s = _mean_sd(vals)
    return f"{m:.2f} ± {s:.2f}"


def summarise(results: list[dict], variants: list[str]) -> str:
    cols = [*CAPTION_COLUMNS, *(f"CD {c}" for c in CD_COLUMNS)]
    lines = ["| variant | seeds | " + " | ".join(cols) + " | updates | train s |", "|" + "---|" * (len(cols) + 4)]
    for v in variants:
        rows = [r for r in results if r["variant"] == v]
        if not rows:
            continue
        cells = [_cell(rows, k) for k in (*CAPTION_COLUMNS, *CD_COLUMNS)]
        ups = _mean_sd([r["updates"] for r in rows])[0]
        secs = _mean_sd([r["train_seconds"] for r in rows])[0]
        lines.append(f"| {v} | {len(rows)} | " + " | ".join(cells) + f" | {ups:.0f} | {secs:.0f} |")
    real = [r for r in results if r.get("real")]
    if real:
        lines += ["", "CD on real samples after SynthCC training (change F1 / IoU ×100, mean ± sd over seeds):", ""]
        lines += ["| variant | " + " | ".join(f"{s} F1 | {s} IoU" for s in REAL_SETS) + " |",
                  "|" + "---|" * (1 + 2 * len(REAL_SETS))]  # fmt: skip
        for v in variants:
            rows = [r for r in real if r["variant"] == v]
            if not rows:
                continue
            cells = []
            for s in REAL_SETS:
                for k in ("F1", "IoU"):
                    vals = [100 * r["real"][s][k] for r in rows if s in r["real"]]
                    m, sd = _mean_sd(vals)
                    cells.append("—" if not vals else f"{m:.2f} ± {sd:.2f}")
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
        share = {s: real[0]["real"][s]["changed_pixel_share"] for s in REAL_SETS if s in real[0]["real"]}
        shares = ", ".join(f"{s} {100 * v:.1f} %" for s, v in share.items())
        lines.append(f"\nchanged-pixel share of the labels: {shares}")
    sizes = {r["variant"]: r.get("cd_branch_parameters") or r.get("parameters") for r in results}
    lines.append("\nCD parameters: " + ", ".join(f"{v} {n:,}" for v, n in sizes.items() if n))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench_out/semantic_cc")
    p.add_argument("--parts", nargs="+", default=["quality", "speed"], choices=("quality", "speed"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--meteor", default="java", choices=("java", "approx", "off"))
    p.add_argument("--speed-steps", type=int, default=5)
    p.add_argument("--one", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--speed-batch", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    data = out / "synthcc_small_seed0"
    if args.one or args.speed_batch:  # worker mode
        torch.set_num_threads(args.threads)
        if args.one:
            variant, seed = args.one[0], int(args.one[1])
            folder = out / f"{variant}_seed{seed}"
            if variant == "siamese":
                res = run_siamese(seed, data, folder, args.epochs)
            else:
                res = run_semantic_cc(variant, seed, data, folder, args.epochs, args.meteor)
        else:
            folder = out / f"speed_batch{args.speed_batch}"
            res = run_speed(args.speed_batch, data, args.speed_steps)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "result.json.tmp"
        tmp.write_text(json.dumps(res, indent=1, default=float))
        os.replace(tmp, folder / "result.json")
        return 0

    from changecap.synth import generate_synthcc

    out.mkdir(parents=True, exist_ok=True)
    if not (data / "LevirCCcaptions.json").exists():
        print(f"generating SynthCC small (seed 0) → {data}", flush=True)
        generate_synthcc(data, preset="small", seed=0, progress=False)
    common = ["--out", str(out), "--threads", str(args.threads), "--epochs", str(args.epochs), "--meteor", args.meteor]
    t_start, failed, text = time.time(), [], []
    if "quality" in args.parts:
        todo = [(v, s) for s in args.seeds for v in args.variants]
        todo = [(v, s) for v, s in todo if not (out / f"{v}_seed{s}" / "result.json").exists()]
        print(f"{len(todo)} run(s) to do, {args.jobs} at a time, {args.threads} thread(s) each", flush=True)
        jobs = [(f"{v} seed {s}", [__file__, "--one", v, str(s), *common], out / f"{v}_seed{s}") for v, s in todo]
        failed += run_pool(jobs, args.jobs, args.threads)
        results = [json.loads(f.read_text()) for v in args.variants for s in args.seeds
                   if (f := out / f"{v}_seed{s}" / "result.json").exists()]  # fmt: skip
        meteor = "java jar" if args.meteor == "java" else args.meteor
        text += [f"SynthCC small test split, {args.epochs} epochs, scores ×100, mean ± sd over seeds {args.seeds}; "
                 f"captions of the val-CIDEr-selected model, CD of the final weights; METEOR {meteor}", "",
                 summarise(results, args.variants)]  # fmt: skip
        (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    if "speed" in args.parts:
        threads = os.cpu_count() or 1  # one process at a time, all cores
        jobs = [(f"speed batch {b}", [__file__, "--speed-batch", str(b), *common[:2], "--threads", str(threads),
                                      "--speed-steps", str(args.speed_steps)], out / f"speed_batch{b}")
                for b in (1, 8)]  # fmt: skip
        failed += run_pool(jobs, 1, threads)
        text += ["", f"(d) CPU config, fp32, {threads} threads, pairs/s and peak RSS:", "",
                 "| batch | train cd | train cc | train neck | inference | peak RSS MB (train / all) | RSS before |",
                 "|---|---|---|---|---|---|---|"]  # fmt: skip
        for b in (1, 8):
            f = out / f"speed_batch{b}" / "result.json"
            if f.exists():
                r = json.loads(f.read_text())
                text.append(
                    f"| {b} | {r['train_cd_pairs_per_s']:.1f} | {r['train_cc_pairs_per_s']:.1f} | "
                    f"{r['train_neck_pairs_per_s']:.1f} | {r['infer_pairs_per_s']:.1f} | "
                    f"{r['train_peak_rss_mb']:.0f} / {r['peak_rss_mb']:.0f} | {r['rss_before_mb']:.0f} |"
                )
    text.append(f"\nwall time {time.time() - t_start:.0f} s; runs in {out}")
    print("\n" + "\n".join(text))
    (out / "summary.md").write_text("\n".join(text) + "\n")
    if failed:
        print(f"failed runs: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
