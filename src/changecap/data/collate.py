"""Batching of :class:`~changecap.data.datasets.ChangeCaptionDataset` samples (``DataLoader(collate_fn=...)``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from changecap.data.vocab import NULL_ID


def collate_pairs(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch (contract in ``docs/architecture.md``).

    Returns ``image [B, 2, C, H, W]`` (when the samples have images), ``tokens [B, R_max, T]`` padded with
    ``<NULL>`` rows, ``num_refs [B]`` (real reference rows per sample, so padding rows can be told apart),
    ``target [B, T]``, ``changed [B]`` bool, ``mask [B, H, W]`` and ``semantic [B, 2, H, W]`` (each only when every
    sample has one) and ``captions``,
    ``caption`` (the training reference as text), ``name``, ``split`` as lists.
    """
    if not samples:
        raise ValueError("collate_pairs needs at least one sample")
    lengths = {int(s["tokens"].shape[1]) for s in samples}
    if len(lengths) != 1:
        raise ValueError(f"samples have different max_length values {sorted(lengths)}")
    (t_len,) = lengths
    r_max = max(int(s["tokens"].shape[0]) for s in samples)
    tokens = torch.full((len(samples), r_max, t_len), NULL_ID, dtype=torch.long)  # [B, R_max, T]
    for b, s in enumerate(samples):
        tokens[b, : s["tokens"].shape[0]] = s["tokens"]
    batch: dict[str, Any] = {
        "tokens": tokens,
        "num_refs": torch.tensor([int(s["tokens"].shape[0]) for s in samples], dtype=torch.long),  # [B]
        "target": torch.stack([s["target"] for s in samples]),  # [B, T]
        "changed": torch.tensor([bool(s["changed"]) for s in samples], dtype=torch.bool),  # [B]
        "captions": [list(s["captions"]) for s in samples],
        "caption": [s.get("caption", s["captions"][0] if s["captions"] else "") for s in samples],
        "name": [s["name"] for s in samples],
        "split": [s["split"] for s in samples],
    }
    with_image = sum("image" in s for s in samples)
    if with_image == len(samples):
        batch["image"] = torch.stack([s["image"] for s in samples])  # [B, 2, C, H, W]
    elif with_image:
        raise ValueError("some samples have images and others do not; cannot batch them together")
    if all("mask" in s for s in samples):
        batch["mask"] = torch.stack([s["mask"] for s in samples])  # [B, H, W]
    if all("semantic" in s for s in samples):
        batch["semantic"] = torch.stack([s["semantic"] for s in samples])  # [B, 2, H, W]
    return batch
