"""The architecture registry: ``architecture`` name → config class, builder, objective, capabilities, card rows.

Everything that handles "a model" without knowing which one — ``build_model``, ``save_model``/``load_model``, the
trainer, the evaluator, ``ChangeCaptioner``, ``changecap summary`` — goes through :func:`get_architecture`. Adding a
system is a package under ``changecap/models/<name>/`` exposing an :class:`Architecture` (its model a
:class:`~changecap.models.contract.ChangeModel`, its capabilities declared here), plus one line in
:data:`ARCHITECTURES`. Entries are ``"module:attribute"`` strings imported on first use (like the CLI's
``COMMAND_MODULES``), so importing the registry costs nothing and one system's heavy dependencies (``peft``, an LLM)
never load for another. Code outside the package (a test, a plug-in) registers with :func:`register_architecture`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Protocol

from torch import nn

from changecap.errors import ConfigError
from changecap.schema import from_dict as schema_from_dict
from changecap.schema import to_dict as schema_to_dict

#: name → "module:attribute" of its :class:`Architecture`; one line per system.
ARCHITECTURES: dict[str, str] = {
    "hisem": "changecap.models.hisem:HISEM",
    "plain": "changecap.models.hisem:PLAIN",
    "semantic_cc": "changecap.models.semantic_cc:ARCHITECTURE",
    "change_detection": "changecap.models.change_detection:ARCHITECTURE",
    "dfm": "changecap.models.dfm:ARCHITECTURE",
}


class ArchitectureConfig:
    """Base of architecture config dataclasses: the ``architecture`` key, strict loading, plain dumping.

    A subclass is a ``@dataclass`` with ``architecture: ClassVar[str] = "<name>"``; its fields are read by the one
    strict loader (``changecap.schema``), and its ``validate(prefix)`` runs after loading. By convention the field
    ``decoder`` (a mapping with ``vocab_size`` and ``max_length``) is where the trainer puts the data's vocabulary
    size and caption length when the config leaves them out.
    """

    architecture: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": self.architecture, **schema_to_dict(self)}

    @classmethod
    def with_data(cls, section: dict[str, Any], words: list[str], max_length: int) -> dict[str, Any]:
        """A copy of a ``model`` config section completed from the training data: the vocabulary (``words`` in id
        order) and the longest caption in tokens. Default: the ``decoder`` section's ``vocab_size`` and
        ``max_length`` (a given value that contradicts the data is a ConfigError naming the field)."""
        section = dict(section)
        decoder = section.get("decoder")
        if not isinstance(decoder, dict):
            return section  # the config class reports the missing / malformed decoder section
        decoder = dict(decoder)
        given = decoder.get("vocab_size")
        if given is not None and given != len(words):
            raise ConfigError("model.decoder.vocab_size", f"is {given} but the vocabulary has {len(words)} entries")
        decoder["vocab_size"] = len(words)
        given = decoder.get("max_length")
        if isinstance(given, int) and given < max_length:
            raise ConfigError(
                "model.decoder.max_length", f"is {given}, shorter than the data's captions ({max_length})"
            )
        decoder.setdefault("max_length", max_length)
        section["decoder"] = decoder
        return section

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "model") -> Any:
        """Strict inverse of :meth:`to_dict`; every problem raises ConfigError naming the dotted field."""
        if not isinstance(d, Mapping):
            raise ConfigError(prefix, f"expected a mapping of fields, got {type(d).__name__}")
        d = dict(d)
        arch = d.pop("architecture", cls.architecture)
        if arch != cls.architecture:
            raise ConfigError(f"{prefix}.architecture", f"is {arch!r} but this is a {cls.architecture!r} config")
        return schema_from_dict(cls, d, prefix)


class ModelConfig(Protocol):
    """What every architecture's config provides (a dataclass loaded by ``changecap.schema``)."""

    architecture: str  # a class attribute: the registry name

    @property
    def vocab_size(self) -> int: ...

    @property
    def max_length(self) -> int: ...

    def validate(self, prefix: str = "model") -> None: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Capabilities:
    """What a system can do, declared once at registration (:attr:`Architecture.capabilities`); the model contract
    (``changecap.models.contract``) documents each flag and how consumers read it.

    Each flag is a promise ``ChangeModel.predict`` holds the system to: a declared output is present in every
    :class:`Prediction` (and an undeclared one absent); a declared decoding option is honoured, an undeclared one
    refused with a one-line error.
    """

    captions: bool = False
    change_probability: bool = False
    change_mask: bool = False
    beam_search: bool = False
    sampling: bool = False
    onnx: bool = False
    attention_maps: bool = False

    def names(self) -> list[str]:
        """The declared capabilities, in field order (for messages, ``changecap summary`` and ``/api/health``)."""
        return [f.name for f in fields(self) if getattr(self, f.name)]


#: ``(model, config) -> [(part, description), ...]``: the rows of the model card's architecture table. ``part`` is a
#: dotted attribute of the model (its parameters are counted) or ``""`` for a row without a count.
CardRows = Callable[[nn.Module, Any], list[tuple[str, str]]]


