"""A synthetic georeferenced scene pair for trying ``changecap scene``: a grid of SynthCC pairs mosaicked into two
GeoTIFFs (UTM zone 33N, 0.5 m pixels, 3-band uint8) and the true change mask, written cell by cell (extra ``geo``).

Every cell is an independent SynthCC pair, so its lighting and season differ from its neighbours' (visible seams):
a test scene for the tiling, georeferencing and outputs, not a realistic city.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from changecap.data.files import atomic_path
from changecap.errors import ChangeCapError
from changecap.synth.generate import render_pair

CRS = "EPSG:32633"
ORIGIN = (500_000.0, 4_100_000.0)  # upper-left corner, metres (UTM 33N, near 37° N 15° E)
PIXEL = 0.5  # metres


def write_geotiff_pair(
    out: str | os.PathLike[str], grid: int = 8, size: int = 128, seed: int = 0, changed_share: float = 0.5
) -> tuple[Path, Path, Path]:
    """``out/before.tif``, ``out/after.tif`` and ``out/change_truth.tif`` (255 = changed) of ``grid × grid`` cells of
    ``size`` pixels; a cell is a changed pair with probability ``changed_share`` (seeded)."""
    try:
        import rasterio
        from rasterio.transform import from_origin
    except ImportError:
        raise ChangeCapError("changecap synth --geotiff needs rasterio: pip install 'changecap[geo]'") from None
    if grid < 1 or size < 32:
        raise ChangeCapError(f"--grid must be >= 1 and --size >= 32, got {grid} and {size}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    side = grid * size
    profile = {"driver": "GTiff", "width": side, "height": side, "crs": CRS, "tiled": True, "blockxsize": 256,
               "blockysize": 256, "compress": "deflate", "transform": from_origin(*ORIGIN, PIXEL, PIXEL)}  # fmt: skip
    paths = [folder / "before.tif", folder / "after.tif", folder / "change_truth.tif"]
    changed = np.random.default_rng([seed, 7]).random(grid * grid) < changed_share
    with ExitStack() as written:  # each file under a temporary name, renamed once complete
        tmp = [written.enter_context(atomic_path(p)) for p in paths]
        _write_cells(rasterio, tmp, profile, grid, size, seed, changed)
    return paths[0], paths[1], paths[2]


def _write_cells(
    rasterio: Any, paths: list[Path], profile: dict[str, Any], grid: int, size: int, seed: int, changed: np.ndarray
) -> None:
    from rasterio.windows import Window

    with (
        rasterio.open(paths[0], "w", count=3, dtype="uint8", **profile) as before,
        rasterio.open(paths[1], "w", count=3, dtype="uint8", **profile) as after,
        rasterio.open(paths[2], "w", count=1, dtype="uint8", **profile) as truth,
    ):
        for k in range(grid * grid):
            pair = render_pair(seed, k, bool(changed[k]), size)
            window = Window((k % grid) * size, (k // grid) * size, size, size)
            before.write(pair.before.transpose(2, 0, 1), window=window)  # [3, S, S]
            after.write(pair.after.transpose(2, 0, 1), window=window)
            truth.write((pair.mask > 0).astype(np.uint8)[None] * 255, window=window)
