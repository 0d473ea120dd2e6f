"""Validation during training: captions of the validation split, scored like the papers score theirs, and change masks
scored with the change-detection metrics — whatever the model, through its one entry point (``model.predict``, the
model contract in ``models/contract.py``).

Each process predicts its shard of the split; predictions are gathered and scored on rank 0 with
``evaluate_captions(protocol="rsicc", vocab=<training vocabulary>)`` (id strings, ``<UNK>`` kept), METEOR off by
default because the Java scorer costs far more than the decoding. The scores are then broadcast so every process
takes the same model-selection decision.

What is scored follows the model's declared capabilities: captions (``captions``); the change probability's
accuracy on the dataset's change flag (``change_probability``); on pairs with a ground-truth mask, the predicted
masks' binary confusion matrices (``change_mask``; class > 0 = change, 255 ignored), summed over the processes and
reported as ``cd_F1``, ``cd_IoU``, ``cd_precision``, ``cd_recall`` (of "change") and ``cd_OA``. A mask-only model
has only those scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from changecap.data.vocab import Vocabulary
from changecap.engine.distributed import DistContext, broadcast_object, gather_objects
from changecap.engine.precision import autocast
from changecap.engine.sampler import ShardSampler
from changecap.metrics.meteor import MeteorScorer
from changecap.models.contract import ChangeModel
from changecap.models.parts.change_masks import BinaryChangeScore


@dataclass
class ValidationResult:
    """Scores of one validation pass (metric name → value) and, for models that give a change probability, its
    accuracy on the dataset's change flag (probability > 0.5 = changed)."""

    scores: dict[str, float]
    change_accuracy: float | None
    num_pairs: int
    predictions: dict[str, str] = field(default_factory=dict)


@torch.inference_mode()
def validate(
    model: ChangeModel,
    dataset: Dataset,
    vocab: Vocabulary,
    ctx: DistContext,
    *,
    batch_size: int,
    max_length: int | None = None,
    beam_size: int | None = 1,
    meteor: str | MeteorScorer = "off",
    autocast_dtype: torch.dtype | None = None,
    collate_fn: Any = None,
    num_workers: int = 0,
) -> ValidationResult:
    """Predict every pair of ``dataset`` (sharded over processes) and score the predictions on rank 0.

    ``max_length`` / ``beam_size``: the decoding options of ``model.predict`` (None: the model's own default)."""
    from changecap.data.collate import collate_pairs
    from changecap.metrics import evaluate_captions

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
    masks = BinaryChangeScore()
    for batch in loader:
        image = batch["image"].to(ctx.device, non_blocking=True)
        with autocast(ctx.device, autocast_dtype):
            out = model.predict(image, beam_size=beam_size, max_length=max_length)
        pairs += len(image)
        if out.texts is not None:
            for name, caps, text in zip(batch["name"], batch["captions"], out.texts, strict=True):
                preds[name] = text
                refs[name] = list(caps)
        truth = batch.get("mask")
        if out.mask is not None and truth is not None:
            masks.update(out.mask, truth)  # [B, S, S]
        flags = batch.get("changed")
        if out.change_probability is not None and flags is not None:
            predicted = out.change_probability.cpu() > 0.5  # [B]
            correct += int((predicted == flags).sum())
            counted += len(image)
    model.train(was_training)

    shards = gather_objects((preds, refs, correct, counted, pairs, masks), ctx)
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
        scores |= total.selection_scores()
        result = ValidationResult(
            scores=scores,
            change_accuracy=n_correct / n_counted if n_counted else None,
            num_pairs=sum(s[4] for s in shards),
            predictions=all_preds,
        )
    return broadcast_object(result, ctx)
