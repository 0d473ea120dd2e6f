"""Benchmark (a): caption quality on the SynthCC held-out test split — HiSem vs the plain baseline vs HiSem without
BDAM vs HiSem without HASD, same data, same budget, several seeds each (mean ± sd).

Every run trains one variant from scratch with ``changecap.engine.train`` on the same SynthCC set (the ``small``
preset by default, generated once with ``--data-seed``), selects its checkpoint on val BLEU-4 as the engine does,
and scores that checkpoint on the test split with the rsicc protocol (vocabulary-id strings, METEOR through the
reference jar when Java is there). Runs go to separate processes (``--jobs`` at a time, ``--threads`` torch threads
each), so they neither share RNG state nor a thread pool; a finished run leaves ``result.json`` in its folder and is
not repeated when the benchmark is started again. Each run's test captions are kept in
``<variant>_seed<k>/eval_test/predictions_test.json``, the input of ``changecap compare --runs`` (paired bootstrap
intervals and randomisation p-values of the differences between variants, docs/evaluation.md).

Variants (the budget — epochs, batch, schedule, data — is the config's; only the fusion differs). Every model
starts from random initialisation (the ``*_scratch`` CPU configs); ``bench_foundations.py`` compares them with the
configurations that start from the pretrained stand-ins:

* ``hisem``    ``configs/hisem_synthcc_cpu_scratch.yaml`` (BDAM + HASD);
* ``plain``    ``configs/plain_synthcc_cpu.yaml`` (concatenate both dates + Transformer encoder layers; its own tuned
  learning rate, 5e-4, because 1e-3 collapses it to one caption);
* ``no_bdam``  HiSem with BDAM replaced by the identity (``model.fusion.use_bdam=false``; the paper's "+HASD only");
* ``no_hasd``  HiSem with HASD replaced by the unchanged-path block for every pair and no router
  (``model.fusion.use_hasd=false``; the paper's "+BDAM").

DFM variants (not run by default): ``dfm`` (``configs/dfm_synthcc_cpu_scratch.yaml``), ``dfm_no_tgcl``
(``loss.tgcl_weight=0``), ``dfm_no_gate`` (``loss.gate=false``), ``dfm_no_prior`` (``model.prior.enabled=false``),
``dfm_mpnet`` / ``dfm_minilm`` (TGCL's captions embedded by the real all-mpnet-base-v2 / all-MiniLM-L6-v2, fetched
from PyPI by ``benchmarks/sentence_models.py``; the config's default is a built-in bag-of-words encoder); the
change-detection prior they share is trained once first (``configs/change_detection_synthcc_cpu.yaml``, seed 0).

Usage::

    python benchmarks/bench_quality.py [--seeds 0 1 2] [--variants hisem plain no_bdam no_hasd dfm ...] [--jobs 2]
        [--threads 1] [--out bench_out/quality] [--set train.epochs=6 ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "hisem": ("hisem_synthcc_cpu_scratch.yaml", []),
    "plain": ("plain_synthcc_cpu.yaml", []),
    "no_bdam": ("hisem_synthcc_cpu_scratch.yaml", ["model.fusion.use_bdam=false"]),
    "no_hasd": ("hisem_synthcc_cpu_scratch.yaml", ["model.fusion.use_hasd=false"]),
    # DFM at the same data and budget (20 epochs, batch 32); its prior is trained once (seed 0) first
    "dfm": ("dfm_synthcc_cpu_scratch.yaml", []),
    "dfm_no_tgcl": ("dfm_synthcc_cpu_scratch.yaml", ["loss.tgcl_weight=0"]),
    "dfm_no_gate": ("dfm_synthcc_cpu_scratch.yaml", ["loss.gate=false"]),
    "dfm_no_prior": ("dfm_synthcc_cpu_scratch.yaml", ["model.prior.enabled=false"]),
    # TGCL with a real sentence encoder (benchmarks/sentence_models.py assembles it from PyPI) instead of the
    # config's built-in bag-of-words encoder; model.text_dim is set to its width by run_one
    "dfm_mpnet": ("dfm_synthcc_cpu_scratch.yaml", []),
    "dfm_minilm": ("dfm_synthcc_cpu_scratch.yaml", []),
}
SENTENCE_MODELS = {"dfm_mpnet": "all-mpnet-base-v2", "dfm_minilm": "all-MiniLM-L6-v2"}
DEFAULT_VARIANTS = ["hisem", "plain", "no_bdam", "no_hasd"]
PRIOR_CONFIG = "change_detection_synthcc_cpu.yaml"
COLUMNS = ("Bleu_4", "CIDEr", "S_m", "METEOR", "ROUGE_L", "nochange_acc", "change_acc")


def run_one(variant: str, seed: int, data: Path, run_dir: Path, overrides: list[str], meteor: str) -> dict:
    """Train one variant with one seed, evaluate its selected checkpoint on test, return the figures."""
    from changecap.engine import load_config, train
    from changecap.inference import evaluate_model

    cfg_name, extra = VARIANTS[variant]
    sets = [f"data.root={data}", f"train.output_dir={run_dir / 'run'}", f"train.seed={seed}"]
    if variant.startswith("dfm"):  # the prior trained by main() and one embedding cache for every DFM run
        prior = run_dir.parent / "prior" / "run" / "best"
        sets += [f"model.prior.model_dir={prior}", f"loss.embedding_cache={run_dir.parent / 'embeddings'}"]
    if variant in SENTENCE_MODELS:  # assembled by main() before the runs start
        from sentence_models import sentence_model_width

        folder = run_dir.parent / "sentence_models" / SENTENCE_MODELS[variant]
        sets += [f"loss.sentence_model={folder}", f"model.text_dim={sentence_model_width(folder)}"]
    sets += ["logging.progress=false", *extra, *overrides]
    config = load_config(REPO / "configs" / cfg_name, overrides=sets)
    t0 = time.time()
    result = train(config, resume=False)
    train_s = time.time() - t0
    ev = evaluate_model(
        result.best_dir, data, "levir-mci", "test", out_dir=run_dir / "eval_test", protocols=("rsicc",),
        meteor=meteor, progress=False, device="cpu",
    )  # fmt: skip
    res = ev.result
    figures = {k: res.scores.get(k) for k in ("Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "S_m")}
    figures |= {"nochange_acc": res.nochange_acc, "change_acc": res.change_acc}
    return {
        "variant": variant,
        "seed": seed,
        "figures": figures,
        "meteor_impl": res.meteor_impl,
        "best_epoch": result.best_epoch,
        "best_val_bleu4": result.best_metric,
        "updates": result.global_step,
        "train_seconds": round(train_s, 1),
        "overrides": sets,
    }


def _mean_sd(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(results: list[dict], variants: list[str]) -> str:
    """Markdown table, scores ×100 as mean ± sd over the seeds that finished."""
    head = "| variant | seeds | " + " | ".join(COLUMNS) + " | train s/run |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for v in variants:
        rows = [r for r in results if r["variant"] == v]
        cells = []
        for c in COLUMNS:
            vals = [100 * r["figures"][c] for r in rows if r["figures"].get(c) is not None]
            m, s = _mean_sd(vals)
            cells.append("n/a" if not vals else f"{m:.2f} ± {s:.2f}")
        secs = _mean_sd([r["train_seconds"] for r in rows])[0]
        lines.append(f"| {v} | {len(rows)} | " + " | ".join(cells) + f" | {secs:.0f} |")
    return "\n".join(lines)


def paired_differences(results: list[dict], a: str, b: str, metric: str) -> list[float]:
    """``a − b`` of ``metric`` (×100) per seed that both variants finished."""
    by = {(r["variant"], r["seed"]): r["figures"].get(metric) for r in results}
    seeds = sorted({r["seed"] for r in results})
    return [100 * (by[(a, s)] - by[(b, s)]) for s in seeds if by.get((a, s)) is not None and by.get((b, s)) is not None]


def run_pool(jobs: list[tuple[str, list[str], Path]], parallel: int, threads: int) -> list[str]:
    """Run ``(label, argv, folder)`` jobs as ``python argv`` processes, ``parallel`` at a time, each logging to
    ``folder/log.txt`` with ``threads`` OpenMP threads; returns the labels of the jobs that failed."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    todo, running, failed = list(jobs), [], []
    while todo or running:
        while todo and len(running) < parallel:
            label, argv, folder = todo.pop(0)
            folder.mkdir(parents=True, exist_ok=True)
            log = open(folder / "log.txt", "w")  # noqa: SIM115 — closed with the process
            proc = subprocess.Popen([sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((label, proc, log, time.time()))
            print(f"  started {label}", flush=True)
        time.sleep(2)
        for item in list(running):
            label, proc, log, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            if proc.returncode != 0:
                failed.append(label)
            status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see log.txt)"
            print(f"  {label}: {status} in {time.time() - t0:.0f} s", flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    from changecap.cli.config_args import add_overrides_argument

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench_out/quality")
    p.add_argument("--preset", default="small", choices=("tiny", "small", "full"))
    p.add_argument("--pairs", type=int, default=None, help="SynthCC pairs (default: the preset's)")
    p.add_argument("--data-seed", type=int, default=0, help="SynthCC generation seed (same data for every run)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (one process each)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--meteor", default="java", choices=("java", "approx", "off"))
    add_overrides_argument(p, help_text="config override applied to every variant (e.g. train.epochs=6)")
    p.add_argument("--one", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    out = Path(args.out).resolve()
    data = out / f"synthcc_{args.preset}{'' if args.pairs is None else f'_{args.pairs}'}_seed{args.data_seed}"
    if args.one:  # worker mode: one run in this process
        import torch

        torch.set_num_threads(args.threads)
        variant, seed = args.one[0], int(args.one[1])
        run_dir = out / f"{variant}_seed{seed}"
        res = run_one(variant, seed, data, run_dir, args.overrides, args.meteor)
        tmp = run_dir / "result.json.tmp"
        tmp.write_text(json.dumps(res, indent=1))
        os.replace(tmp, run_dir / "result.json")
        return 0

    from changecap.synth import generate_synthcc

    out.mkdir(parents=True, exist_ok=True)
    if not (data / "LevirCCcaptions.json").exists():
        print(f"generating SynthCC {args.preset} (seed {args.data_seed}) → {data}", flush=True)
        generate_synthcc(data, preset=args.preset, pairs=args.pairs, seed=args.data_seed, progress=False)
    if any(v.startswith("dfm") for v in args.variants) and not (out / "prior" / "run" / "best").is_dir():
        from changecap.engine import load_config, train

        print(f"training DFM's change-detection prior ({PRIOR_CONFIG}, seed 0) → {out / 'prior'}", flush=True)
        t0 = time.time()
        train(load_config(REPO / "configs" / PRIOR_CONFIG, overrides=[
            f"data.root={data}", f"train.output_dir={out / 'prior' / 'run'}", "logging.progress=false"]))  # fmt: skip
        print(f"  prior trained in {time.time() - t0:.0f} s", flush=True)
    for v in args.variants:
        if v in SENTENCE_MODELS:
            from sentence_models import fetch_sentence_model

            print(f"sentence model for {v}: {fetch_sentence_model(SENTENCE_MODELS[v], out / 'sentence_models')}")
    todo = [(v, s) for s in args.seeds for v in args.variants if not (out / f"{v}_seed{s}" / "result.json").exists()]
    print(f"{len(todo)} run(s) to do, {args.jobs} at a time, {args.threads} thread(s) each", flush=True)
    extra = [
        "--out",
        str(out),
        "--preset",
        args.preset,
        "--data-seed",
        str(args.data_seed),
        *(["--pairs", str(args.pairs)] if args.pairs else []),
        "--threads",
        str(args.threads),
        "--meteor",
        args.meteor,
        *[x for o in args.overrides for x in ("--set", o)],
    ]
    jobs = [(f"{v} seed {s}", [__file__, "--one", v, str(s), *extra], out / f"{v}_seed{s}") for v, s in todo]
    t_start = time.time()
    failed = run_pool(jobs, args.jobs, args.threads)

    results = []
    for v in args.variants:
        for s in args.seeds:
            f = out / f"{v}_seed{s}" / "result.json"
            if f.exists():
                results.append(json.loads(f.read_text()))
    table = summarise(results, args.variants)
    lines = [
        f"SynthCC {args.preset} (data seed {args.data_seed}) test split, rsicc protocol, scores x100, "
        f"mean ± sd over training seeds {args.seeds}; METEOR: {results[0]['meteor_impl'] if results else 'n/a'}",
        "",
        table,
        "",
    ]
    if "hisem" in args.variants:
        for other in [v for v in args.variants if v != "hisem"]:
            for metric in ("Bleu_4", "CIDEr", "S_m"):
                d = paired_differences(results, "hisem", other, metric)
                if d:
                    m, sd = _mean_sd(d)
                    wins = sum(x > 0 for x in d)
                    lines.append(
                        f"hisem − {other}: {metric} {m:+.2f} ± {sd:.2f} (HiSem ahead in {wins}/{len(d)} seeds)"
                    )
    lines.append(f"\nwall time {time.time() - t_start:.0f} s; runs in {out}")
    text = "\n".join(lines)
    print("\n" + text)
    (out / "summary.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    if failed:
        print(f"failed runs: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
