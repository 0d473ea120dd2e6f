"""Typed configuration of ``changecap pretrain TARGET CONFIG.yaml``, read like the training configs.

Sections: ``target`` (optional: the target the file is written for), ``data``, ``model`` (the target's own config
class reads it, errors name ``model.<field>``), ``optim`` and ``schedule`` (the training configs' classes), ``train``
and ``logging``. A YAML file plus ``--set a.b=value`` overrides; every bad value is a one-line
:class:`~changecap.errors.ConfigError` naming the dotted field and the file.

>>> cfg = load_pretrain_config("configs/pretrain/clip_synthcc_cpu.yaml", ["train.epochs=2"])  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from changecap.data.pretrain_data import ResizeMode, Source, check_train_split, resolve_mean_std
from changecap.engine.config import (
    DeviceName,
    LoggingConfig,
    OptimConfig,
    Precision,
    ScheduleConfig,
    apply_overrides,
    read_config_file,
)
from changecap.errors import ConfigError
from changecap.schema import INTERNAL, from_dict, require, to_plain, with_path


@dataclass
class PretrainDataConfig:
    """Where the single-date training data are and how images are prepared (``changecap.data.pretrain_data``).

    ``source``: ``synthcc`` (a SynthCC root with ``scene_captions.json``), ``folder`` (a user's images with
    captions and/or segmentation maps) or ``auto``. ``split`` must be ``train``. ``captions``: a folder source's
    captions file when it is not ``ROOT/captions.csv`` / ``.jsonl``. ``image_size``, ``resize_mode`` and
    ``normalize`` should be what the systems that load the foundation use (the card records them).
    ``pair_captions``: text targets also read the change captions of the root's ``LevirCCcaptions.json`` (train
    pairs). ``documents``: text targets train on one sequence per image or pair holding all its captions in a random
    order (``CaptionDocumentDataset``) instead of one sequence per caption. ``holdout``: the fraction of training
    images (pairs, for SynthCC) kept out of pretraining to evaluate it. ``cache_images``: keep the resized images in
    memory after their first read (in the main process: with ``num_workers`` > 0 each epoch's workers start empty).
    """

    root: str = ""
    source: Source = "auto"
    split: str = "train"
    captions: str | None = None
    image_size: int = 64
    resize_mode: ResizeMode = "resize"
    normalize: Any = "clip"
    pair_captions: bool = True
    documents: bool = False
    holdout: float = 0.05
    cache_images: bool = True
    num_workers: int = 0

    def validate(self, prefix: str = "data") -> None:
        require(bool(str(self.root).strip()), f"{prefix}.root", "is required (the training data folder)")
        check_train_split(self.split, f"{prefix}.split")
        require(self.image_size > 0, f"{prefix}.image_size", f"must be positive, got {self.image_size}")
        resolve_mean_std(self.normalize, f"{prefix}.normalize")
        require(0.0 <= self.holdout < 1.0, f"{prefix}.holdout", f"must be in [0, 1), got {self.holdout}")
        require(self.num_workers >= 0, f"{prefix}.num_workers", f"must be >= 0, got {self.num_workers}")


@dataclass
class PretrainTrainSection:
    """Loop settings. ``batch_size`` is the GLOBAL batch (all processes together). ``max_steps`` stops early (smoke
    runs; the schedule still spans every epoch). ``eval_every``: evaluate on the held-out images every that many
    epochs (0: after the last epoch only). ``output_dir`` is the directory written, atomically, at the end."""

    epochs: int = 10
    batch_size: int = 64
    precision: Precision = "fp32"
    seed: int = 0
    device: DeviceName = "auto"
    max_steps: int | None = None
    eval_every: int = 0
    eval_batch_size: int = 128
    output_dir: str = ""

    def validate(self, prefix: str = "train") -> None:
        require(self.epochs > 0, f"{prefix}.epochs", f"must be > 0, got {self.epochs}")
        require(self.batch_size > 0, f"{prefix}.batch_size", f"must be > 0, got {self.batch_size}")
        require(self.seed >= 0, f"{prefix}.seed", f"must be >= 0, got {self.seed}")
        require(self.max_steps is None or self.max_steps > 0, f"{prefix}.max_steps", "must be > 0 or null")
        require(self.eval_every >= 0, f"{prefix}.eval_every", f"must be >= 0 (0: at the end), got {self.eval_every}")
        require(self.eval_batch_size > 0, f"{prefix}.eval_batch_size", f"must be > 0, got {self.eval_batch_size}")
        require(bool(str(self.output_dir).strip()), f"{prefix}.output_dir", "is required (the directory to write)")


def _optim_defaults() -> OptimConfig:
    return OptimConfig(name="adamw", lr=5e-4, weight_decay=0.1, grad_clip=1.0)


def _schedule_defaults() -> ScheduleConfig:
    return ScheduleConfig(name="cosine", warmup_steps=20, min_lr_ratio=0.0)


@dataclass
class PretrainConfig:
    """A whole pretraining run. Build it with :func:`load_pretrain_config` or :meth:`from_dict`."""

    target: str | None = None
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    model: dict[str, Any] = field(default_factory=dict)  # read by the target's config class
    optim: OptimConfig = field(default_factory=_optim_defaults)
    schedule: ScheduleConfig = field(default_factory=_schedule_defaults)
    train: PretrainTrainSection = field(default_factory=PretrainTrainSection)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: str | None = field(default=None, compare=False, repr=False, metadata=INTERNAL)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> PretrainConfig:
        """Validate a nested dict (as parsed from YAML); the ``model`` section is left to the target."""
        if not isinstance(data, Mapping):
            raise ConfigError("<root>", f"expected a mapping of sections, got {type(data).__name__}", path=path)
        # An absent section means its defaults (not the dataclass defaults of OptimConfig / ScheduleConfig).
        merged = dict(data)
        for name, default in (("optim", _optim_defaults()), ("schedule", _schedule_defaults())):
            section = merged.get(name)
            if section is None or isinstance(section, Mapping):
                merged[name] = {**to_plain(default), **(section or {})}
        cfg = from_dict(cls, merged, "", path=path, validate=False)
        cfg.source = None if path is None else str(path)
        try:
            cfg.validate()
        except ConfigError as e:
            raise with_path(e, path) from None
        return cfg

    def validate(self) -> None:
        self.data.validate("data")
        self.optim.validate("optim")
        self.schedule.validate("schedule")
        self.train.validate("train")
        require(self.logging.log_every > 0, "logging.log_every", f"must be > 0, got {self.logging.log_every}")

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


def load_pretrain_config(path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> PretrainConfig:
    """Read a YAML pretraining config, apply ``a.b=value`` overrides, validate (one-line ConfigErrors)."""
    p = Path(path)
    data = read_config_file(p)
    apply_overrides(data, overrides, path=p)
    return PretrainConfig.from_dict(data, path=p)
