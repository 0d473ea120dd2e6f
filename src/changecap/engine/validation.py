"""Validation during training: batched greedy captions of the validation split, scored like the papers score theirs, and
change masks scored with the change-detection metrics.

Each process decodes its shard of the split; predictions are gathered and scored on rank 0 with
``evaluate_captions(protocol="rsicc", vocab=<training vocabulary>)`` (id strings, ``<UNK>`` kept), METEOR off by
default because the Java scorer costs far more than the decoding. The scores are then broadcast so every process
takes the same model-selection decision.

Models with a change-detection head (a ``predict`` that returns masks) are validated through ``predict``; on pairs
with a ground-truth mask their binary confusion matrices (class > 0 = change, 255 ignored) are summed over the
processes and reported as ``cd_F1``, ``cd_IoU``, ``cd_precision``, ``cd_recall`` (of "change") and ``cd_OA``. A
mask-only model (``predict`` gives no captions) has only those scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from changecap.data.vocab import Vocabulary
from changecap.engine.distributed import DistContext, broadcast_object, gather_objects
from changecap.engine.precision import autocast
from changecap.engine.sampler import ShardSampler
from changecap.metrics.meteor import MeteorScorer
from changecap.models.parts.change_masks import IGNORE, binary_change_labels


@dataclass
class ValidationResult:
    """Scores of one validation pass (metric name → value) and, for models that give a change probability, its
    accuracy on the dataset's change flag (probability > 0.5 = changed)."""

    scores: dict[str, float]
    change_accuracy: float | None
    num_pairs: int
    predictions: dict[str, str] = field(default_factory=dict)


def caption_batch(model: nn.Module, image: torch.Tensor, max_length: int, beam_size: int) -> tuple[list, Any]:
    """``model.caption`` → (captions, change probabilities or None), whatever the model returns exactly.

    A caption is a token-id list of the data vocabulary (decoded by the caller) or, for a model with its own
    tokenizer (an LLM), already a string.
    """
    out = model.caption(image, max_length=max_length, beam_size=beam_size)
    if isinstance(out, tuple) and len(out) == 2:
        seqs, prob = out
    else:
        seqs, prob = out, None
    return _captions(seqs), prob


def _captions(seqs: Any) -> list:
    """Captions as plain Python: strings stay strings, token sequences become lists of ints."""
    return [s if isinstance(s, str) else [int(t) for t in s] for s in seqs]


def predict_batch(
    model: nn.Module, image: torch.Tensor, max_length: int, beam_size: int
) -> tuple[list | None, Any, torch.Tensor | None]:
    """(captions or None, change probabilities or None, masks [B, S, S] or None) of one batch.

    Models with ``predict`` (a change-detection head) give captions and masks from one encoder pass; captioners
    without one go through ``model.caption``.
    """
    if not callable(getattr(model, "predict", None)):
        seqs, prob = caption_batch(model, image, max_length, beam_size)
        return seqs, prob, None
    out = model.predict(image)
    seqs = out.get("captions")
    return (None if seqs is None else _captions(seqs)), out.get("change_probability"), out.get("mask")


def change_detection_scores(confusion: Any) -> dict[str, float]:
    """A binary :class:`~changecap.metrics.change_detection.ConfusionMatrix` → the "change" class's F1 / IoU /
    precision / recall and the OA.

    An undefined ratio (no pixel predicted or labelled as change) is reported as 0, so the log stays valid JSON and
    model selection never compares against NaN."""
    scores = confusion.compute()
    values = {"cd_F1": scores.f1[1], "cd_IoU": scores.iou[1], "cd_precision": scores.precision[1],
              "cd_recall": scores.recall[1], "cd_OA": scores.overall_accuracy}  # fmt: skip
    return {k: 0.0 if math.isnan(float(v)) else float(v) for k, v in values.items()}


@torch.inference_mode()
def validate(
    model: nn.Module,
    dataset: Dataset,
    vocab: Vocabulary,
    ctx: DistContext,
    *,
    batch_size: int,
    max_length: int,
    beam_size: int = 1,
    meteor: str | MeteorScorer = "off",
    autocast_dtype: torch.dtype | None = None,
    collate_fn: Any = None,
    num_workers: int = 0,
) -> ValidationResult:
    """Caption every pair of ``dataset`` (sharded over processes) and score the captions on rank 0."""
    from changecap.data.collate import collate_pairs
    from changecap.metrics import evaluate_captions
    from changecap.metrics.change_detection import ConfusionMatrix

    was_training = model.training
    model.eval()
    loader = DataLoader(
        dataset,
        batch_sampler=ShardSampler(len(dataset), batch_size, ctx.world_size, ctx.rank),  # type: ignore[arg-type]
        collate_fn=collate_fn or collate_pairs,
        num_workers=num_workers,
        generator=torch.Generator(),  # never draw the loader's base seed from the global RNG (exact resume)
    )
    preds: dict[str, str] = {}
    refs: dict[str, list[str]] = {}
    correct = counted = pairs = 0
    confusion = ConfusionMatrix(2, ignore_index=IGNORE)
    for batch in loader:
        image = batch["image"].to(ctx.device, non_blocking=True)
        with autocast(ctx.device, autocast_dtype):
            seqs, prob, mask = predict_batch(model, image, max_length, beam_size)
        pairs += len(image)
        if seqs is not None:
            for name, caps, seq in zip(batch["name"], batch["captions"], seqs, strict=True):
                preds[name] = seq if isinstance(seq, str) else vocab.decode(seq)
                refs[name] = list(caps)
        truth = batch.get("mask")
        if mask is not None and truth is not None:
            confusion.update(mask.long().cpu(), binary_change_labels(truth).cpu())  # [B, S, S]
        flags = batch.get("changed")
        if prob is not None and flags is not None:
            predicted = torch.as_tensor(prob).float().cpu() > 0.5  # [B]
            correct += int((predicted == flags).sum())
            counted += len(image)
    model.train(was_training)

    shards = gather_objects((preds, refs, correct, counted, pairs, confusion), ctx)
    result: ValidationResult | None = None
    if ctx.is_main:
        all_preds: dict[str, str] = {}
        all_refs: dict[str, list[str]] = {}
        for p, r, *_ in shards:
            all_preds.update(p)
            all_refs.update(r)
        n_correct = sum(s[2] for s in shards)
        n_counted = sum(s[3] for s in shards)
        scores: dict[str, float] = {}
        if all_preds:
            evaluation = evaluate_captions(all_preds, all_refs, protocol="rsicc", vocab=vocab, meteor=meteor)
            scores = {k: float(v) for k, v in evaluation.scores.items() if isinstance(v, (int, float))}
        total = shards[0][5]
        for s in shards[1:]:
            total.merge(s[5])
        if total.matrix.sum() > 0:
            scores |= change_detection_scores(total)
        result = ValidationResult(
            scores=scores,
            change_accuracy=n_correct / n_counted if n_counted else None,
            num_pairs=sum(s[4] for s in shards),
            predictions=all_preds,
        )
    return broadcast_object(result, ctx)
