"""The one strict dict → dataclass loader, used by train configs, model configs and preprocess configs.

Configs are written by hand (YAML, JSON, ``--set a.b=value``), so every unknown key, missing field and wrong type
must surface as a one-line :class:`~changecap.errors.ConfigError` naming the dotted field (``model.decoder.heads``)
instead of a ``TypeError`` deep inside a constructor. One set of coercion rules for every config:

* ``bool`` is never accepted for ``int`` / ``float`` (``True`` as a layer count is a typo, not a number);
* an ``int`` is accepted (and converted) for ``float``, and so is a numeric string such as ``"1e-3"``: PyYAML follows
  YAML 1.1, where ``1e-3`` without a dot is a string;
* ``Literal[...]`` takes one of its strings; ``tuple[X, Y]`` a list of exactly that length; ``list``/``dict`` their
  containers; ``X | None`` also ``null``; ``int | float`` keeps integers integral;
* a nested dataclass takes a mapping (``null`` or nothing below the key means all defaults, unless the field is
  ``Optional``, where ``null`` means "absent");
* after construction the dataclass's ``validate(prefix)`` (when it has one) checks ranges and cross-field rules.

>>> from dataclasses import dataclass
>>> @dataclass
... class Opt:
...     lr: float = 1e-4
>>> from_dict(Opt, {"lr": "1e-3"}, "optim").lr
0.001
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from changecap.errors import ConfigError

T = TypeVar("T")

#: Dataclass fields with ``metadata={"internal": True}`` are neither read from nor written to a config mapping.
INTERNAL = {"internal": True}

_FLOAT_STRING = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class _Mismatch(Exception):
    """Internal: a value does not fit a type (turned into a ConfigError by the caller)."""


def require(condition: bool, field: str, message: str) -> None:
    """Raise ``ConfigError(field, message)`` unless ``condition``."""
    if not condition:
        raise ConfigError(field, message)


def join(prefix: str, name: str) -> str:
    """Dotted field name: ``join("model", "decoder")`` → ``model.decoder``; an empty prefix gives ``name``."""
    return f"{prefix}.{name}" if prefix else str(name)


def with_path(err: ConfigError, path: str | os.PathLike[str] | None) -> ConfigError:
    """The same error naming ``path`` as well (unchanged when it already names a file or ``path`` is None)."""
    if path is None or err.path is not None:
        return err
    return ConfigError(err.field, err.message, path=path)


def config_fields(cls: type) -> list[dataclasses.Field]:
    """The dataclass fields a config mapping may hold (internal ones excluded)."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


# ---------------------------------------------------------------------------------------------------------- loading
def from_dict(
    cls: type[T], data: Any, prefix: str = "", path: str | os.PathLike[str] | None = None, validate: bool = True
) -> T:
    """Build dataclass ``cls`` from mapping ``data``; every problem is a ConfigError naming ``prefix.<field>``.

    ``path`` (the file the mapping came from) is added to every error. With ``validate`` the instance's
    ``validate(prefix)`` method, when it has one, runs last.
    """
    try:
        return _build(cls, data, prefix, validate)
    except ConfigError as e:
        raise with_path(e, path) from None


def _build(cls: type[T], data: Any, prefix: str, validate: bool) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(prefix or "<root>", f"expected a mapping of fields, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = config_fields(cls)
    names = [f.name for f in fields]
    for key in data:
        if key not in names:
            raise ConfigError(join(prefix, str(key)), f"unknown key; expected one of {', '.join(names)}")
    kwargs: dict[str, Any] = {}
    for f in fields:
        dotted = join(prefix, f.name)
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(dotted, "required field is missing")
            continue
        kwargs[f.name] = coerce(data[f.name], hints[f.name], dotted, validate)
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if validate and callable(check):
        check(prefix)
    return obj


def coerce(value: Any, tp: Any, field: str, validate: bool = True) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in canonical form (int → float, list → tuple)."""
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}  # an empty section (`loss:` with nothing below) means all defaults
        return _build(tp, value, field, validate)  # type: ignore[arg-type]
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        # int before float so that 40 stays the integer epoch 40 in `int | float` fields.
        for arg in sorted(args, key=lambda a: 0 if a is type(None) else 1 if a is int else 2):
            if arg is type(None):
                continue
            if dataclasses.is_dataclass(arg):
                if isinstance(value, Mapping):
                    return _build(arg, value, field, validate)  # its own errors are the informative ones
                continue
            try:
                return coerce(value, arg, field, validate)
            except (_Mismatch, ConfigError):
                continue
        raise ConfigError(field, f"expected {type_name(tp)}, got {_describe(value)}")
    args = typing.get_args(tp)
    if (origin in (dict, Mapping)) and len(args) == 2 and args[1] is not Any and isinstance(value, Mapping):
        return {k: coerce(v, args[1], f"{field}.{k}", validate) for k, v in value.items()}  # names the bad key
    if origin is list and args and args[0] is not Any and isinstance(value, (list, tuple)):
        return [coerce(v, args[0], f"{field}[{i}]", validate) for i, v in enumerate(value)]
    try:
        return _coerce_simple(value, tp, origin)
    except _Mismatch:
        raise ConfigError(field, f"expected {type_name(tp)}, got {_describe(value)}") from None


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
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin is tuple or tp is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item = args[0] if args else Any
            return tuple(_coerce_simple(v, item, typing.get_origin(item)) if item is not Any else v for v in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_coerce_simple(v, a, typing.get_origin(a)) for v, a in zip(value, args))
    if origin is list or tp is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        (item,) = typing.get_args(tp) or (Any,)
        return [v if item is Any else _coerce_simple(v, item, typing.get_origin(item)) for v in value]
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if value is None:
            return {}  # `model:` with nothing below it: an empty mapping
        if not isinstance(value, Mapping):
            raise _Mismatch
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is not Any:
            return {k: _coerce_simple(v, args[1], typing.get_origin(args[1])) for k, v in value.items()}
        return dict(value)
    raise TypeError(f"unsupported config annotation {tp!r}")  # a bug in a config class, not a user error


def type_name(tp: Any) -> str:
    """How a type is named in error messages (``'a' | 'b'``, ``int or null``, ``a list of 2 numbers``, …)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is tuple:
        args = typing.get_args(tp)
        return "a list" if len(args) == 2 and args[1] is Ellipsis else f"a list of {len(args)} values"
    if origin is list or tp is list:
        return "a list"
    if origin in (dict, Mapping) or tp in (dict, Mapping) or dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


# ---------------------------------------------------------------------------------------------------------- dumping
def to_dict(obj: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (tuples as lists, internal fields dropped); ``from_dict`` inverts it."""
    out: dict[str, Any] = {}
    for f in config_fields(type(obj)):
        out[f.name] = to_plain(getattr(obj, f.name))
    return out


def to_plain(value: Any) -> Any:
    """JSON/YAML-ready form of a config value."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value
