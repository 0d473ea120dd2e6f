"""Shared test fixtures. Tests never touch the network."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"


def require_shared(sub: str = "") -> Path:
    """Return ``../shared/data/<sub>`` or skip the test with a clear reason."""
    p = SHARED_DATA / sub
    if not p.exists():
        pytest.skip(f"real benchmark samples not available: {p} is absent (../shared is only beside the repo)")
    return p


@pytest.fixture
def shared_data() -> Path:
    return require_shared()


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run a test on one torch thread (restored afterwards): the xdist workers already use every core, and one
    thread makes float results independent of the machine's core count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out as ``make demo`` leaves the repository, with a tiny SynthCC set and an untrained tiny HiSem
    (made once per test process; the documentation's command blocks run in copies of it)."""
    from tests.doc_workspace import make_demo_template

    return make_demo_template(tmp_path_factory.mktemp("demo_template"))
