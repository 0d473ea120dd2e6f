"""``changecap synth --geotiff``: a georeferenced mosaic of SynthCC pairs for ``changecap scene``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio", reason="--geotiff needs the 'geo' extra (rasterio)")

from changecap.cli.main import main  # noqa: E402
from changecap.synth.generate import render_pair  # noqa: E402


def test_mosaic_of_pairs_with_a_utm_georeference(tmp_path: Path) -> None:
    assert main(["synth", "--geotiff", str(tmp_path), "--grid", "2", "--size", "64", "--seed", "3"]) == 0
    with rasterio.open(tmp_path / "before.tif") as b, rasterio.open(tmp_path / "after.tif") as a:
        assert b.crs.to_epsg() == 32633 and b.transform == a.transform and b.shape == (128, 128) and b.count == 3
        assert b.transform.a == 0.5 and (b.transform.c, b.transform.f) == (500_000.0, 4_100_000.0)
        cell = b.read(window=rasterio.windows.Window(64, 64, 64, 64)).transpose(1, 2, 0)  # cell 3
    with rasterio.open(tmp_path / "change_truth.tif") as t:
        truth = t.read(1)
    assert set(np.unique(truth)) <= {0, 255}
    assert any(np.array_equal(cell, render_pair(3, 3, changed, 64).before) for changed in (True, False))


def test_bad_grid_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--geotiff", str(tmp_path), "--grid", "0"]) == 2
    assert "--grid must be >= 1" in capsys.readouterr().err
