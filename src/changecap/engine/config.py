"""Typed training configuration, loaded from YAML with ``--set a.b=value`` overrides.

A run is described by one :class:`TrainConfig` with the sections ``data``, ``model``, ``optim``, ``schedule``,
``loss``, ``train`` and ``logging``. Two sections belong to the system being trained and stay plain dicts here:
``model`` is read by the architecture's config class (``changecap.models.registry.config_from_dict``), ``loss`` by
the config class of the architecture's objective (``changecap.engine.objectives``); both name bad fields as
``model.<field>`` / ``loss.<field>``. Every other section is a dataclass read by the one strict loader
(``changecap.schema``), so a typo or a bad value fails before any data is read, with a one-line
:class:`~changecap.errors.ConfigError` naming the dotted field and the file.

>>> cfg = load_config("configs/plain_synthcc_cpu.yaml", overrides=["train.epochs=3"])   # doctest: +SKIP
>>> cfg.train.epochs                                                                      # doctest: +SKIP
3
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from changecap.data.files import atomic_write_text
from changecap.errors import ConfigError
from changecap.schema import INTERNAL, from_dict, require, to_plain, with_path

Precision = Literal["fp32", "bf16"]
ScheduleName = Literal["constant", "cosine", "step"]
VocabSplits = Literal["train", "all"]
ThresholdRule = Literal["gt", "ge"]
ResizeMode = Literal["resize", "clip"]
Sampling = Literal["random", "all"]
MeteorMode = Literal["off", "java"]
DeviceName = Literal["auto", "cpu", "cuda"]
OptimizerName = Literal["adam", "adamw"]
OptimizerImpl = Literal["auto", "fused", "foreach", "for-loop"]


# ---------------------------------------------------------------------------------------------------------- sections
@dataclass
class VocabConfig:
    """Where the vocabulary comes from: an existing ``vocab.json`` (``path``) or built from the captions.

    Building from the ``train`` split is the leak-free default; ``splits: all`` with ``threshold: 5, rule: ge``
    reproduces the 501-entry LEVIR-CC vocabulary that published LEVIR-CC numbers most likely used.
    ``threshold: null`` takes the dataset format's convention (5; Dubai-CC 0).
    """

    path: str | None = None
    splits: VocabSplits = "train"
    threshold: int | None = None
    rule: ThresholdRule = "gt"


@dataclass
class ExtraDataConfig:
    """A further training dataset mixed into the train split (``data.extra``), read with the main preprocessing."""

    root: str
    format: str = "levir-cd"
    split: str = "train"


@dataclass
class DataConfig:
    """Dataset options, handed to ``changecap.data.datasets.ChangeCaptionDataset``.

    ``image_size`` / ``max_length`` ``null`` take the format's convention (native size; 41 tokens);
    ``max_length: auto`` is the longest caption of the dataset (all splits) + ``<START>``/``<END>``.
    ``normalize`` is a statistics name (``dataset``, ``clip``, ``imagenet``, ``none``, ``levir-cc``, …) or
    ``[[mean r, g, b], [std r, g, b]]`` on the 0–1 scale. The train split uses ``canonicalize_no_change`` and
    ``augment``; the validation split never does (its references keep their paraphrases). ``semantic_maps: true``
    adds each date's class map to the train and validation samples (``semantic``, long ``[2, H, W]``; formats with
    per-date maps only: ``second-cc``) for models that read them.
    ``packed`` names a pack of the dataset (``changecap data pack``): the train and validation splits read their
    pixels from it instead of the image files (same samples; the captions still come from ``root``).
    """

    root: str = ""
    format: str = "levir-cc"
    image_size: int | None = None
    normalize: Any = "dataset"
    resize_mode: ResizeMode = "resize"
    sampling: Sampling = "random"
    canonicalize_no_change: bool = True
    augment: bool = False
    vocab: VocabConfig = field(default_factory=VocabConfig)
    max_length: int | Literal["auto"] | None = None
    num_workers: int = 0
    semantic_maps: bool = False
    packed: str | None = None
    # further training sets mixed into the train split: e.g. LEVIR-CD pairs (masks, no captions) beside LEVIR-CC
    extra: list[ExtraDataConfig] = field(default_factory=list)


@dataclass
class OptimConfig:
    """The optimiser, by name, over the parameter groups the model declares (``model.parameter_groups()``).

    ``group_lr`` maps a group name to its learning rate (e.g. ``encoder``, ``fusion``, ``decoder``);
    a group not named there uses ``lr``. Adam and AdamW are per-parameter, so one optimiser with several groups
    computes the same update as one optimiser per group (what some official code bases do).

    ``implementation`` picks PyTorch's kernel for the update: ``fused`` (one kernel over all tensors; on CPU 4-6×
    faster than ``for-loop`` for 2-60 M parameters, benchmarks/bench_model_speed.py), ``foreach`` (multi-tensor),
    ``for-loop`` (one tensor at a time, the reference); ``auto`` is ``fused``. The three agree to float rounding
    (tested), not bit for bit: a run resumes with the implementation it started with.
    """

    name: OptimizerName = "adam"
    lr: float = 1e-4
    group_lr: dict[str, float] = field(default_factory=dict)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float | None = None
    implementation: OptimizerImpl = "auto"

    def validate(self, prefix: str = "optim") -> None:
        require(self.lr >= 0 and math.isfinite(self.lr), f"{prefix}.lr", f"must be a finite number >= 0, got {self.lr}")
        for group, v in self.group_lr.items():
            require(v >= 0 and math.isfinite(v), f"{prefix}.group_lr.{group}", f"must be a finite number >= 0, got {v}")
        betas = list(self.betas)
        require(all(0.0 <= b < 1.0 for b in betas), f"{prefix}.betas", f"both betas must be in [0, 1), got {betas}")
        require(self.eps > 0, f"{prefix}.eps", f"must be > 0, got {self.eps}")
        require(self.weight_decay >= 0, f"{prefix}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        clip = self.grad_clip
        require(clip is None or clip > 0, f"{prefix}.grad_clip", f"must be > 0 or null, got {clip}")


@dataclass
class ScheduleConfig:
    """Learning-rate multiplier per optimiser update: linear warm-up, then ``constant``, ``cosine`` or ``step``.

    ``cosine`` decays to ``min_lr_ratio`` × lr at the last update of the run; ``step`` multiplies by ``gamma``
    every ``step_size`` updates. The paper's ``StepLR(5, γ=1)`` is ``constant``.
    """

    name: ScheduleName = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    step_size: int = 1000
    gamma: float = 0.1

    def validate(self, prefix: str = "schedule") -> None:
        require(self.warmup_steps >= 0, f"{prefix}.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        ratio = self.min_lr_ratio
        require(0.0 <= ratio <= 1.0, f"{prefix}.min_lr_ratio", f"must be in [0, 1], got {ratio}")
        require(self.step_size > 0, f"{prefix}.step_size", f"must be > 0, got {self.step_size}")
        require(self.gamma > 0, f"{prefix}.gamma", f"must be > 0, got {self.gamma}")


@dataclass
class TrainSection:
    """Loop settings. ``batch_size`` is the GLOBAL batch (all processes and accumulation micro-batches together).

    ``val_every`` is in epochs (0 = never validate), ``checkpoint_every_steps`` in optimiser updates (0 = only at
    epoch ends), ``max_steps`` stops early (tests, smoke runs) without changing the LR schedule, so a run stopped
    by ``max_steps`` resumes into exactly the run it would have been. ``drop_last`` drops the last, smaller global
    batch of an epoch; it is dropped anyway when it cannot give every process and micro-batch one sample.
    ``val_beam_size`` and ``val_max_length`` are the decoding options of validation's ``model.predict``
    (``val_max_length`` null: the model's own limit, e.g. its caption decoder's length, which the data sized); a
    model that cannot honour them (beam search without the ``beam_search`` capability) is refused at start.
    ``compile`` runs the model's forward (and so its backward) through ``torch.compile`` (inductor), falling back to
    eager execution with one warning when compilation fails; validation decoding stays eager. Without dropout the
    losses agree with eager training to float rounding (tested over 50 updates), not bit for bit; compiled dropout
    draws its masks from another random stream, and an output the loss ignores gives its parameters zero gradients
    where eager gives none (Adam's momentum then still moves them).
    ``frozen_feature_cache_gb`` > 0 keeps the output of the CLIP encoder's frozen blocks per image, up to that many
    GiB of host memory per process, so that from the second epoch on only the trained blocks run
    on an image already seen, in training and in validation (ViT-B/16: 605 KB per image in fp32; LEVIR-CC's 6,815
    training and 1,333 validation pairs need 9.2 GiB for every lookup to hit). Losses and gradients are the same bit
    for bit on CPU, where an image's features do not depend on the rest of its batch (checked at the paper's sizes);
    GPU kernels chosen per batch shape may differ in the last bits. With ``data.augment`` the augmented images
    rarely repeat and mostly miss. Not with ``compile``.
    """

    epochs: int = 50
    batch_size: int = 64
    grad_accum: int = 1
    drop_last: bool = False
    precision: Precision = "fp32"
    compile: bool = False
    frozen_feature_cache_gb: float = 0.0
    seed: int = 0
    deterministic: bool = False
    device: DeviceName = "auto"
    val_every: int = 1
    val_split: str = "val"
    val_batch_size: int = 32
    val_max_length: int | None = None
    val_beam_size: int = 1
    val_meteor: MeteorMode = "off"
    select_metric: str = "Bleu_4"
    max_steps: int | None = None
    checkpoint_every_steps: int = 0
    output_dir: str = "runs/run"


@dataclass
class LoggingConfig:
    """``metrics.jsonl`` is always written; TensorBoard only when requested and installed."""

    tensorboard: bool = False
    log_every: int = 10
    progress: bool = True


_PLACEHOLDER_VOCAB_SIZE = 4  # the four special tokens: the smallest valid vocabulary
SECTIONS: tuple[str, ...] = ("data", "model", "optim", "schedule", "loss", "train", "logging")


@dataclass
class TrainConfig:
    """A whole training run. Build it with :func:`load_config` or :meth:`from_dict`."""

    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=dict)  # the architecture's config (see the module docstring)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: dict[str, Any] = field(default_factory=dict)  # the objective's config (see the module docstring)
    train: TrainSection = field(default_factory=TrainSection)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # The file the config was read from (for error messages); not a config key, never serialised.
    source: str | None = field(default=None, compare=False, repr=False, metadata=INTERNAL)

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], path: str | os.PathLike[str] | None = None, check_model: bool = True
    ) -> TrainConfig:
        """Validate a nested dict (as parsed from YAML). Raises :class:`ConfigError` naming the dotted field.

        With ``check_model`` the ``model`` section is also validated by its architecture's config class and the
        ``loss`` section by the config class of that architecture's objective (the trainer validates both again
        when it builds the model and the objective); without, both are left for the trainer (a model built by an
        injected ``model_builder`` has no registry entry).
        """
        if not isinstance(data, Mapping):
            raise ConfigError("<root>", f"expected a mapping of sections, got {type(data).__name__}", path=path)
        cfg = from_dict(cls, data, "", path=path, validate=False)
        cfg.source = None if path is None else str(path)
        try:
            cfg.validate()
        except ConfigError as e:
            raise with_path(e, path) from None
        if check_model:
            validate_model_section(cfg.model, path)
            validate_loss_section(cfg, path)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists) that :meth:`from_dict` reads back to an equal config."""
        return to_plain(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the resolved config as YAML (atomically, :func:`~changecap.data.files.atomic_write_text`)."""
        p = Path(path)
        atomic_write_text(p, self.to_yaml())
        return p

    # ------------------------------------------------------------------ semantic checks
    def validate(self, prefix: str = "") -> None:
        """Range and consistency checks the type system cannot express (the ``model``/``loss`` sections excepted)."""

        def need(ok: bool, name: str, message: str) -> None:
            if not ok:
                raise ConfigError(name, message)

        d, o, s, t, lg = self.data, self.optim, self.schedule, self.train, self.logging
        need(bool(str(d.root).strip()), "data.root", "is required (the dataset root folder)")
        _check_format_and_normalize(d)
        need(d.image_size is None or d.image_size > 0, "data.image_size", f"must be positive, got {d.image_size}")
        need(d.resize_mode != "clip" or d.image_size is not None, "data.image_size", "resize_mode 'clip' needs one")
        need(
            d.max_length in (None, "auto") or d.max_length >= 2,  # type: ignore[operator]
            "data.max_length",
            f"must be >= 2, 'auto' or null, got {d.max_length}",
        )
        need(d.num_workers >= 0, "data.num_workers", f"must be >= 0, got {d.num_workers}")
        need(d.packed is None or bool(str(d.packed).strip()), "data.packed", "must name a pack folder or be null")
        need(d.vocab.threshold is None or d.vocab.threshold >= 0, "data.vocab.threshold", "must be >= 0")
        for i, extra in enumerate(d.extra):
            need(bool(str(extra.root).strip()), f"data.extra[{i}].root", "is required (the dataset root folder)")
            need(extra.split in ("train", "val", "test"), f"data.extra[{i}].split", f"unknown split {extra.split!r}")
            try:
                from changecap.data.annotations import check_format

                check_format(extra.format)
            except ConfigError as e:
                raise ConfigError(f"data.extra[{i}].format", e.message) from None
        o.validate("optim")
        s.validate("schedule")
        need(t.epochs > 0, "train.epochs", f"must be > 0, got {t.epochs}")
        need(t.batch_size > 0, "train.batch_size", f"must be > 0, got {t.batch_size}")
        need(t.grad_accum > 0, "train.grad_accum", f"must be > 0, got {t.grad_accum}")
        need(
            t.batch_size % t.grad_accum == 0,
            "train.batch_size",
            f"global batch {t.batch_size} is not divisible by grad_accum {t.grad_accum}",
        )
        cache_gb = t.frozen_feature_cache_gb
        need(
            math.isfinite(cache_gb) and cache_gb >= 0,
            "train.frozen_feature_cache_gb",
            f"must be a finite number >= 0 (0: off), got {cache_gb}",
        )
        need(
            not (cache_gb > 0 and t.compile),
            "train.frozen_feature_cache_gb",
            "cannot be combined with train.compile (the cache looks images up outside the compiled graph)",
        )
        need(t.seed >= 0, "train.seed", f"must be >= 0, got {t.seed}")
        need(t.val_every >= 0, "train.val_every", f"must be >= 0 (0: never), got {t.val_every}")
        need(t.val_split in ("train", "val", "test"), "train.val_split", f"unknown split {t.val_split!r}")
        need(t.val_batch_size > 0, "train.val_batch_size", f"must be > 0, got {t.val_batch_size}")
        need(t.val_max_length is None or t.val_max_length >= 2, "train.val_max_length", "must be >= 2 or null")
        need(t.val_beam_size >= 1, "train.val_beam_size", f"must be >= 1, got {t.val_beam_size}")
        need(bool(t.select_metric), "train.select_metric", "must name a metric, e.g. Bleu_4")
        need(t.max_steps is None or t.max_steps > 0, "train.max_steps", f"must be > 0 or null, got {t.max_steps}")
        need(t.checkpoint_every_steps >= 0, "train.checkpoint_every_steps", "must be >= 0 (0: epoch ends only)")
        need(bool(str(t.output_dir).strip()), "train.output_dir", "is required")
        need(lg.log_every > 0, "logging.log_every", f"must be > 0, got {lg.log_every}")


# ---------------------------------------------------------------------------------------------------------- loading
def load_config(path: str | os.PathLike[str], overrides: Iterable[str] = (), check_model: bool = True) -> TrainConfig:
    """Read a YAML config, apply ``a.b=value`` overrides (values parsed with ``yaml.safe_load``), validate.

    Errors (missing file, YAML syntax, unknown key, bad value) are one-line :class:`ConfigError` naming the file
    and the dotted field.
    """
    p = Path(path)
    data = read_config_file(p)
    apply_overrides(data, overrides, path=p)
    return TrainConfig.from_dict(data, path=p, check_model=check_model)


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping of sections in a YAML config file (``{}`` for an empty file); one-line ConfigErrors naming the
    file for a missing file, a YAML syntax error or a top level that is not a mapping."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("<file>", "config file not found", path=p) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("<file>", f"cannot read the config file ({e})", path=p) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)  # the YAML error's position, when the parser gives one
        where = f"<line {mark.line + 1}, column {mark.column + 1}>" if mark is not None else "<yaml>"
        problem = getattr(e, "problem", None) or str(e)  # the parser's short reason, when it gives one
        raise ConfigError(where, f"invalid YAML: {problem}", path=p) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("<root>", f"expected a mapping of sections, got {type(data).__name__}", path=p)
    return data


def apply_overrides(
    data: dict[str, Any], overrides: Iterable[str], path: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Set ``section.key=value`` entries in a raw config dict in place (``value`` parsed as YAML).

    Keys below ``model`` are free-form (the model config validates them); elsewhere an unknown key is reported by
    :meth:`TrainConfig.from_dict` with its dotted name.
    """
    for item in overrides:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(key or str(item), f"override {item!r} must look like section.key=value", path=path)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw  # not YAML (e.g. "a: b: c"): keep the literal string
        parts = key.split(".")
        node: dict[str, Any] = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                dotted = ".".join(parts[: depth + 1])
                raise ConfigError(key, f"cannot set a key below {dotted!r}, which is not a section", path=path)
            node = child
        node[parts[-1]] = value
    return data


def validate_model_section(model: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> Any:
    """Read the ``model`` section with its architecture's config class; return the config object.

    The trainer fills in the decoder's vocabulary size from the data, so a placeholder stands in for it here and
    the rest is checked now. Errors name ``model.<field>`` and the file.
    """
    from changecap.models.registry import config_from_dict

    section = dict(model)
    decoder = section.get("decoder")
    if isinstance(decoder, dict) and "vocab_size" not in decoder:
        section["decoder"] = {**decoder, "vocab_size": _PLACEHOLDER_VOCAB_SIZE}
    try:
        return config_from_dict(section, prefix="model")
    except ConfigError as e:
        raise with_path(e, path) from None


def validate_loss_section(config: TrainConfig, path: str | os.PathLike[str] | None = None) -> Any:
    """Read the ``loss`` section with the config class of the model's objective; return the loss config."""
    from changecap.engine.objectives import objective_factory
    from changecap.models.registry import get_architecture

    spec = get_architecture(config.model.get("architecture"))
    reader = getattr(objective_factory(spec.objective), "read_config", None)  # an objective class, or a function
    if reader is None:  # a plain factory function: it checks its section when the trainer calls it
        return None
    try:
        return reader(config.loss, config)
    except ConfigError as e:
        raise with_path(e, path) from None


def _check_format_and_normalize(d: DataConfig) -> None:
    """Validate ``data.format`` and ``data.normalize`` with the dataset's own rules, renaming the fields."""
    from changecap.data.annotations import check_format
    from changecap.data.datasets import resolve_normalization

    for name, check in (
        ("data.format", lambda: check_format(d.format)),
        ("data.normalize", lambda: resolve_normalization(normalize_value(d.normalize), d.format)),
    ):
        try:
            check()
        except ConfigError as e:
            raise ConfigError(name, e.message) from None


def normalize_value(value: Any) -> Any:
    """YAML gives lists; the dataset takes a name or a ``(mean, std)`` pair."""
    if isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value
