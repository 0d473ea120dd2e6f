"""Typed training configuration, loaded from YAML with ``--set a.b=value`` overrides.

A run is described by one :class:`TrainConfig` with the sections ``data``, ``model``, ``optim``, ``schedule``,
``loss``, ``train`` and ``logging``. ``model`` stays a plain dict: it is handed to
``changecap.models.config.ModelConfig.from_dict(d, prefix="model")``, which owns its schema and names bad fields as
``model.<field>``. Every other section is a dataclass whose fields are type-checked here, so a typo or a bad value
fails before any data is read, with a one-line :class:`~changecap.errors.ConfigError` naming the dotted field and
the file.

>>> cfg = load_config("configs/hisem_synthcc_cpu.yaml", overrides=["train.epochs=3"])   # doctest: +SKIP
>>> cfg.train.epochs                                                                      # doctest: +SKIP
3
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from changecap.errors import ConfigError

Precision = Literal["fp32", "bf16"]
ScheduleName = Literal["constant", "cosine", "step"]
VocabSplits = Literal["train", "all"]
ThresholdRule = Literal["gt", "ge"]
ResizeMode = Literal["resize", "clip"]
Sampling = Literal["random", "all"]
MeteorMode = Literal["off", "java"]
DeviceName = Literal["auto", "cpu", "cuda"]


# ---------------------------------------------------------------------------------------------------------- sections
@dataclass
class VocabConfig:
    """Where the vocabulary comes from: an existing ``vocab.json`` (``path``) or built from the captions.

    Building from the ``train`` split is the leak-free default; ``splits: all`` with ``threshold: 5, rule: ge``
    reproduces the 501-entry LEVIR-CC vocabulary the published HiSem numbers most likely used.
    ``threshold: null`` takes the dataset format's convention (5; Dubai-CC 0).
    """

    path: str | None = None
    splits: VocabSplits = "train"
    threshold: int | None = None
    rule: ThresholdRule = "gt"


@dataclass
class DataConfig:
    """Dataset options, handed to ``changecap.data.datasets.ChangeCaptionDataset``.

    ``image_size`` / ``max_length`` ``null`` take the format's convention (native size; 41 tokens);
    ``max_length: auto`` is the longest caption of the dataset (all splits) + ``<START>``/``<END>``.
    ``normalize`` is a statistics name (``dataset``, ``clip``, ``imagenet``, ``none``, ``levir-cc``, …) or
    ``[[mean r, g, b], [std r, g, b]]`` on the 0–1 scale. The train split uses ``canonicalize_no_change`` and
    ``augment``; the validation split never does (its references keep their paraphrases).
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


@dataclass
class OptimConfig:
    """Adam with one parameter group per model part (encoder / fusion / decoder).

    The official code uses three Adam optimisers with the same settings; Adam is per-parameter, so one optimiser
    with three groups computes the same update. ``*_lr: null`` inherits ``lr``.
    """

    lr: float = 1e-4
    encoder_lr: float | None = None
    fusion_lr: float | None = None
    decoder_lr: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float | None = None


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


@dataclass
class LossConfig:
    """HiSem objective weights and schedules (hisem.md §6.2, §6.5, §9). Epochs are 0-indexed.

    ``gt_routing_until_epoch``: an integer is the last epoch (inclusive) routed by the ground-truth change flag
    (paper: 40 of 50); a float in [0, 1] is a fraction of the run, resolved as ``round(f · epochs)`` (0.8 of 50 →
    40); ``-1`` never routes by ground truth.
    """

    router_weight: float = 0.8
    router_warmup_epochs: int = 3
    gt_routing_until_epoch: int | float = 40
    aux_weight: float = 1.0


