"""Evaluate a saved model on a dataset split: predictions JSON + metrics report (``changecap evaluate``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from changecap.inference.predictor import ChangeCaptioner


@dataclass
class ModelEvaluation:
    """Predictions of a model on one split and their scores under each protocol."""

    predictions: dict[str, str]
    change_probability: dict[str, float | None]
    references: dict[str, list[str]]
    results: dict[str, Any]  # protocol → CaptionEvalResult
    model_dir: str
    split: str
    files: dict[str, str] = field(default_factory=dict)

    @property
    def result(self) -> Any:
        """The ``rsicc``-protocol result (what published numbers use)."""
        return self.results.get("rsicc") or next(iter(self.results.values()))


def evaluate_model(
    model_dir: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    fmt: str = "levir-cc",
    split: str = "test",
    *,
    out_dir: str | os.PathLike[str] | None = None,
    protocols: tuple[str, ...] = ("rsicc", "coco"),
    meteor: str = "java",
    batch_size: int = 32,
    beam_size: int = 1,
    num_workers: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> ModelEvaluation:
    """Caption every pair of ``split`` with batched decoding and score the captions.

    The ``rsicc`` protocol uses the model's own vocabulary (the one it was trained with), as the published numbers
    do; ``coco`` scores PTB-tokenised words. Predictions are keyed by the pair's file name.
    """
    from changecap.data.collate import collate_pairs
    from changecap.data.datasets import open_dataset
    from changecap.metrics import evaluate_captions

    captioner = ChangeCaptioner.from_pretrained(model_dir, device=device)
    pp = captioner.preprocess
    ds = open_dataset(
        data_root,
        fmt,
        split,
        vocab=captioner.vocab,
        image_size=pp.image_size,
        normalize=(pp.mean, pp.std),
        resize_mode=pp.resize_mode,
        max_length=captioner.max_length,
    )
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_pairs)
    preds: dict[str, str] = {}
    probs: dict[str, float | None] = {}
    refs: dict[str, list[str]] = {}
    for batch in tqdm(loader, desc=f"captioning {split}", disable=not progress):
        with torch.inference_mode():
            results = captioner.caption_tensor(batch["image"], beam_size=beam_size)
        for name, caps, res in zip(batch["name"], batch["captions"], results, strict=True):
            preds[name] = res.caption
            probs[name] = res.change_probability
            refs[name] = list(caps)
    results_by_protocol = {
        proto: evaluate_captions(preds, refs, protocol=proto, vocab=captioner.vocab, meteor=meteor)
        for proto in protocols
    }
    evaluation = ModelEvaluation(preds, probs, refs, results_by_protocol, str(model_dir), split)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        pred_path = out / f"predictions_{split}.json"
        pred_path.write_text(json.dumps(preds, indent=1))
        metrics_path = out / f"metrics_{split}.json"
        metrics_path.write_text(
            json.dumps({p: r.to_dict() for p, r in results_by_protocol.items()} | {"model": str(model_dir)}, indent=1)
        )
        report_path = out / f"metrics_{split}.txt"
        report_path.write_text(
            "\n\n".join(f"== protocol: {p} ==\n{r.format_table()}" for p, r in results_by_protocol.items()) + "\n"
        )
        evaluation.files = {"predictions": str(pred_path), "metrics": str(metrics_path), "report": str(report_path)}
    return evaluation
