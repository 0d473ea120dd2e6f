"""Trivial caption baselines: the floor every model must clear.

* :class:`MostFrequentCaption` — predicts the single most frequent training caption for every pair (on LEVIR-style
  data this is a no-change sentence, so it scores ``nochange_acc = 1`` and ``change_acc = 0``).
* :class:`NearestNeighbourCaptioner` — describes a test pair with a caption of the training pair whose images look
  most alike (cosine similarity of small thumbnails of *before*, *after* and ``|after - before|``). It ignores
  semantics entirely, so it shows how much a metric rewards retrieval of a plausible sentence.

Both work on any :class:`~changecap.data.datasets.ChangeCaptionDataset` with images.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from PIL import Image
from tqdm import tqdm

from changecap.data.text import normalize_caption


class _PairSource(Protocol):
    """What the baselines need from a dataset: records with captions and a way to read a pair's pixels."""

    records: Sequence  # PairRecord-like: .name, .captions, .changed

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]: ...


def _pair_count(ds: _PairSource) -> int:
    return len(ds.records)


class MostFrequentCaption:
    """Predict the most frequent (normalised) training caption everywhere. Ties break alphabetically."""

    def __init__(self) -> None:
        self.caption: str | None = None

    def fit(self, train: _PairSource) -> MostFrequentCaption:
        counts: Counter[str] = Counter()
        for rec in train.records:
            counts.update(normalize_caption(c) for c in rec.captions)
        if not counts:
            raise ValueError("cannot fit MostFrequentCaption on a dataset without captions")
        best = max(counts.values())
        self.caption = min(c for c, n in counts.items() if n == best)
        return self

    def predict(self, ds: _PairSource) -> dict[str, str]:
        if self.caption is None:
            raise RuntimeError("call fit() first")
        return {rec.name: self.caption for rec in ds.records}


def pair_descriptor(before: np.ndarray, after: np.ndarray, thumb: int = 16) -> np.ndarray:
    """Unit-norm descriptor of a pair: thumbnails of before, after and their absolute difference.

    Each date is reduced to ``thumb × thumb`` (box filter, so misregistration of a few pixels barely matters) and
    standardised per channel, which removes global illumination shifts before the difference is taken.
    """

    def small(img: np.ndarray) -> np.ndarray:
        pil = Image.fromarray(img).resize((thumb, thumb), Image.Resampling.BOX)
        x = np.asarray(pil, dtype=np.float32)  # [t, t, 3]
        return (x - x.mean(axis=(0, 1))) / (x.std(axis=(0, 1)) + 1e-6)

    a, b = small(before), small(after)
    diff = np.abs(b - a)
    # The difference carries the change signal; weight it twice the appearance terms.
    feat = np.concatenate([a.ravel(), b.ravel(), 2.0 * diff.ravel()])  # [3 * t * t * 3]
    return feat / (np.linalg.norm(feat) + 1e-12)


class NearestNeighbourCaptioner:
    """1-nearest-neighbour retrieval of a training caption by image similarity."""

    def __init__(self, thumb: int = 16, progress: bool = True) -> None:
        self.thumb = thumb
        self.progress = progress
        self.features: np.ndarray | None = None
        self.captions: list[str] = []

    def _describe(self, ds: _PairSource, desc: str) -> np.ndarray:
        n = _pair_count(ds)
        feats = [
            pair_descriptor(*ds.load_pair(i), thumb=self.thumb)
            for i in tqdm(range(n), desc=desc, disable=not self.progress, leave=False)
        ]
        return np.stack(feats) if feats else np.zeros((0, 1), dtype=np.float32)  # [N, F]

    def fit(self, train: _PairSource) -> NearestNeighbourCaptioner:
        self.features = self._describe(train, "nn-baseline: index train")
        # The neighbour's consensus caption: the reference most similar (token overlap) to its siblings, so a
        # retrieved pair is described by its most typical sentence rather than an arbitrary one.
        self.captions = [_consensus_caption(rec.captions) for rec in train.records]
        return self

    def predict(self, ds: _PairSource) -> dict[str, str]:
        if self.features is None:
            raise RuntimeError("call fit() first")
        queries = self._describe(ds, "nn-baseline: query")
        sims = queries @ self.features.T  # [Nq, Ntrain]
        nearest = sims.argmax(axis=1)
        return {rec.name: self.captions[j] for rec, j in zip(ds.records, nearest, strict=True)}


def _consensus_caption(captions: Sequence[str]) -> str:
    normed = [normalize_caption(c) for c in captions]
    if len(normed) <= 1:
        return normed[0] if normed else ""
    sets = [set(c.split()) for c in normed]

    def score(i: int) -> float:
        return sum(len(sets[i] & sets[j]) / max(1, len(sets[i] | sets[j])) for j in range(len(sets)) if j != i)

    return normed[max(range(len(normed)), key=score)]
