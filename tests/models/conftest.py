"""Model tests run on one torch thread (pytest-xdist already runs one worker per core). Systems that live in the test
tree are registered while these tests run (and only then), beside the built-in ones."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from changecap.models.registry import register_architecture, unregister_architecture

#: systems defined under tests/ ("module:attribute" of their Architecture, as ``ARCHITECTURES`` names the built-in
#: ones), one line each; the contract suite (test_contract_suite.py) runs every registered system
TEST_SYSTEMS: list[str] = [
    "tests.models.toy_system:ARCHITECTURE",
]


@contextmanager
def registered_test_systems() -> Iterator[list[str]]:
    """Register :data:`TEST_SYSTEMS` for the duration of the block; yields their names."""
    specs = []
    for entry in TEST_SYSTEMS:
        module, _, attr = entry.partition(":")
        specs.append(getattr(importlib.import_module(module), attr))
    for spec in specs:
        register_architecture(spec)
    try:
        yield [spec.name for spec in specs]
    finally:
        for spec in specs:
            unregister_architecture(spec.name)


@pytest.fixture(scope="package", autouse=True)
def _test_systems() -> Iterator[None]:
    """The test systems are known to every test under tests/models (not to other packages' tests)."""
    with registered_test_systems():
        yield


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every model test uses the shared ``one_torch_thread`` fixture of ``tests/conftest.py``."""