@dataclass(frozen=True)
class Architecture:
    """One system as the rest of changecap sees it.

    Attributes:
        name: the ``architecture`` value in configs and ``config.json``.
        config_class: its config dataclass, with ``from_dict(mapping, prefix)`` (strict, ConfigError naming the
            dotted field), ``to_dict()`` (including ``"architecture"``), ``validate(prefix)``, ``vocab_size`` and
            ``max_length``.
        build: ``build(config, load_pretrained=True, init_weights=True) -> model``, a
            :class:`~changecap.models.contract.ChangeModel` carrying ``.config`` (the config it was built from, with
            everything needed to rebuild it offline). ``load_pretrained=False`` must not touch the network or the
            disk; ``init_weights=False`` may leave weights uninitialised (they are loaded right after).
        capabilities: what its models can do (:class:`Capabilities`: captions, change probability, change mask,
            beam search, sampling, ONNX graphs, attention maps); every consumer reads this declaration, and
            ``ChangeModel.predict`` holds the model to it. Required (keyword).
        objective: how the engine trains it (required): the name of an objective the engine knows (``"hisem"``),
            ``"module:attribute"`` or a factory ``(loss_section, train_config) -> Objective`` (see
            ``changecap.engine.objectives``).
        card_rows: the architecture table of the model card (``None``: one row per top-level child module).
        summary_parts: ``model -> {dotted name: [parameters]}`` for ``changecap summary`` (``None``: the model's
            children and their children).
        description: one line for ``--help`` and the docs.
        change_prior: for a system with a change-detection head, ``change_prior(config, load_pretrained=True,
            init_weights=True) -> module``: the detection branch alone, as another system's frozen change prior
            (DFM). The module has ``image_size``, ``feature_widths`` (one per level, finest first) and
            ``change_features(pairs [B, 2, 3, S, S]) -> [[B, C_l, h_l, w_l], …]``, and its state-dict keys are the
            full model's, so it loads from that model's directory (``io.load_change_prior``). ``None``: no prior.
        tiny_config: ``() -> {section: {...}}``, the system's tiny training config: the sections of a training
            config it needs beside a dataset's ``data`` section (``model``; where it needs them ``data`` keys such
            as ``image_size``, ``loss`` and ``train`` keys such as ``select_metric``), with the vocabulary size and
            caption length left to the data. It trains a random-weight model of at most a few hundred thousand
            parameters in about a second on one CPU thread, offline. The contract suite
            (``tests/models/test_contract_suite.py``) runs every registered system with it through every surface,
            so every system declares one.
    """

    name: str
    config_class: type
    build: Callable[..., nn.Module]
    objective: str | Callable[..., Any] | None = None
    card_rows: CardRows | None = None
    summary_parts: Callable[[nn.Module], Mapping[str, list[nn.Parameter]]] | None = None
    description: str = ""
    change_prior: Callable[..., nn.Module] | None = None
    tiny_config: Callable[[], dict[str, Any]] | None = None
    capabilities: Capabilities = field(kw_only=True)

    def __post_init__(self) -> None:
        if not self.objective:  # no default: a system that forgot it would train silently with another's loss
            raise TypeError(f"architecture {self.name!r} names no objective: give Architecture(objective=...)")


_REGISTERED: dict[str, Architecture] = {}
_LOADED: dict[str, Architecture] = {}


def register_architecture(spec: Architecture, *, replace: bool = False) -> Architecture:
    """Make ``spec`` known under ``spec.name`` (for this process). Returns it, so it can decorate a constant."""
    if not replace and (spec.name in _REGISTERED or spec.name in ARCHITECTURES):
        raise ValueError(f"architecture {spec.name!r} is already registered")
    _REGISTERED[spec.name] = spec
    _LOADED.pop(spec.name, None)
    return spec


def unregister_architecture(name: str) -> None:
    """Forget an architecture registered with :func:`register_architecture` (tests clean up with it)."""
    _REGISTERED.pop(name, None)
    _LOADED.pop(name, None)


def architecture_names() -> list[str]:
    """Every known architecture, built-in first."""
    return [*ARCHITECTURES, *(n for n in _REGISTERED if n not in ARCHITECTURES)]


def get_architecture(name: Any, field: str = "model.architecture") -> Architecture:
    """The :class:`Architecture` called ``name``; a ConfigError naming ``field`` when there is none."""
    if isinstance(name, str) and name in _REGISTERED:
        return _REGISTERED[name]
    if isinstance(name, str) and name in _LOADED:
        return _LOADED[name]
    if not isinstance(name, str) or name not in ARCHITECTURES:
        known = ", ".join(architecture_names())
        got = "nothing" if name is None else repr(name)
        raise ConfigError(field, f"must be one of {known}, got {got}")
    module_name, _, attr = ARCHITECTURES[name].partition(":")
    spec = getattr(importlib.import_module(module_name), attr)
    if not isinstance(spec, Architecture) or spec.name != name:
        raise TypeError(f"{ARCHITECTURES[name]} is not the Architecture {name!r}")  # a bug in the registry line
    _LOADED[name] = spec
    return spec


def architecture_of(config: Any) -> Architecture:
    """The registry entry of a config object (by its ``architecture`` class attribute)."""
    return get_architecture(getattr(config, "architecture", None))


# ---------------------------------------------------------------------------------------------------- dispatch
def config_from_dict(d: Any, prefix: str = "model") -> Any:
    """``{"architecture": name, ...}`` → that architecture's config object (strict; ConfigError naming the field)."""
    if not isinstance(d, Mapping):
        raise ConfigError(prefix, f"expected a mapping of fields, got {type(d).__name__}")
    spec = get_architecture(d.get("architecture"), f"{prefix}.architecture")
    return spec.config_class.from_dict(d, prefix)


def build_model(config: Any, load_pretrained: bool = True, init_weights: bool = True) -> nn.Module:
    """Instantiate the model ``config`` describes through its architecture's builder (see :class:`Architecture`)."""
    spec = architecture_of(config)
    return spec.build(config, load_pretrained=load_pretrained, init_weights=init_weights)
