"""Fixtures of the SynthCC tests: one tiny set generated once per session (about a second)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from changecap.synth import generate_synthcc


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` preset (60 pairs, 64 px), seed 0."""
    return generate_synthcc(tmp_path_factory.mktemp("synthcc") / "tiny", preset="tiny", seed=0, progress=False)


@pytest.fixture(scope="session")
def tiny_records(tiny_set: Path) -> list[dict[str, Any]]:
    return json.loads((tiny_set / "LevirCCcaptions.json").read_text())["images"]


@pytest.fixture(scope="session")
def tiny_meta(tiny_set: Path) -> dict[str, Any]:
    return json.loads((tiny_set / "synthcc_meta.json").read_text())
