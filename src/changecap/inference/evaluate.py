"""Evaluate a saved model on a dataset split: predictions JSON + metrics report (``changecap evaluate``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from changecap.data.files import atomic_write_text
from changecap.data.image_io import save_mask_png
from changecap.inference.predictor import ChangeCaptioner
from changecap.models.contract import Capabilities, Sampling


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
    change_detection: Any = None  # ChangeDetectionScores (classes: 0 no change, 1 change) for models with a CD head
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # predicted change masks (uint8, model resolution)
    capabilities: Capabilities = field(default_factory=Capabilities)  # what the model declares (its architecture's)

    @property
    def result(self) -> Any:
        """The ``rsicc``-protocol result (what published numbers use); None for a mask-only model."""
        return self.results.get("rsicc") or next(iter(self.results.values()), None)


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
    beam_size: int | None = None,
    max_length: int | None = None,
    sampling: Sampling | None = None,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    compile: bool = False,  # noqa: A002 - the CLI's --compile
    progress: bool = True,
    embedding_model: str | None = None,
    embedding_cache: str | os.PathLike[str] | None = None,
) -> ModelEvaluation:
    """Caption every pair of ``split`` with batched decoding and score the captions (and the change masks of a
    model with a change-detection head). ``beam_size``, ``max_length`` and ``sampling`` reach the model's
    ``predict`` (None: the model's own decoding).

    The ``rsicc`` protocol uses the model's own vocabulary (the one it was trained with), as the published numbers
    do; ``coco`` scores PTB-tokenised words. Predictions are keyed by the pair's file name and written to
    ``<out_dir>/predictions_<split>.json`` (``{pair name: caption}``, the input of ``changecap compare``).
    ``embedding_model`` (a sentence-transformers folder or Hub id) adds the labelled embedding similarity
    (:mod:`changecap.metrics.embedding`) beside the standard scores.
    """
    from changecap.data.collate import collate_pairs
    from changecap.data.datasets import open_dataset
    from changecap.metrics import evaluate_captions, meteor_session
    from changecap.models.parts.change_masks import BinaryChangeScore

    embed = None
    if embedding_model is not None:
        from changecap.inference.embedding import sentence_embedder

        embed = sentence_embedder(embedding_model, embedding_cache)
    captioner = ChangeCaptioner.from_pretrained(model_dir, device=device, precision=precision, compile=compile)
    can = captioner.capabilities
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
    # change detection: binary (class > 0 = change, as the models are trained; unlabelled pixels, 255, left out as in
    # training and validation), when the model and the data have masks
    scored_masks = BinaryChangeScore() if can.change_mask else None
    masks: dict[str, np.ndarray] = {}
    # started now, the METEOR JVM loads its paraphrase table while the model works; one JVM scores every protocol
    with meteor_session(meteor if can.captions else "off") as scorer:
        for batch in tqdm(loader, desc=f"captioning {split}", disable=not progress):
            with torch.inference_mode():
                results = captioner.caption_tensor(batch["image"], beam_size, max_length, sampling)
            for name, caps, res in zip(batch["name"], batch["captions"], results, strict=True):
                if res.caption is None:
                    continue  # a change detector: masks only
                preds[name] = res.caption
                probs[name] = res.change_probability
                refs[name] = list(caps)
            for name, res in zip(batch["name"], results, strict=True):
                if res.mask is not None:
                    masks[name] = res.mask
            if scored_masks is not None and "mask" in batch:
                scored_masks.update(np.stack([r.mask for r in results]), batch["mask"])  # [B, S, S]
        results_by_protocol = {
            proto: evaluate_captions(
                preds, refs, protocol=proto, vocab=captioner.vocab, meteor=scorer,
                **({} if embed is None else {"embed": embed[0], "embed_label": embed[1]}),
            )  # fmt: skip
            for proto in (protocols if preds else ())  # a mask-only model is scored on its masks alone
        }
    evaluation = ModelEvaluation(preds, probs, refs, results_by_protocol, str(model_dir), split, masks=masks,
                                 capabilities=can)  # fmt: skip
    if scored_masks is not None:
        evaluation.change_detection = scored_masks.compute()  # None when the data has no masks
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        pred_path = out / f"predictions_{split}.json"
        atomic_write_text(pred_path, json.dumps(preds, indent=1))
        metrics_path = out / f"metrics_{split}.json"
        payload: dict[str, Any] = {p: r.to_dict() for p, r in results_by_protocol.items()} | {"model": str(model_dir)}
        sections = [f"== protocol: {p} ==\n{r.format_table()}" for p, r in results_by_protocol.items()]
        if evaluation.change_detection is not None:
            payload["change_detection"] = evaluation.change_detection.to_dict()
            sections.append(format_change_detection(evaluation.change_detection))
        atomic_write_text(metrics_path, json.dumps(payload, indent=1))
        report_path = out / f"metrics_{split}.txt"
        atomic_write_text(report_path, "\n\n".join(sections) + "\n")
        evaluation.files = {"predictions": str(pred_path), "metrics": str(metrics_path), "report": str(report_path)}
        if masks:
            evaluation.files["masks"] = str(write_masks(masks, out / f"masks_{split}"))
    return evaluation


def write_masks(masks: dict[str, np.ndarray], folder: Path) -> Path:
    """Predicted masks (the model's resolution) as PNGs named after their pairs, in ``folder``."""
    for name, mask in masks.items():
        save_mask_png(mask, folder / f"{Path(name).stem}.png")
    return folder


def format_change_detection(scores: Any) -> str:
    """Precision, recall, F1, IoU (per class and for "change") and overall accuracy as a text table (×100)."""
    lines = ["== change detection (binary: class > 0 = change), x100 ==",
             "class        precision   recall       F1      IoU"]  # fmt: skip
    for c, name in enumerate(("no change", "change")):
        p, r, f, i = (100 * float(v[c]) for v in (scores.precision, scores.recall, scores.f1, scores.iou))
        lines.append(f"{name:<12} {p:9.2f} {r:8.2f} {f:8.2f} {i:8.2f}")
    lines.append(f"mean F1 {100 * scores.mean_f1:.2f}   mean IoU {100 * scores.mean_iou:.2f}   "
                 f"OA {100 * scores.overall_accuracy:.2f}")  # fmt: skip
    return "\n".join(lines)