@dataclass
class TrainSection:
    """Loop settings. ``batch_size`` is the GLOBAL batch (all processes and accumulation micro-batches together).

    ``val_every`` is in epochs (0 = never validate), ``checkpoint_every_steps`` in optimiser updates (0 = only at
    epoch ends), ``max_steps`` stops early (tests, smoke runs) without changing the LR schedule, so a run stopped
    by ``max_steps`` resumes into exactly the run it would have been. ``drop_last`` drops the last, smaller global
    batch of an epoch; it is dropped anyway when it cannot give every process and micro-batch one sample.
    """

    epochs: int = 50
    batch_size: int = 64
    grad_accum: int = 1
    drop_last: bool = False
    precision: Precision = "fp32"
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
    output_dir: str = "runs/hisem"


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
    model: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainSection = field(default_factory=TrainSection)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # The file the config was read from (for error messages); not a config key, never serialised.
    source: str | None = field(default=None, compare=False, repr=False, metadata={"internal": True})

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], path: str | os.PathLike[str] | None = None, check_model: bool = True
    ) -> TrainConfig:
        """Validate a nested dict (as parsed from YAML). Raises :class:`ConfigError` naming the dotted field.

        With ``check_model`` the ``model`` section is also validated by ``ModelConfig.from_dict`` when the models
        package is importable (the trainer validates it again when it builds the model).
        """
        if not isinstance(data, Mapping):
            raise ConfigError("<root>", f"expected a mapping of sections, got {type(data).__name__}", path=path)
        cfg = _build_dataclass(cls, data, "", path)
        cfg.source = None if path is None else str(path)
        cfg.validate(path)
        if check_model:
            validate_model_section(cfg.model, path)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists) that :meth:`from_dict` reads back to an equal config."""
        plain = _to_plain(dataclasses.asdict(self))
        for f in dataclasses.fields(self):
            if f.metadata.get("internal"):
                plain.pop(f.name, None)
        return plain

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the resolved config as YAML (atomically: temp file + ``os.replace``)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(self.to_yaml(), encoding="utf-8")
        os.replace(tmp, p)
        return p

    # ------------------------------------------------------------------ semantic checks
    def validate(self, path: str | os.PathLike[str] | None = None) -> None:
        """Range and consistency checks the type system cannot express."""

        def need(ok: bool, name: str, message: str) -> None:
            if not ok:
                raise ConfigError(name, message, path=path)

        d, o, s, lo, t, lg = self.data, self.optim, self.schedule, self.loss, self.train, self.logging
        need(bool(str(d.root).strip()), "data.root", "is required (the dataset root folder)")
        _check_format_and_normalize(d, path)
        need(d.image_size is None or d.image_size > 0, "data.image_size", f"must be positive, got {d.image_size}")
        need(d.resize_mode != "clip" or d.image_size is not None, "data.image_size", "resize_mode 'clip' needs one")
        need(
            d.max_length in (None, "auto") or d.max_length >= 2,  # type: ignore[operator]
            "data.max_length",
            f"must be >= 2, 'auto' or null, got {d.max_length}",
        )
        need(d.num_workers >= 0, "data.num_workers", f"must be >= 0, got {d.num_workers}")
        need(d.vocab.threshold is None or d.vocab.threshold >= 0, "data.vocab.threshold", "must be >= 0")
        for name in ("lr", "encoder_lr", "fusion_lr", "decoder_lr"):
            v = getattr(o, name)
            need(v is None or (v >= 0 and math.isfinite(v)), f"optim.{name}", f"must be a finite number >= 0, got {v}")
        need(all(0.0 <= b < 1.0 for b in o.betas), "optim.betas", f"both betas must be in [0, 1), got {list(o.betas)}")
        need(o.eps > 0, "optim.eps", f"must be > 0, got {o.eps}")
        need(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
        need(o.grad_clip is None or o.grad_clip > 0, "optim.grad_clip", f"must be > 0 or null, got {o.grad_clip}")
        need(s.warmup_steps >= 0, "schedule.warmup_steps", f"must be >= 0, got {s.warmup_steps}")
        need(0.0 <= s.min_lr_ratio <= 1.0, "schedule.min_lr_ratio", f"must be in [0, 1], got {s.min_lr_ratio}")
        need(s.step_size > 0, "schedule.step_size", f"must be > 0, got {s.step_size}")
        need(s.gamma > 0, "schedule.gamma", f"must be > 0, got {s.gamma}")
        need(lo.router_weight >= 0, "loss.router_weight", f"must be >= 0, got {lo.router_weight}")
        need(lo.aux_weight >= 0, "loss.aux_weight", f"must be >= 0, got {lo.aux_weight}")
        need(lo.router_warmup_epochs >= -1, "loss.router_warmup_epochs", "must be >= -1 (-1: no warm-up)")
        g = lo.gt_routing_until_epoch
        if isinstance(g, float):
            need(0.0 <= g <= 1.0, "loss.gt_routing_until_epoch", f"a float is a fraction of the run in [0, 1], got {g}")
        else:
            need(g >= -1, "loss.gt_routing_until_epoch", f"must be an epoch >= -1 (-1: never), got {g}")
        need(t.epochs > 0, "train.epochs", f"must be > 0, got {t.epochs}")
        need(t.batch_size > 0, "train.batch_size", f"must be > 0, got {t.batch_size}")
        need(t.grad_accum > 0, "train.grad_accum", f"must be > 0, got {t.grad_accum}")
        need(
            t.batch_size % t.grad_accum == 0,
            "train.batch_size",
            f"global batch {t.batch_size} is not divisible by grad_accum {t.grad_accum}",
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

    # ------------------------------------------------------------------ derived values
    def gt_routing_last_epoch(self) -> int:
        """Last epoch (0-indexed, inclusive) routed by the ground-truth flag; -1 when never."""
        g = self.loss.gt_routing_until_epoch
        if isinstance(g, float):
            # A fraction f of the run → epoch round(f·E): 0.8 of 50 epochs is 40, the paper's setting (e ≤ 40).
            return int(round(g * self.train.epochs))
        return int(g)


# ---------------------------------------------------------------------------------------------------------- loading
def load_config(path: str | os.PathLike[str], overrides: Iterable[str] = (), check_model: bool = True) -> TrainConfig:
    """Read a YAML config, apply ``a.b=value`` overrides (values parsed with ``yaml.safe_load``), validate.

    Errors (missing file, YAML syntax, unknown key, bad value) are one-line :class:`ConfigError` naming the file
    and the dotted field.
    """
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
        mark = getattr(e, "problem_mark", None)
        where = f"<line {mark.line + 1}, column {mark.column + 1}>" if mark is not None else "<yaml>"
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(where, f"invalid YAML: {problem}", path=p) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("<root>", f"expected a mapping of sections, got {type(data).__name__}", path=p)
    apply_overrides(data, overrides, path=p)
    return TrainConfig.from_dict(data, path=p, check_model=check_model)


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
    """Run ``ModelConfig.from_dict(model, prefix="model")`` when the models package exists; return the result.

    The models package may be absent in a stripped-down install; the section is then checked when the trainer
    builds the model. Its ConfigError names ``model.<field>``; the file name is added here.
    """
    try:
        from changecap.models.config import ModelConfig
    except ImportError:
        return None
    section = dict(model)
    decoder = section.get("decoder")
    if isinstance(decoder, dict) and "vocab_size" not in decoder:
        # The trainer fills in the vocabulary size from the data; a placeholder lets the rest be checked now.
        section["decoder"] = {**decoder, "vocab_size": _PLACEHOLDER_VOCAB_SIZE}
    try:
        return ModelConfig.from_dict(section, prefix="model")
    except ConfigError as e:
        if e.path is None and path is not None:
            raise ConfigError(e.field, _message_of(e), path=path) from None
        raise


# ---------------------------------------------------------------------------------------------------------- typing
def _message_of(err: ConfigError) -> str:
    """The bare message of a ConfigError (without its ``path: config field 'x':`` prefix)."""
    text = str(err)
    marker = f"config field '{err.field}': "
    return text.split(marker, 1)[1] if marker in text else text


def _check_format_and_normalize(d: DataConfig, path: str | os.PathLike[str] | None) -> None:
    """Validate ``data.format`` and ``data.normalize`` with the dataset's own rules, renaming the fields."""
    try:
        from changecap.data.annotations import check_format
        from changecap.data.datasets import resolve_normalization
    except ImportError:  # data package not built yet: the dataset checks these when it opens
        return
    for name, check in (
        ("data.format", lambda: check_format(d.format)),
        ("data.normalize", lambda: resolve_normalization(_normalize_value(d.normalize), d.format)),
    ):
        try:
            check()
        except ConfigError as e:
            raise ConfigError(name, _message_of(e), path=path) from None


