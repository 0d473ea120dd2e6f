"""Validation during training: batched greedy captions of the validation split, scored like the paper (§8.9).

Each process decodes its shard of the split; predictions are gathered and scored on rank 0 with
``evaluate_captions(protocol="rsicc", vocab=<training vocabulary>)`` (id strings, ``<UNK>`` kept), METEOR off by
default because the Java scorer costs far more than the decoding. The scores are then broadcast so every process
takes the same model-selection decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from changecap.data.vocab import Vocabulary
from changecap.engine.distributed import DistContext, broadcast_object, gather_objects
from changecap.engine.precision import autocast
from changecap.engine.sampler import ShardSampler


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
    return [s if isinstance(s, str) else [int(t) for t in s] for s in seqs], prob


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
    meteor: str = "off",
    autocast_dtype: torch.dtype | None = None,
    collate_fn: Any = None,
    num_workers: int = 0,
) -> ValidationResult:
    """Caption every pair of ``dataset`` (sharded over processes) and score the captions on rank 0."""
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
    correct = counted = 0
    for batch in loader:
        image = batch["image"].to(ctx.device, non_blocking=True)
        with autocast(ctx.device, autocast_dtype):
            seqs, prob = caption_batch(model, image, max_length, beam_size)
        for name, caps, seq in zip(batch["name"], batch["captions"], seqs, strict=True):
            preds[name] = seq if isinstance(seq, str) else vocab.decode(seq)
            refs[name] = list(caps)
        flags = batch.get("changed")
        if prob is not None and flags is not None:
            predicted = torch.as_tensor(prob).float().cpu() > 0.5  # [B]
            correct += int((predicted == flags).sum())
            counted += len(seqs)
    model.train(was_training)

    shards = gather_objects((preds, refs, correct, counted), ctx)
    result: ValidationResult | None = None
    if ctx.is_main:
        all_preds: dict[str, str] = {}
        all_refs: dict[str, list[str]] = {}
        for p, r, _, _ in shards:
            all_preds.update(p)
            all_refs.update(r)
        n_correct = sum(s[2] for s in shards)
        n_counted = sum(s[3] for s in shards)
        evaluation = evaluate_captions(all_preds, all_refs, protocol="rsicc", vocab=vocab, meteor=meteor)
        scores = {k: float(v) for k, v in evaluation.scores.items() if isinstance(v, (int, float))}
        result = ValidationResult(
            scores=scores,
            change_accuracy=n_correct / n_counted if n_counted else None,
            num_pairs=len(all_preds),
            predictions=all_preds,
        )
    return broadcast_object(result, ctx)
