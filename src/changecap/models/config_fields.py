"""Strict dataclass ↔ dict conversion for model configs.

Configs come from JSON/YAML files written by hand, so every unknown key, missing field and wrong type must surface
as a one-line :class:`~changecap.errors.ConfigError` naming the dotted field (``model.decoder.heads``) instead of a
``TypeError`` deep inside a constructor.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from changecap.errors import ConfigError

T = TypeVar("T")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def check_value(value: Any, hint: Any, field: str) -> Any:
    """Check ``value`` against a simple annotation (int, float, bool, str, dict, list, X | None); return it.

    ``bool`` is never accepted for ``int``/``float`` (``True`` as a layer count is a typo, not a number); an ``int``
    is accepted (and converted) for ``float``.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return check_value(value, a, field)
            except ConfigError as e:
                errors.append(e)
        names = " or ".join("null" if a is type(None) else _type_name(a) for a in args)
        raise ConfigError(field, f"expected {names}, got {type(value).__name__} {value!r}")
    base = origin or hint
    if base is Any:
        return value
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base in (dict, Mapping):
        ok = isinstance(value, Mapping)
        value = dict(value) if ok else value
    elif base in (list, tuple):
        ok = isinstance(value, (list, tuple))
        value = base(value) if ok else value
    elif isinstance(base, type):
        ok = isinstance(value, base)
    else:  # an annotation this helper does not know: accept, the dataclass validates
        ok = True
    if not ok:
        raise ConfigError(field, f"expected {_type_name(base)}, got {type(value).__name__} {value!r}")
    return value


def dataclass_from_dict(
    cls: type[T], d: Any, prefix: str, nested: Mapping[str, Callable[[Any, str], Any]] | None = None
) -> T:
    """Build dataclass ``cls`` from mapping ``d``, raising ConfigError on unknown/missing keys and wrong types.

    ``nested`` maps field names to converters ``(value, dotted_prefix) -> object`` for sub-configs. If the class has
    a ``validate(prefix)`` method it is called so value-range errors also name the dotted field.
    """
    nested = nested or {}
    if not isinstance(d, Mapping):
        raise ConfigError(prefix, f"expected a mapping of fields, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    flds = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in d:
        if key not in flds:
            raise ConfigError(f"{prefix}.{key}", f"unknown field (known: {', '.join(flds)})")
    kwargs: dict[str, Any] = {}
    for name, f in flds.items():
        if name not in d:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{prefix}.{name}", "required field is missing")
            continue
        if name in nested:
            kwargs[name] = nested[name](d[name], f"{prefix}.{name}")
        else:
            kwargs[name] = check_value(d[name], hints[name], f"{prefix}.{name}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(prefix)
    return obj


def require(condition: bool, field: str, message: str) -> None:
    """Raise ``ConfigError(field, message)`` unless ``condition``."""
    if not condition:
        raise ConfigError(field, message)
