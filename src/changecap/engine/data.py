"""Building a run's data: vocabulary, caption length, datasets, and one deterministic loader per phase.

Each phase of an epoch (``objectives/base.py``) reads its own training dataset, optionally filtered, in its own
deterministic order: a :class:`~changecap.engine.sampler.DeterministicBatchSampler` over the phase's items. The
first phase of a run uses the run's seed exactly (so a one-phase run draws the batches it always drew); phase ``k``
uses ``seed + k · PHASE_SEED_STRIDE`` so two phases over the same items do not share an order. The DataLoader of a
phase gets a private generator, so creating an iterator never consumes the global RNG (exact resume).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from changecap.data.vocab import Vocabulary
from changecap.engine.config import TrainConfig, normalize_value
from changecap.engine.distributed import DistContext
from changecap.engine.objectives.base import Phase
from changecap.engine.sampler import DeterministicBatchSampler
from changecap.errors import ConfigError

#: seed offset between consecutive phases of an epoch (a prime, far from any seed a user types)
PHASE_SEED_STRIDE = 1_000_003


def build_vocabulary_for(config: TrainConfig) -> Vocabulary:
    """The run's vocabulary: ``data.vocab.path`` when given, else built from the dataset's captions."""
    from changecap.data.datasets import build_vocabulary

    v = config.data.vocab
    if v.path:
        return Vocabulary.load(v.path)
    return build_vocabulary(config.data.root, config.data.format, splits=v.splits, threshold=v.threshold, rule=v.rule)


def resolve_max_length(config: TrainConfig) -> int | None:
    """``data.max_length``, with ``auto`` = the longest caption over all splits + 2 (``<START>``/``<END>``)."""
    if config.data.max_length != "auto":
        return config.data.max_length  # type: ignore[return-value]
    from changecap.data.annotations import parse_annotations
    from changecap.data.text import tokenize

    records = parse_annotations(config.data.root, config.data.format, check_files=False)
    return 2 + max((len(tokenize(c)) for r in records for c in r.captions), default=0)


def build_datasets(config: TrainConfig, vocab: Vocabulary) -> tuple[Dataset, Dataset]:
    """Train split (canonicalised, augmented as configured) and the validation split (references untouched)."""
    from changecap.data.datasets import open_dataset

    d, t = config.data, config.train
    common: dict[str, Any] = {
        "vocab": vocab,
        "max_length": resolve_max_length(config),
        "image_size": d.image_size,
        "normalize": normalize_value(d.normalize),
        "resize_mode": d.resize_mode,
        "seed": t.seed,
    }
    semantic = {"semantic_maps": True} if d.semantic_maps else {}  # the main dataset only: extras may lack maps
    train_set = open_dataset(
        d.root,
        d.format,
        "train",
        sampling=d.sampling,
        canonicalize_no_change=d.canonicalize_no_change,
        augment=d.augment,
        packed=d.packed,  # a pack of this dataset (not of the extras below)
        **common,
        **semantic,
    )
    val_set = open_dataset(d.root, d.format, t.val_split, sampling="random", packed=d.packed, **common, **semantic)
    if d.extra:
        from changecap.data.datasets import MixedDataset

        extras = []
        for i, extra in enumerate(d.extra):
            if not Path(extra.root).is_dir():
                raise ConfigError(f"data.extra[{i}].root", f"dataset folder {extra.root} not found", path=config.source)
            extras.append(open_dataset(extra.root, extra.format, extra.split, sampling=d.sampling, **common))
        train_set = MixedDataset([train_set, *extras])
    return train_set, val_set


def phase_indices(dataset: Dataset, phase: Phase) -> list[int] | None:
    """The items of ``dataset`` a phase uses (``None``: all of them, in dataset order)."""
    if phase.filter is None:
        return None
    return [i for i in range(len(dataset)) if phase.filter(dataset, i)]  # type: ignore[arg-type]


@dataclass
class PhaseData:
    """One phase's dataset, sampler and loader."""

    phase: Phase
    dataset: Dataset
    sampler: DeterministicBatchSampler
    loader: DataLoader

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch


class PhaseLoaders:
    """Builds (and caches) the loader of every phase a run meets; keyed by phase name, dataset and filter."""

    def __init__(
        self,
        datasets: Mapping[str, Dataset],
        config: TrainConfig,
        ctx: DistContext,
        collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]],
    ) -> None:
        self.datasets = dict(datasets)
        self.config = config
        self.ctx = ctx
        self.collate_fn = collate_fn
        self._cache: dict[tuple[int, str, str, Any], PhaseData] = {}
        self._indices: dict[tuple[str, Any], list[int] | None] = {}

    def get(self, phase: Phase, position: int) -> PhaseData:
        """The loader of ``phase``, the ``position``-th phase of its epoch (which fixes its seed).

        Filters are compared by identity: make them module-level functions (or other long-lived objects), not
        lambdas created anew for every epoch, so each phase's items are selected once per run.
        """
        key = (position, phase.name, phase.dataset, phase.filter)
        if key not in self._cache:
            self._cache[key] = self._build(phase, position)
        return self._cache[key]

    def _build(self, phase: Phase, position: int) -> PhaseData:
        t = self.config.train
        if phase.dataset not in self.datasets:
            known = ", ".join(self.datasets)
            raise ConfigError("loss", f"phase {phase.name!r} reads dataset {phase.dataset!r}; the run has {known}")
        dataset = self.datasets[phase.dataset]
        index_key = (phase.dataset, phase.filter)
        if index_key not in self._indices:
            self._indices[index_key] = phase_indices(dataset, phase)
        indices = self._indices[index_key]
        n = len(dataset) if indices is None else len(indices)  # type: ignore[arg-type]
        seed = t.seed + position * PHASE_SEED_STRIDE
        sampler = DeterministicBatchSampler(
            n,
            t.batch_size,
            world_size=self.ctx.world_size,
            rank=self.ctx.rank,
            grad_accum=t.grad_accum,
            seed=seed,
            shuffle=True,
            drop_last=t.drop_last,
            indices=indices,
        )
        if sampler.steps_per_epoch == 0:
            raise ConfigError(
                "train.batch_size",
                f"phase {phase.name!r} has {n} training items, too few for one update with "
                f"{self.ctx.world_size} process(es) × grad_accum {t.grad_accum}",
                path=self.config.source,
            )
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self.collate_fn,
            num_workers=self.config.data.num_workers,
            pin_memory=self.ctx.device.type == "cuda",
            # A private generator: creating an iterator must not draw from the global RNG, or a run resumed
            # mid-epoch would see different dropout masks from an uninterrupted one.
            generator=torch.Generator().manual_seed(t.seed),
        )
        return PhaseData(phase, dataset, sampler, loader)

    def epoch_plan(self, phases: Sequence[Phase]) -> list[PhaseData]:
        """The loaders of one epoch's phases, in order (each with this epoch's phase object and its options)."""
        return [dataclasses.replace(self.get(phase, k), phase=phase) for k, phase in enumerate(phases)]
