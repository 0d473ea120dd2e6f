"""The sample figure: one pair per change recipe plus an unchanged pair, drawn as before | after | mask."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from changecap.errors import ConfigError, DataError
from changecap.synth import render_figure
from changecap.synth.figure import choose_samples


def test_samples_cover_distinct_recipes_and_one_unchanged(
    tiny_records: list[dict[str, Any]], tiny_meta: dict[str, Any]
) -> None:
    chosen = choose_samples(tiny_records, tiny_meta, 6)
    assert len(chosen) == 6
    recipe = {it["filename"]: it["recipe"] for it in tiny_meta["items"]}
    names = [r["filename"] for r in chosen]
    assert len(set(names)) == 6
    changed_recipes = [recipe[n] for n in names if recipe[n] != "none"]
    assert len(set(changed_recipes)) == len(changed_recipes) == 5
    assert sum(recipe[n] == "none" for n in names) == 1


def test_render_figure_size(tiny_set: Path, tmp_path: Path) -> None:
    out = render_figure(tiny_set, tmp_path / "fig.png", samples=4, columns=2, tile=64)
    im = Image.open(out)
    assert im.mode == "RGB"
    assert im.width == 10 + 2 * (3 * 64 + 8 + 10)
    assert im.height > 2 * 64
    # the before tile of the first sample is pasted, not blank
    tile = np.asarray(im.crop((10, 30, 74, 94))).reshape(-1, 3)  # [64 * 64, 3]
    assert len(np.unique(tile, axis=0)) > 50


def test_bad_arguments(tiny_set: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="samples"):
        render_figure(tiny_set, tmp_path / "f.png", samples=0)
    with pytest.raises(ConfigError, match="tile"):
        render_figure(tiny_set, tmp_path / "f.png", tile=8)
    with pytest.raises(DataError, match="not found"):
        render_figure(tmp_path / "nowhere", tmp_path / "f.png")
