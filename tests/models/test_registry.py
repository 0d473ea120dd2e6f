"""The architecture registry: lazy built-in entries, runtime registration, one-line errors, dispatch."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from changecap.errors import ConfigError
from changecap.models import architecture_names, build_model, config_from_dict, get_architecture
from changecap.models.hisem import HISEM, PLAIN, HiSemConfig, PlainConfig, tiny_config
from changecap.models.registry import (
    ARCHITECTURES,
    Architecture,
    Capabilities,
    register_architecture,
    unregister_architecture,
)


def test_built_in_entries_resolve_to_their_specs() -> None:
    assert architecture_names()[: len(ARCHITECTURES)] == list(ARCHITECTURES)  # built-in first, in registry order
    for name, entry in ARCHITECTURES.items():
        module, _, attr = entry.partition(":")
        spec = get_architecture(name)
        assert spec is getattr(importlib.import_module(module), attr) and spec.name == name
        assert spec.config_class.architecture == name and spec.tiny_config is not None
    assert get_architecture("hisem") is HISEM and get_architecture("plain") is PLAIN
    assert HISEM.config_class is HiSemConfig and PLAIN.config_class is PlainConfig
    assert HISEM.objective == PLAIN.objective == "hisem"


def test_the_registry_imports_no_system() -> None:
    """Systems are imported on first use only: the registry module itself imports none of them."""
    import ast

    import changecap.models.registry as registry

    tree = ast.parse(Path(registry.__file__).read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    systems = {v.partition(":")[0] for v in ARCHITECTURES.values()}
    assert not {m for m in imported if any(m == s or m.startswith(s + ".") for s in systems)}


@pytest.mark.parametrize("name", [None, "transformer", 3])
def test_unknown_architecture_is_a_config_error_listing_the_known_ones(name: object) -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict({"architecture": name} if name is not None else {})
    assert e.value.field == "model.architecture" and ", ".join(architecture_names()) in e.value.message


def test_dispatch_builds_each_architecture_from_its_dict() -> None:
    for arch in ("hisem", "plain"):
        cfg = tiny_config(20, image_size=32, patch_size=8, dim=32, architecture=arch)
        again = config_from_dict(cfg.to_dict())
        assert again == cfg and again.to_dict()["architecture"] == arch
        model = build_model(again)
        assert model.config.architecture == arch


def test_runtime_registration_and_duplicates() -> None:
    spec = Architecture(name="dummy_arch", config_class=HiSemConfig, build=lambda c, **kw: None, objective="hisem",
                        capabilities=Capabilities(captions=True))
    try:
        register_architecture(spec)
        assert get_architecture("dummy_arch") is spec and "dummy_arch" in architecture_names()
        with pytest.raises(ValueError, match="already registered"):
            register_architecture(spec)
        with pytest.raises(ValueError, match="already registered"):
            register_architecture(Architecture(name="hisem", config_class=HiSemConfig, build=spec.build,
                                               objective="hisem", capabilities=spec.capabilities))  # fmt: skip
    finally:
        unregister_architecture("dummy_arch")
    with pytest.raises(ConfigError):
        get_architecture("dummy_arch")


def test_an_architecture_without_an_objective_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="^architecture 'no_loss' names no objective") as e:
        Architecture(name="no_loss", config_class=HiSemConfig, build=lambda c, **kw: None,
                     capabilities=Capabilities(captions=True))
    assert "\n" not in str(e.value)
    assert all(get_architecture(name).objective for name in architecture_names())  # every system names its own


def test_a_config_of_one_architecture_rejects_another_name() -> None:
    d = tiny_config(20, image_size=32, patch_size=8, dim=32).to_dict()
    d["architecture"] = "plain"
    with pytest.raises(ConfigError) as e:
        HiSemConfig.from_dict(d)
    assert e.value.field == "model.architecture"
