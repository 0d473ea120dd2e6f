"""What foundational knowledge buys at CPU scale: each system from random initialisation against the same system
started from its pretrained stand-ins (``docs/pretraining.md``), on the SynthCC test split, several seeds; plus the
papers' ablations run from the stand-ins: Semantic-CC's Table II (multi-task against caption-only) and Table IV
(3-, 2- and 1-stage schedules), DFM's TGCL, gate and prior.

Every run trains one variant with ``changecap.engine.train`` on the same SynthCC set (``small`` preset, generated
once), in its own process (``--jobs`` at a time, ``--threads`` torch threads each); a finished run leaves
``result.json`` in its folder and is not repeated. The stand-ins (pretrained once, seed 0, on the set's train split,
in the stand-in cache: ``--cache`` or the default) and DFM's change-detection prior (seed 0) are built first, once.

Variants, ``system:variant``:

* ``hisem:scratch`` (``configs/hisem_synthcc_cpu_scratch.yaml``), ``hisem:standin`` (``hisem_synthcc_cpu.yaml``:
  the CLIP stand-in, last 4 of 8 blocks trained);
* ``dfm:scratch``, ``dfm:standin`` and, from the stand-in, ``dfm:no_tgcl`` (``loss.tgcl_weight=0``), ``dfm:no_gate``
  (``loss.gate=false``), ``dfm:no_prior`` (``model.prior.enabled=false``);
* ``semantic_cc:scratch``, ``semantic_cc:standin`` (SAM, Q-Former and LLM stand-ins; 3-stage) and, from the
  stand-ins, ``semantic_cc:caption_only``, ``semantic_cc:2_stage``, ``semantic_cc:1_stage``.

Scores (×100, rsicc protocol): captions of the engine's selected model on the test split; for Semantic-CC also the
change masks of the final weights (CD F1 / IoU) and the real LEVIR-CD / DSIFN samples, as ``bench_semantic_cc.py``.

Usage::

    python benchmarks/bench_foundations.py [--systems hisem dfm semantic_cc] [--variants hisem:scratch ...]
        [--seeds 0 1 2] [--jobs 2] [--threads 1] [--out bench_out/foundations] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import PRIOR_CONFIG, _mean_sd, run_pool  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
#: system → variant → (config file, overrides, semantic_cc schedule variant of bench_semantic_cc or None)
VARIANTS: dict[str, dict[str, tuple[str, list[str]]]] = {
    "hisem": {
        "scratch": ("hisem_synthcc_cpu_scratch.yaml", []),
        "standin": ("hisem_synthcc_cpu.yaml", []),
    },
    "dfm": {
        "scratch": ("dfm_synthcc_cpu_scratch.yaml", []),
        "standin": ("dfm_synthcc_cpu.yaml", []),
        "no_tgcl": ("dfm_synthcc_cpu.yaml", ["loss.tgcl_weight=0"]),
        "no_gate": ("dfm_synthcc_cpu.yaml", ["loss.gate=false"]),
        "no_prior": ("dfm_synthcc_cpu.yaml", ["model.prior.enabled=false"]),
    },
    "semantic_cc": {
        "scratch": ("semantic_cc_synthcc_cpu_scratch.yaml", []),
        "standin": ("semantic_cc_synthcc_cpu.yaml", []),
        "caption_only": ("semantic_cc_synthcc_cpu.yaml", ["loss.schedule=caption-only"]),
        "2_stage": ("semantic_cc_synthcc_cpu.yaml", ["loss.schedule=2-stage"]),
        "1_stage": ("semantic_cc_synthcc_cpu.yaml", ["loss.schedule=1-stage"]),
    },
}
CAPTION_COLUMNS = ("Bleu_4", "METEOR", "CIDEr", "S_m", "nochange_acc", "change_acc")
CD_COLUMNS = ("F1", "IoU")


def all_variants() -> list[str]:
    return [f"{system}:{v}" for system, variants in VARIANTS.items() for v in variants]


def folder_name(variant: str, seed: int) -> str:
    return f"{variant.replace(':', '_')}_seed{seed}"


def run_one(variant: str, seed: int, data: Path, run_dir: Path, meteor: str) -> dict[str, Any]:
    """Train one variant with one seed and evaluate it (module docstring)."""
    from changecap.engine import load_config, train
    from changecap.inference import evaluate_model

    system, name = variant.split(":")
    config_file, extra = VARIANTS[system][name]
    if system == "semantic_cc":
        from bench_semantic_cc import run_semantic_cc

        schedule = {"caption_only": "caption-only", "2_stage": "2-stage", "1_stage": "1-stage"}.get(name, "3-stage")
        res = run_semantic_cc(schedule, seed, data, run_dir, None, meteor, config=CONFIGS / config_file)
        return {**res, "variant": variant}
    sets = [f"data.root={data}", f"train.output_dir={run_dir / 'run'}", f"train.seed={seed}",
            "logging.progress=false", *extra]  # fmt: skip
    if system == "dfm":
        sets += [f"model.prior.model_dir={run_dir.parent / 'prior' / 'run' / 'best'}",
                 f"loss.embedding_cache={run_dir.parent / 'embeddings'}"]  # fmt: skip
    t0 = time.time()
    result = train(load_config(CONFIGS / config_file, overrides=sets), resume=None)
    train_s = time.time() - t0
    ev = evaluate_model(result.best_dir, data, "levir-mci", "test", out_dir=run_dir / "eval_test",
                        protocols=("rsicc",), meteor=meteor, progress=False, device="cpu")  # fmt: skip
    res = ev.result
    figures = {k: res.scores.get(k) for k in ("Bleu_4", "METEOR", "CIDEr", "S_m")}
    figures |= {"nochange_acc": res.nochange_acc, "change_acc": res.change_acc}
    return {"variant": variant, "seed": seed, "figures": figures, "updates": result.global_step,
            "best_epoch": result.best_epoch, "train_seconds": round(train_s, 1)}  # fmt: skip


def _cell(rows: list[dict], key: str) -> str:
    vals = [100 * r["figures"][key] for r in rows if r["figures"].get(key) is not None]
    if not vals:
        return "—"
    m, s = _mean_sd(vals)
    return f"{m:.2f} ± {s:.2f}"


def summarise(results: list[dict], variants: list[str]) -> str:
    """One markdown table per system: mean ± sd over the seeds that finished."""
    text: list[str] = []
    for system in VARIANTS:
        names = [v for v in variants if v.startswith(f"{system}:")]
        if not names:
            continue
        cd = system == "semantic_cc"
        cols = [*CAPTION_COLUMNS, *(f"CD {c}" for c in CD_COLUMNS if cd)]
        text += ["", f"### {system}", "", "| variant | seeds | " + " | ".join(cols) + " | updates | train s |",
                 "|" + "---|" * (len(cols) + 4)]  # fmt: skip
        for v in names:
            rows = [r for r in results if r["variant"] == v]
            cells = [_cell(rows, c) for c in CAPTION_COLUMNS] + [_cell(rows, c) for c in CD_COLUMNS if cd]
            updates = _mean_sd([r.get("updates", 0) for r in rows])[0] if rows else float("nan")
            secs = _mean_sd([r["train_seconds"] for r in rows])[0] if rows else float("nan")
            text.append(f"| {v} | {len(rows)} | " + " | ".join(cells) + f" | {updates:.0f} | {secs:.0f} |")
    return "\n".join(text)


def standin_table(cache_dirs: list[Path]) -> str:
    """The stand-ins the runs started from: target, updates, seconds and held-out figures (their cards)."""
    lines = ["| stand-in | updates | seconds | held-out figures |", "|---|---|---|---|"]
    for folder in cache_dirs:
        card = json.loads((folder / "pretrain_card.json").read_text())
        held = card.get("held_out") or {}
        shown = ", ".join(f"{k} {v:.3g}" for k, v in held.items() if not k.startswith("IoU_"))
        t = card["training"]
        lines.append(f"| {folder.name} | {t['updates']} | {t['seconds']} | {shown} |")
    return "\n".join(lines)


def prepare(out: Path, data: Path, variants: list[str]) -> list[Path]:
    """The data, the stand-ins every variant's config names, DFM's prior: built once, before the runs."""
    from changecap.engine import load_config, train
    from changecap.engine.pretrain import build_standins
    from changecap.synth import generate_synthcc

    out.mkdir(parents=True, exist_ok=True)
    if not (data / "LevirCCcaptions.json").exists():
        print(f"generating SynthCC small (seed 0) → {data}", flush=True)
        generate_synthcc(data, preset="small", seed=0, progress=False)
    built: dict[Path, None] = {}
    for file in dict.fromkeys(VARIANTS[v.split(":")[0]][v.split(":")[1]][0] for v in variants):
        config = load_config(CONFIGS / file, overrides=[f"data.root={data}"])
        for plan in build_standins(config.model, data, config.source):
            built.update({p.directory: None for p in plan.walk()})
    needs_prior = any(v.startswith("dfm:") and v != "dfm:no_prior" for v in variants)
    if needs_prior and not (out / "prior" / "run" / "best").is_dir():
        print(f"training DFM's change-detection prior ({PRIOR_CONFIG}, seed 0)", flush=True)
        sets = [f"data.root={data}", f"train.output_dir={out / 'prior' / 'run'}", "logging.progress=false"]
        train(load_config(CONFIGS / PRIOR_CONFIG, overrides=sets))
    return list(built)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench_out/foundations")
    p.add_argument("--systems", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--variants", nargs="+", choices=all_variants(), help="default: every variant of --systems")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--meteor", default="java", choices=("java", "approx", "off"))
    p.add_argument("--cache", help="the stand-in cache (sets CHANGECAP_CACHE; default: the usual cache folder)")
    p.add_argument("--one", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.cache:
        os.environ["CHANGECAP_CACHE"] = str(Path(args.cache).resolve())
    out = Path(args.out).resolve()
    data = out / "synthcc_small_seed0"
    if args.one:  # worker mode: one run in this process
        import torch

        torch.set_num_threads(args.threads)
        variant, seed = args.one[0], int(args.one[1])
        folder = out / folder_name(variant, seed)
        res = run_one(variant, seed, data, folder, args.meteor)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "result.json.tmp"
        tmp.write_text(json.dumps(res, indent=1, default=float))
        os.replace(tmp, folder / "result.json")
        return 0

    variants = args.variants or [v for v in all_variants() if v.split(":")[0] in args.systems]
    t_start = time.time()
    standins = prepare(out, data, variants)
    todo = [(v, s) for s in args.seeds for v in variants if not (out / folder_name(v, s) / "result.json").exists()]
    print(f"{len(todo)} run(s) to do, {args.jobs} at a time, {args.threads} thread(s) each", flush=True)
    common = ["--out", str(out), "--threads", str(args.threads), "--meteor", args.meteor]
    common += ["--cache", os.environ["CHANGECAP_CACHE"]] if os.environ.get("CHANGECAP_CACHE") else []
    jobs = [(f"{v} seed {s}", [__file__, "--one", v, str(s), *common], out / folder_name(v, s)) for v, s in todo]
    failed = run_pool(jobs, args.jobs, args.threads)
    results = [json.loads(f.read_text()) for v in variants for s in args.seeds
               if (f := out / folder_name(v, s) / "result.json").exists()]  # fmt: skip
    text = [f"SynthCC small test split, rsicc protocol, scores ×100, mean ± sd over seeds {args.seeds}; captions of "
            "the selected model, CD of the final weights (Semantic-CC)", summarise(results, variants), "",
            "Stand-ins (pretrained once on the train split, seed 0):", "", standin_table(standins),
            f"\nwall time {time.time() - t_start:.0f} s; runs in {out}"]  # fmt: skip
    print("\n".join(text))
    (out / "summary.md").write_text("\n".join(text) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    if failed:
        print(f"failed runs: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