def _normalize_value(value: Any) -> Any:
    """YAML gives lists; the dataset takes a name or a ``(mean, std)`` pair."""
    if isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is tuple:
        return f"a list of {len(typing.get_args(tp))} numbers"
    if origin is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


_FLOAT_STRING = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class _Mismatch(Exception):
    """Internal: a value does not fit a type (turned into a ConfigError by the caller)."""


def _coerce(value: Any, tp: Any, name: str, path: str | os.PathLike[str] | None) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in canonical form (int → float, list → tuple)."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(name, f"expected a mapping, got {_describe(value)}", path=path)
        return _build_dataclass(tp, value, name, path)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        # int before float so that 40 stays the integer epoch 40 in `int | float` fields.
        for arg in sorted(args, key=lambda a: 0 if a is type(None) else 1 if a is int else 2):
            try:
                return _coerce(value, arg, name, path)
            except (_Mismatch, ConfigError):
                continue
        raise ConfigError(name, f"expected {_type_name(tp)}, got {_describe(value)}", path=path)
    try:
        return _coerce_simple(value, tp, origin)
    except _Mismatch:
        raise ConfigError(name, f"expected {_type_name(tp)}, got {_describe(value)}", path=path) from None


def _coerce_simple(value: Any, tp: Any, origin: Any) -> Any:
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin is Literal:
        if isinstance(value, str) and value in typing.get_args(tp):
            return value
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_STRING.fullmatch(value.strip()):
            # PyYAML follows YAML 1.1, where `1e-3` (no dot) is a string, not a number; accept it as one.
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(_coerce_simple(v, a, typing.get_origin(a)) for v, a in zip(value, args))
        raise _Mismatch
    if origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise _Mismatch
    raise TypeError(f"unsupported config annotation {tp!r}")  # a bug in this module, not a user error


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _build_dataclass(cls: type, data: Mapping[str, Any], prefix: str, path: str | os.PathLike[str] | None) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
    for key in data:
        if key not in names:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(dotted, f"unknown key; expected one of {', '.join(names)}", path=path)
    kwargs: dict[str, Any] = {}
    for name in names:
        if name in data:
            dotted = f"{prefix}.{name}" if prefix else name
            value = data[name]
            if value is None and dataclasses.is_dataclass(hints[name]):
                value = {}  # an empty section (`loss:` with nothing below) means all defaults
            if value is None and typing.get_origin(hints[name]) is dict:
                value = {}
            kwargs[name] = _coerce(value, hints[name], dotted, path)
    return cls(**kwargs)


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value
