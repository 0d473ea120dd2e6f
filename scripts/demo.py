"""`make demo`: the main job, end to end on a CPU.

1. generate a SynthCC set (LEVIR-MCI layout) — or reuse it when the same one is already there;
2. score the two trivial caption baselines on its test split (nearest neighbour by image, most frequent caption);
3. train the CPU HiSem configuration on it (``configs/hisem_synthcc_cpu.yaml``; ``--config`` picks another system,
   e.g. ``configs/change_detection_synthcc_cpu.yaml``, whose report shows masks instead of captions), after
   pretraining the stand-ins the configuration starts from (``standin:FILE``) on the set's train split the first
   time; they are cached (``~/.cache/changecap/standins``, ``$CHANGECAP_CACHE``) and reused afterwards;
4. evaluate the trained model on the test split (rsicc protocol, changed/unchanged breakdown);
5. caption a handful of test pairs and write an HTML report (pairs side by side, predictions vs references,
   metrics of the model next to the baselines, the training curves, and for models that declare attention maps
   where the model looked for each word).

Everything lands in ``--out`` (default ``demo_out/``). Steps 3–5 are skipped with ``--no-train``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


#: the training run's folder in ``--out``; the trained model is its ``best/`` (``demo_out/run/best`` by default)
RUN_FOLDER = "run"


def data_folder(out: Path, preset: str, seed: int) -> Path:
    """Where the SynthCC set goes (``demo_out/synthcc_small_seed0`` by default)."""
    return out / f"synthcc_{preset}_seed{seed}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", help="output directory")
    parser.add_argument("--preset", default="small", choices=("tiny", "small", "full"), help="SynthCC preset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default=str(REPO / "configs" / "hisem_synthcc_cpu.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training config override")
    parser.add_argument("--no-train", action="store_true", help="stop after the baselines")
    parser.add_argument(
        "--prior-config",
        default=str(REPO / "configs" / "change_detection_synthcc_cpu.yaml"),
        help="for DFM: the change detector trained first as its prior (reused when already trained in --out)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from changecap.errors import ChangeCapError

    try:
        return run(args)
    except ChangeCapError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from changecap.cli.cmd_baselines import run_baselines
    from changecap.synth import generate_synthcc

    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = data_folder(out, args.preset, args.seed)

    log(f"1/5 SynthCC ({args.preset} preset, seed {args.seed}) → {data_dir}")
    if (data_dir / "LevirCCcaptions.json").exists():
        log("    already generated, reusing it")
    else:
        generate_synthcc(data_dir, preset=args.preset, seed=args.seed, progress=True)

    log("2/5 trivial baselines on the test split")
    baselines = run_baselines(data_dir, "levir-mci", "test", out_dir=out / "baselines", meteor="java")
    for name, res in baselines.items():
        print(f"\n== baseline: {name} (test split, rsicc protocol) ==")
        print(res.format_table())
    if args.no_train:
        log(f"done in {time.time() - t0:.0f} s (training skipped)")
        return 0

    from changecap.engine import load_config, train

    overrides = [f"data.root={data_dir}", f"train.output_dir={out / RUN_FOLDER}", *args.set]
    config = load_config(args.config, overrides=overrides)
    prior = config.model.get("prior") or {}
    if config.model.get("architecture") == "dfm" and prior.get("enabled", True):
        prior_dir = out / "prior_run" / "best"
        if (prior_dir / "model.safetensors").exists():
            log(f"3/5 DFM's change-detection prior: reusing {prior_dir}")
        else:
            log(f"3/5 DFM's change-detection prior first: training {Path(args.prior_config).name}")
            prior_cfg = load_config(args.prior_config, overrides=[f"data.root={data_dir}",
                                                                  f"train.output_dir={out / 'prior_run'}"])  # fmt: skip
            prior_dir = Path(train(prior_cfg).best_dir)
        overrides.append(f"model.prior.model_dir={prior_dir}")
        config = load_config(args.config, overrides=overrides)
    from changecap.engine.pretrain import build_standins
    from changecap.engine.standins import find_standins

    if find_standins(config.model, data_dir, config.source):
        log("3/5 the stand-ins the config starts from (pretrained on the train split once, then reused from the cache)")
        t_standins = time.time()
        build_standins(config.model, data_dir, config.source, log=lambda msg: log(f"    {msg}"))
        log(f"    stand-ins ready in {time.time() - t_standins:.0f} s")
    log(f"3/5 training {Path(args.config).name}")
    result = train(config)
    model_dir = Path(result.best_dir)

    log(f"4/5 evaluating {model_dir} on the test split")
    from changecap.inference import evaluate_model, write_html_report

    evaluation = evaluate_model(model_dir, data_dir, fmt="levir-mci", split="test", out_dir=out / "evaluation")
    if evaluation.result is not None:  # a change detector makes masks only
        print(f"\n== {config.model.get('architecture', 'model')} (CPU config), test split, rsicc protocol ==")
        print(evaluation.result.format_table())
    if evaluation.change_detection is not None:
        from changecap.inference.evaluate import format_change_detection

        print(format_change_detection(evaluation.change_detection))

    log("5/5 captioning test pairs and writing the HTML report")
    show_examples(model_dir, data_dir)
    report = write_html_report(
        out / "report.html",
        evaluation=evaluation,
        baselines=baselines,
        data_root=data_dir,
        fmt="levir-mci",
        split="test",
        num_examples=12,
        baseline_predictions={
            name: json.loads((out / "baselines" / f"baseline_{name}_predictions.json").read_text())
            for name in baselines
        },
        curves=Path(result.output_dir) / "curves.svg",
    )
    cd = evaluation.change_detection
    summary = {
        "model": evaluation.result.scores if evaluation.result is not None else {},
        "change_detection": None if cd is None else cd.to_dict(),
        **{f"baseline_{k}": v.scores for k, v in baselines.items()},
        "seconds": round(time.time() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(f"done in {time.time() - t0:.0f} s — report: {report}")
    return 0


def show_examples(model_dir: Path, data_dir: Path, per_kind: int = 3) -> None:
    """Caption a few changed and unchanged test pairs from their files with ``ChangeCaptioner`` (the user path)."""
    from changecap.data import parse_annotations
    from changecap.inference import ChangeCaptioner

    records = parse_annotations(data_dir, "levir-mci", "test")
    picks = [r for r in records if r.changed][:per_kind] + [r for r in records if not r.changed][:per_kind]
    captioner = ChangeCaptioner.from_pretrained(model_dir)
    results = captioner([r.before_path for r in picks], [r.after_path for r in picks])
    for rec, res in zip(picks, results, strict=True):
        prob = "" if res.change_probability is None else f", P(change) = {res.change_probability:.2f}"
        pixels = "" if res.mask is None else f", {100 * float((res.mask > 0).mean()):.1f} % of pixels changed"
        print(f"\n{rec.name} ({'changed' if rec.changed else 'unchanged'}){prob}{pixels}")
        if res.caption is not None:
            print(f"  model:     {res.caption}")
        print(f"  reference: {rec.captions[0]}")


if __name__ == "__main__":
    raise SystemExit(main())
