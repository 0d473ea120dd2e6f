"""Model tests run on one torch thread (pytest-xdist already runs one worker per core)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every model test uses the shared ``one_torch_thread`` fixture of ``tests/conftest.py``."""
