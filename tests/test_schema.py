"""The one strict config loader: coercion rules, one error wording, round trip."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from changecap.errors import ConfigError
from changecap.schema import INTERNAL, from_dict, require, to_dict


@dataclass
class Inner:
    width: int = 8
    act: Literal["relu", "gelu"] = "relu"

    def validate(self, prefix: str = "inner") -> None:
        require(self.width > 0, f"{prefix}.width", f"must be positive, got {self.width}")


@dataclass
class Outer:
    name: str
    lr: float = 1e-4
    epoch: int | float = 40
    betas: tuple[float, float] = (0.9, 0.999)
    inner: Inner = field(default_factory=Inner)
    maybe: Inner | None = None
    extra: dict[str, float] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    source: str | None = field(default=None, metadata=INTERNAL)


def test_coercion_rules() -> None:
    cfg = from_dict(Outer, {"name": "x", "lr": "1e-3", "epoch": 40, "betas": [0.8, 1], "inner": None,
                            "maybe": {"width": 2}, "extra": {"a": 1}, "tags": ["t"]})  # fmt: skip
    assert cfg.lr == 0.001 and isinstance(cfg.lr, float)  # YAML 1.1 gives "1e-3" as a string
    assert cfg.epoch == 40 and isinstance(cfg.epoch, int)  # int | float keeps integers integral
    assert cfg.betas == (0.8, 1.0) and cfg.inner == Inner() and cfg.maybe == Inner(width=2)
    assert cfg.extra == {"a": 1.0} and cfg.tags == ["t"]
    assert from_dict(Outer, {"name": "x", "epoch": 0.8}).epoch == 0.8
    assert from_dict(Outer, {"name": "x", "maybe": None}).maybe is None


def test_round_trip_drops_internal_fields() -> None:
    cfg = from_dict(Outer, {"name": "x", "maybe": {"act": "gelu"}})
    cfg.source = "somewhere.yaml"
    d = to_dict(cfg)
    assert "source" not in d and d["betas"] == [0.9, 0.999] and d["maybe"] == {"width": 8, "act": "gelu"}
    assert from_dict(Outer, d) == from_dict(Outer, {"name": "x", "maybe": {"act": "gelu"}})


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({}, "cfg.name", "required field is missing"),
        ({"name": "x", "nme": 1}, "cfg.nme", "unknown key; expected one of name, lr"),
        ({"name": "x", "source": "a"}, "cfg.source", "unknown key"),  # internal fields are not config keys
        ({"name": 3}, "cfg.name", "expected str, got int 3"),
        ({"name": "x", "lr": True}, "cfg.lr", "expected float, got bool"),
        ({"name": "x", "lr": "fast"}, "cfg.lr", "expected float"),
        ({"name": "x", "epoch": "forty"}, "cfg.epoch", "expected int or float"),
        ({"name": "x", "betas": [0.9]}, "cfg.betas", "a list of 2 values"),
        ({"name": "x", "inner": {"act": "tanh"}}, "cfg.inner.act", "'relu' | 'gelu'"),
        ({"name": "x", "inner": {"width": 0}}, "cfg.inner.width", "must be positive"),
        ({"name": "x", "inner": [1]}, "cfg.inner", "expected a mapping of fields"),
        ({"name": "x", "maybe": {"depth": 1}}, "cfg.maybe.depth", "unknown key"),
        ({"name": "x", "extra": {"a": "b"}}, "cfg.extra.a", "expected float, got str"),
        ({"name": "x", "extra": [1]}, "cfg.extra", "expected a mapping"),
        ({"name": "x", "tags": ["a", 2]}, "cfg.tags[1]", "expected str"),
        ({"name": "x", "tags": "t"}, "cfg.tags", "expected a list"),
    ],
)
def test_errors_name_the_dotted_field_and_the_file(data: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, data, "cfg", path="conf/run.yaml")
    err = e.value
    assert err.field == field and words in err.message, (err.field, err.message)
    assert err.path == "conf/run.yaml"
    assert str(err) == f"conf/run.yaml: config field '{field}': {err.message}" and "\n" not in str(err)


def test_not_a_mapping_at_the_root() -> None:
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, [1, 2])
    assert e.value.field == "<root>" and "expected a mapping" in e.value.message
