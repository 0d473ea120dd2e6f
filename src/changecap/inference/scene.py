"""Caption two whole georeferenced scenes tile by tile (``changecap scene``; extra ``geo``: rasterio).

The scenes are read in windows, so memory stays flat whatever their size. Both must carry a CRS, share CRS and
resolution and overlap (``align=True`` resamples AFTER onto BEFORE's grid through a ``WarpedVRT`` instead). Tiles of
``tile`` source pixels step by ``tile − overlap`` over the overlap, in BEFORE's pixel grid; edge tiles read past the
overlap and are padded. Pixels where either date has no data (its nodata mask, or outside it) are blanked in both
dates, so missing data cannot read as a change; a tile is skipped (and counted by reason) when a date has no data in
it, or less than ``min_valid`` of the tile's area inside the overlap. Non-8-bit imagery is stretched per band
between percentiles of a decimated read of the whole scene, so every tile of a date is scaled alike.

Each finished tile is appended to ``OUT/tiles.jsonl`` (flushed) and its mask, when the model predicts one, written
to ``OUT/tile_masks/<row>_<col>.png`` (the whole tile window, 255 = changed): an interrupted run started again with
the same settings captions only the tiles not yet done, and the outputs are rebuilt from the whole file. Under
``torchrun`` every rank takes a disjoint share of the tiles (its own ``tiles.rank<R>.jsonl``) and rank 0 merges them
once all are done.

Outputs: ``changes.geojson`` (RFC 7946: WGS84 lon/lat, one Polygon per captioned tile, clipped to the overlap of
the two dates; one schema for every model: a property the model does not predict is left out, never null, and the
collection's ``fields`` lists those it has), ``change_mask.tif`` (models with a CD head; BEFORE's CRS and transform,
1 = changed, 255 = nodata: not covered, or no data in a date), ``report.html``. Every file is written through
:mod:`changecap.data.files` (a temporary name created exclusively, renamed when complete, normal permissions);
temporaries are removed on every exit path, and those of a killed run when the next one starts.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from changecap.data.files import atomic_path, atomic_write_text, check_output_dir
from changecap.data.image_io import save_mask_png
from changecap.errors import ChangeCapError, DataError

TILES_FILE, SETTINGS_FILE, MASKS_DIR = "tiles.jsonl", "scene_run.json", "tile_masks"
GEOJSON_FILE, MASK_FILE, REPORT_FILE = "changes.geojson", "change_mask.tif", "report.html"
STRETCH_FILE = "stretch.json"  # both dates' per-band limits, computed once per run and reused by the report
NOT_COVERED = 255  # change_mask.tif's nodata: no tile captioned there, or no data in a date
OUTPUT_FILES = (TILES_FILE, SETTINGS_FILE, GEOJSON_FILE, MASK_FILE, REPORT_FILE, STRETCH_FILE)


@dataclass
class SceneSettings:
    """What defines a scene run (recorded in ``OUT/scene_run.json``; a resumed run must match it)."""

    before: str
    after: str
    model: str
    tile: int  # tile side in source pixels
    overlap: int = 0  # pixels shared by neighbouring tiles
    bands: list[int] | None = None  # 1-based band indexes read as R, G, B (None: 1, 2, 3)
    align: bool = False  # resample AFTER onto BEFORE's grid
    percentiles: tuple[float, float] = (2.0, 98.0)  # stretch of non-8-bit imagery
    batch_size: int = 16
    min_changed_fraction: float = 0.001  # a mask-only verdict: share of changed pixels that makes a tile "changed"
    precision: str = "fp32"  # the captioner's (bf16 / int8 tiles may differ from fp32 ones: a run never mixes them)
    # a tile is captioned when each date has data on at least this share of the tile's area inside the overlap;
    # half: the blanked rest cannot read as a change, but a caption of a mostly blank tile says little about it
    min_valid: float = 0.5

    def validate(self) -> None:
        if self.tile < 8:
            raise ChangeCapError(f"--tile must be >= 8 source pixels, got {self.tile}")
        if not 0 <= self.overlap < self.tile:
            raise ChangeCapError(f"--overlap must be in [0, tile), got {self.overlap} (tile {self.tile})")
        if self.bands is not None and (len(self.bands) != 3 or min(self.bands) < 1):
            raise ChangeCapError(f"--bands needs three 1-based band numbers (R,G,B), got {self.bands}")
        if self.batch_size < 1:
            raise ChangeCapError(f"--batch-size must be >= 1, got {self.batch_size}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ChangeCapError(f"--percentiles must satisfy 0 <= low < high <= 100, got {lo}, {hi}")
        if not 0 <= self.min_valid <= 1:
            raise ChangeCapError(f"--min-valid must be in [0, 1] (a share of the tile), got {self.min_valid}")


@dataclass(frozen=True)
class Tile:
    row: int
    col: int
    y: int  # top-left pixel in BEFORE's grid
    x: int
    size: int

    @property
    def key(self) -> str:
        return f"{self.row}_{self.col}"


@dataclass
class TileResult:
    row: int
    col: int
    y: int
    x: int
    size: int
    skipped: str | None = None  # why the tile was not captioned: "nodata" or "min_valid" (skip_reason)
    caption: str | None = None
    change_probability: float | None = None
    changed: bool | None = None
    mask: str | None = None  # file name under tile_masks/
    valid: list[float] | None = None  # share of the tile's area inside the overlap with data, before and after


@dataclass
class SceneGrid:
    """The common grid of the two scenes: BEFORE's pixel grid, and where the overlap lies in it."""

    crs: Any
    transform: Any  # BEFORE's affine transform
    width: int
    height: int
    window: tuple[int, int, int, int]  # overlap in BEFORE pixels: row_off, col_off, height, width
    after_offset: tuple[int, int]  # AFTER pixel = BEFORE pixel + offset (row, col); (0, 0) when aligned
    # the overlap of the two dates in BEFORE's CRS: a counter-clockwise ring of (x, y), not closed (a rectangle on
    # one grid; with align, AFTER's outline reprojected and cut to BEFORE's bounds)
    footprint: list[tuple[float, float]]


# ---------------------------------------------------------------------------------------------------- opening
def _rasterio() -> Any:
    try:
        import rasterio
    except ImportError:
        raise ChangeCapError("changecap scene needs rasterio: pip install 'changecap[geo]'") from None
    return rasterio


GDAL_CACHE_MB = 64  # GDAL's block cache (default: 5 % of RAM) would otherwise grow with the scene


def limited_gdal_cache(stack: ExitStack) -> None:
    """Enter a GDAL environment with a small block cache, so memory stays flat whatever the scene size."""
    stack.enter_context(_rasterio().Env(GDAL_CACHEMAX=GDAL_CACHE_MB))


def open_scene(path: str | os.PathLike[str], stack: ExitStack) -> Any:
    """Open one date; a one-line error for a missing or unreadable file and for a raster without georeferencing."""
    rasterio = _rasterio()
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "no such file")
    try:
        ds = stack.enter_context(rasterio.open(p))
    except rasterio.errors.RasterioIOError as e:
        raise DataError(p, f"cannot read as a raster ({' '.join(str(e).split())})") from None
    if ds.crs is None:
        raise DataError(p, "has no CRS (not georeferenced): assign the one it was made in (e.g. gdal_edit.py "
                        "-a_srs EPSG:32633 FILE) or export it again as a GeoTIFF with its CRS")  # fmt: skip
    t = ds.transform
    if t.b != 0 or t.d != 0:  # tiles, polygons and masks assume rows run along y and columns along x
        raise DataError(p, "has a rotated pixel grid; warp it north-up first (gdalwarp FILE OUT.tif)")
    return ds


def check_bands(ds: Any, bands: Sequence[int] | None, path: str) -> list[int]:
    """The 1-based bands to read as R, G, B; a one-line error for single-band images without ``--bands``."""
    if bands is None:
        if ds.count < 3:
            raise DataError(path, f"has {ds.count} band(s); choose three with --bands (e.g. --bands 1,1,1)")
        return [1, 2, 3]
    bad = [b for b in bands if b > ds.count]
    if bad:
        raise DataError(path, f"--bands {','.join(map(str, bands))}: the image has {ds.count} band(s)")
    return list(bands)


def _box(minx: float, miny: float, maxx: float, maxy: float) -> list[tuple[float, float]]:
    return [(minx, miny), (maxx, miny), (maxx, maxy), (minx, maxy)]  # counter-clockwise


def _pixel_box(transform: Any, row: float, col: float, height: float, width: float) -> list[float]:
    """A pixel window's bounds in the CRS: minx, miny, maxx, maxy (north-up or south-up grids)."""
    x0, y0 = transform @ (col, row)
    x1, y1 = transform @ (col + width, row + height)
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def _signed_area(ring: Sequence[Sequence[float]]) -> float:
    """Shoelace area of an open ring: positive when counter-clockwise (x east, y north)."""
    return 0.5 * sum(p[0] * q[1] - q[0] * p[1] for p, q in zip(ring, [*ring[1:], ring[0]], strict=True))


def _collinear(p: Sequence[float], q: Sequence[float], r: Sequence[float]) -> bool:
    """Whether ``q`` lies on the line through ``p`` and ``r`` (a vertex that adds nothing to a ring's shape)."""
    cross = (q[0] - p[0]) * (r[1] - q[1]) - (q[1] - p[1]) * (r[0] - q[0])
    scale = (abs(q[0] - p[0]) + abs(q[1] - p[1])) * (abs(r[0] - q[0]) + abs(r[1] - q[1]))
    return abs(cross) <= 1e-9 * scale


def clip_ring(ring: Sequence[tuple[float, float]], box: Sequence[float]) -> list[tuple[float, float]]:
    """The part of polygon ``ring`` (open: the first vertex not repeated) inside ``box`` (minx, miny, maxx, maxy),
    by Sutherland–Hodgman (exact for any polygon clipped by a convex window); an empty list when they do not meet.
    The result is counter-clockwise and starts at its lowest vertex (then leftmost): for two rectangles, the
    corners (minx, miny), (maxx, miny), (maxx, maxy), (minx, maxy)."""
    minx, miny, maxx, maxy = box

    def at_x(x: float) -> Any:
        return lambda p, q: (x, p[1] + (q[1] - p[1]) * (x - p[0]) / (q[0] - p[0]))

    def at_y(y: float) -> Any:
        return lambda p, q: (p[0] + (q[0] - p[0]) * (y - p[1]) / (q[1] - p[1]), y)

    points = list(ring)
    edges = ((lambda p: p[0] >= minx, at_x(minx)), (lambda p: p[0] <= maxx, at_x(maxx)),
             (lambda p: p[1] >= miny, at_y(miny)), (lambda p: p[1] <= maxy, at_y(maxy)))  # fmt: skip
    for inside, cross in edges:
        kept: list[tuple[float, float]] = []
        for i, cur in enumerate(points):
            prev = points[i - 1]  # an edge prev → cur crossing the line gets its crossing point (never parallel)
            if inside(cur):
                if not inside(prev):
                    kept.append(cross(prev, cur))
                kept.append(cur)
            elif inside(prev):
                kept.append(cross(prev, cur))
        points = kept
    out = [p for i, p in enumerate(points) if p != points[i - 1]]  # no repeated vertex (nor last == first)
    if len(out) >= 3:
        out = [q for p, q, r in zip([out[-1], *out[:-1]], out, [*out[1:], out[0]], strict=True)
               if not _collinear(p, q, r)]  # fmt: skip
    if len(out) < 3 or _signed_area(out) == 0:
        return []
    if _signed_area(out) < 0:
        out.reverse()
    first = min(range(len(out)), key=lambda i: (out[i][1], out[i][0]))
    return out[first:] + out[:first]


ALIGN_EDGE_POINTS = 32  # points per side of AFTER's outline reprojected for --align (its edges curve in BEFORE's CRS)


def _outline_in(ds: Any, crs: Any) -> list[tuple[float, float]]:
    """``ds``'s outline (its pixel grid's edges, densified) in ``crs``, counter-clockwise."""
    from rasterio.warp import transform as warp

    n = ALIGN_EDGE_POINTS
    h, w = ds.height, ds.width
    steps = [k / n for k in range(n)]
    pixels = ([(w * s, 0.0) for s in steps] + [(float(w), h * s) for s in steps]
              + [(w * (1 - s), float(h)) for s in steps] + [(0.0, h * (1 - s)) for s in steps])  # fmt: skip
    xs, ys = zip(*(ds.transform @ p for p in pixels), strict=True)
    xs_crs, ys_crs = warp(ds.crs, crs, list(xs), list(ys))
    ring = list(zip(map(float, xs_crs), map(float, ys_crs), strict=True))
    return ring if _signed_area(ring) > 0 else ring[::-1]


def common_grid(before: Any, after: Any, settings: SceneSettings, stack: ExitStack) -> tuple[SceneGrid, Any]:
    """Check CRS, resolution and overlap (or align AFTER onto BEFORE) → the grid and the AFTER dataset to read."""
    names = f"{settings.before} and {settings.after}"
    if settings.align:
        from rasterio.vrt import WarpedVRT
        from rasterio.warp import Resampling

        # AFTER's outline in BEFORE's pixels decides the overlap window; the VRT then reads AFTER on BEFORE's grid
        outline = _outline_in(after, before.crs)
        cols, rows = zip(*(~before.transform @ p for p in outline), strict=True)
        dr, dc = math.floor(min(rows)), math.floor(min(cols))
        span_r, span_c = math.ceil(max(rows)) - dr, math.ceil(max(cols)) - dc
        footprint = clip_ring(outline, _pixel_box(before.transform, 0, 0, before.height, before.width))
        after = stack.enter_context(WarpedVRT(after, crs=before.crs, transform=before.transform,
                                              width=before.width, height=before.height,
                                              resampling=Resampling.bilinear))  # fmt: skip
        offset = (0, 0)
    else:
        if before.crs != after.crs:
            raise DataError(None, f"{names}: different CRS ({before.crs} vs {after.crs}); reproject one or use --align")
        if not np.allclose(before.res, after.res, rtol=1e-9, atol=0):
            raise DataError(
                None, f"{names}: different resolutions ({before.res} vs {after.res}); resample one or use --align"
            )
        # AFTER's origin in BEFORE's pixels: whole pixels, or the grids do not line up
        col_f, row_f = ~before.transform @ (after.transform.c, after.transform.f)
        if abs(col_f - round(col_f)) > 1e-6 or abs(row_f - round(row_f)) > 1e-6:
            raise DataError(None, f"{names}: the pixel grids are offset by a fraction of a pixel; use --align")
        dr, dc = round(row_f), round(col_f)
        span_r, span_c = after.height, after.width
        offset = (-dr, -dc)
        footprint = []  # the window's rectangle, below
    r0, c0 = max(0, dr), max(0, dc)
    r1, c1 = min(before.height, dr + span_r), min(before.width, dc + span_c)
    if r1 <= r0 or c1 <= c0 or (settings.align and not footprint):
        raise DataError(None, f"{names}: the scenes do not overlap")
    if not settings.align:
        footprint = _box(*_pixel_box(before.transform, r0, c0, r1 - r0, c1 - c0))
    return SceneGrid(before.crs, before.transform, before.width, before.height, (r0, c0, r1 - r0, c1 - c0),
                     offset, footprint), after  # fmt: skip


def make_tiles(grid: SceneGrid, tile: int, overlap: int) -> list[Tile]:
    """Tiles covering the overlap window, row-major; the last row/column may reach past it (padded on read)."""
    r0, c0, h, w = grid.window
    step = tile - overlap
    rows = max(1, math.ceil((h - overlap) / step)) if h > tile else 1
    cols = max(1, math.ceil((w - overlap) / step)) if w > tile else 1
    return [Tile(i, j, r0 + i * step, c0 + j * step, tile) for i in range(rows) for j in range(cols)]


def largest_tile(grid: SceneGrid) -> int:
    """The largest tile side a run over ``grid`` accepts: the overlap's longer side (a larger tile would be mostly
    padding, and its arrays would grow with the tile, not the scene)."""
    return max(grid.window[2], grid.window[3])


def check_tile(settings: SceneSettings, grid: SceneGrid) -> None:
    if settings.tile > largest_tile(grid):
        h, w = grid.window[2:]
        raise ChangeCapError(f"--tile {settings.tile} is larger than the overlap of {settings.before} and "
                             f"{settings.after} ({h} × {w} px); use --tile {largest_tile(grid)} or less")  # fmt: skip


def tile_inside(tile: Tile | TileResult, window: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The part of a tile inside the overlap window, in the tile's own pixels: y0, x0, y1, x1."""
    r0, c0, h, w = window
    y0, x0 = max(r0, tile.y) - tile.y, max(c0, tile.x) - tile.x
    y1, x1 = min(r0 + h, tile.y + tile.size) - tile.y, min(c0 + w, tile.x + tile.size) - tile.x
    return y0, x0, y1, x1


@dataclass
class SceneInputs:
    """Both dates opened and checked: BEFORE, AFTER as read (the aligned VRT or AFTER itself), AFTER's file, the
    bands to read from each, and the common grid."""

    before: Any
    after: Any
    after_raw: Any
    bands_before: list[int]
    bands_after: list[int]
    grid: SceneGrid


def open_inputs(settings: SceneSettings, stack: ExitStack, check_tile_size: bool = True) -> SceneInputs:
    """Open both dates in ``stack`` and check everything a run needs of them (one-line errors)."""
    limited_gdal_cache(stack)
    before = open_scene(settings.before, stack)
    after_raw = open_scene(settings.after, stack)
    bands_b = check_bands(before, settings.bands, settings.before)
    bands_a = check_bands(after_raw, settings.bands, settings.after)
    grid, after = common_grid(before, after_raw, settings, stack)
    if check_tile_size:
        check_tile(settings, grid)
    return SceneInputs(before, after, after_raw, bands_b, bands_a, grid)


@dataclass
class SceneRun:
    """What captioning the tiles and building the outputs both start from: the inputs opened and checked, both
    dates' stretch (``stretch.json``) and every tile of the grid, row-major."""

    inputs: SceneInputs
    limits: tuple[np.ndarray, np.ndarray]  # before's and after's per-band (low, high), [3, 2] each
    tiles: list[Tile]


def open_run(settings: SceneSettings, out: Path, stack: ExitStack) -> SceneRun:
    """Open the run in ``out`` (in ``stack``): the inputs, their recorded stretch and the tiles."""
    inputs = open_inputs(settings, stack)
    limits = run_stretch_limits(out, settings, inputs)
    return SceneRun(inputs, limits, make_tiles(inputs.grid, settings.tile, settings.overlap))


def check_inputs(settings: SceneSettings, default_tile: bool = False) -> SceneSettings:
    """Check both dates against ``settings`` before anything is recorded → the settings to run. ``default_tile``:
    the tile is the model's pair size, not the user's choice, and shrinks to the overlap's longer side when the
    scenes are smaller (a tile the user chose larger than that is an error)."""
    with ExitStack() as stack:
        inputs = open_inputs(settings, stack, check_tile_size=False)
        grid = inputs.grid
        dates = ((settings.before, inputs.before, inputs.bands_before[0], (0, 0)),
                 (settings.after, inputs.after, inputs.bands_after[0], grid.after_offset))  # fmt: skip
        for path, ds, band, offset in dates:
            if not has_data(ds, band, grid.window, offset):
                raise DataError(path, "has no data in the overlap of the two scenes (every pixel there is nodata); "
                                "nothing to caption")  # fmt: skip
    if default_tile and settings.tile > largest_tile(grid):
        settings = replace(settings, tile=largest_tile(grid))
        settings.validate()
    check_tile(settings, grid)
    return settings


# ---------------------------------------------------------------------------------------------------- reading
def decimated_read(
    ds: Any, bands: list[int], out_h: int, out_w: int, window: tuple[int, int, int, int] | None = None,
    masked: bool = False,
) -> np.ndarray:  # fmt: skip
    """Nearest-neighbour decimation of ``window`` (row_off, col_off, height, width; default the whole dataset) to
    [len(bands), out_h, out_w], read in strips of whole block rows: every block is decoded once and memory holds one
    strip. (GDAL's own ``out_shape`` read took 36 s for a 4096² deflate GeoTIFF, this 1 s.)"""
    from rasterio.windows import Window

    r0, c0, h, w = window if window is not None else (0, 0, ds.height, ds.width)
    rows = r0 + (np.arange(out_h) * h) // out_h + h // (2 * out_h)  # source row of each output row (centres)
    cols = (np.arange(out_w) * w) // out_w + w // (2 * out_w)  # within the window
    out = np.ma.zeros((len(bands), out_h, out_w), dtype=ds.dtypes[0]) if masked else \
        np.zeros((len(bands), out_h, out_w), dtype=ds.dtypes[0])  # fmt: skip
    strip = max(1, ds.block_shapes[0][0])
    first = 0
    while first < out_h:
        top = int(rows[first]) // strip * strip  # the block row holding this output row
        bottom = min(top + strip, ds.height)
        last = first
        while last < out_h and rows[last] < bottom:
            last += 1
        data = ds.read(bands, window=Window(c0, top, w, bottom - top), masked=masked)  # [3, strip, w]
        out[:, first:last] = data[:, rows[first:last] - top][:, :, cols]
        first = last
    return out


def stretch_limits(ds: Any, bands: list[int], percentiles: tuple[float, float], max_side: int = 1024) -> np.ndarray:
    """Per band (low, high) between which values map to 0–255, from a decimated read of the whole scene ([3, 2])."""
    if ds.dtypes[0] == "uint8":
        return np.array([[0.0, 255.0]] * len(bands))
    scale = max(1, math.ceil(max(ds.height, ds.width) / max_side))
    data = decimated_read(ds, bands, max(1, ds.height // scale), max(1, ds.width // scale), masked=True)
    data = data.astype(np.float64)  # [3, h, w], nodata masked
    limits = []
    for band in data:
        values = band.compressed()
        if values.size == 0:
            limits.append((0.0, 1.0))
            continue
        lo, hi = np.percentile(values, percentiles)
        limits.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    return np.array(limits)


def run_stretch_limits(out: Path, settings: SceneSettings, inputs: SceneInputs) -> tuple[np.ndarray, np.ndarray]:
    """Both dates' stretch limits for the run in ``out``: read from its ``stretch.json`` if there, else computed (a
    decimated read of each whole scene) and recorded, so tiles and report use one stretch and read the scenes once."""
    path = out / STRETCH_FILE
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            return np.array(saved["before"], np.float64), np.array(saved["after"], np.float64)
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            pass  # a torn or foreign file: compute again (the limits are a pure function of the scenes)
    limits_b = stretch_limits(inputs.before, inputs.bands_before, settings.percentiles)
    limits_a = stretch_limits(inputs.after_raw, inputs.bands_after, settings.percentiles)
    atomic_write_text(path, json.dumps({"before": limits_b.tolist(), "after": limits_a.tolist()}))
    return limits_b, limits_a


def to_uint8(data: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """[3, H, W] raw values → uint8 [H, W, 3] with the scene's stretch."""
    lo, hi = limits[:, 0, None, None], limits[:, 1, None, None]
    scaled = np.clip((data.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0) * 255.0
    return np.ascontiguousarray(np.round(scaled).astype(np.uint8).transpose(1, 2, 0))


def read_tile(ds: Any, bands: list[int], tile: Tile, offset: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One tile of one date → raw values [3, T, T] (zero past the scene) and validity [T, T] (False: nodata or
    outside). The part inside the dataset is read and padded here (WarpedVRTs read no boundless windows)."""
    from rasterio.windows import Window

    t = tile.size
    data = np.zeros((len(bands), t, t), dtype=ds.dtypes[0])
    valid = np.zeros((t, t), dtype=bool)
    y, x = tile.y + offset[0], tile.x + offset[1]
    y0, x0, y1, x1 = max(0, y), max(0, x), min(ds.height, y + t), min(ds.width, x + t)
    if y1 > y0 and x1 > x0:
        window = Window(x0, y0, x1 - x0, y1 - y0)
        data[:, y0 - y : y1 - y, x0 - x : x1 - x] = ds.read(bands, window=window)  # [3, h, w]
        valid[y0 - y : y1 - y, x0 - x : x1 - x] = ds.read_masks(bands[0], window=window) > 0  # [h, w]
    return data, valid


def has_data(ds: Any, band: int, window: tuple[int, int, int, int], offset: tuple[int, int]) -> bool:
    """Whether any pixel of ``window`` (BEFORE pixels) has data in this date: its validity read in strips of about
    4 M pixels, stopping at the first valid one (a scene with data is decided by its first strip; one without is read
    once, as a run would read it)."""
    r0, c0, h, w = window
    rows = max(1, 4_000_000 // max(1, w))
    return any(read_valid(ds, band, (r, c0, min(rows, r0 + h - r), w), offset).any() for r in range(r0, r0 + h, rows))


def read_valid(ds: Any, band: int, window: tuple[int, int, int, int], offset: tuple[int, int]) -> np.ndarray:
    """Validity [h, w] of one date over ``window`` (row_off, col_off, height, width in BEFORE pixels; False: nodata
    or outside the date)."""
    from rasterio.windows import Window

    r, c, h, w = window
    y, x = r + offset[0], c + offset[1]
    valid = np.zeros((h, w), dtype=bool)
    y0, x0, y1, x1 = max(0, y), max(0, x), min(ds.height, y + h), min(ds.width, x + w)
    if y1 > y0 and x1 > x0:
        valid[y0 - y : y1 - y, x0 - x : x1 - x] = ds.read_masks(band, window=Window(x0, y0, x1 - x0, y1 - y0)) > 0
    return valid


# ---------------------------------------------------------------------------------------------------- output folder
def check_out_dir(out: Path) -> None:
    """Check before any work that the run can write in ``out`` (:func:`~changecap.data.files.check_output_dir`: a
    file where the folder should be, a read-only file system, a folder without write permission) and that nothing
    there is in the way of its outputs (an output name taken by a folder, a file where ``tile_masks/`` goes, a results
    file it cannot append to); one-line errors naming the path and ``--out``. Creates nothing."""
    check_output_dir(out, "--out")
    if not out.is_dir():
        return
    for name in OUTPUT_FILES:
        if (out / name).is_dir():
            raise DataError(out / name, "is a folder where the run writes a file; move it or use another --out")
    masks = out / MASKS_DIR
    if masks.exists() and not masks.is_dir():
        raise DataError(masks, "is a file where the run keeps its tile masks; move it or use another --out")
    if masks.is_dir():
        check_output_dir(masks, "--out")
    for path in out.glob("tiles*.jsonl"):
        if not os.access(path, os.W_OK):  # results are appended to, not replaced
            raise DataError(path, "is not writable; the run appends to it (fix its permissions or use another --out)")


# ---------------------------------------------------------------------------------------------------- results file
def record_settings(out: Path, settings: SceneSettings) -> None:
    """Record the settings, or check that an existing run in ``out`` used the same ones (resume). Call it once the
    inputs are checked (:func:`check_inputs`): a run refused for its inputs records nothing, so it can be retried
    with other settings in the same folder."""
    path = out / SETTINGS_FILE
    mine = asdict(settings)
    mine["percentiles"] = list(mine["percentiles"])
    if path.is_file():
        try:
            theirs = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(path, f"unreadable ({e}); remove it or use another --out") from None
        theirs.setdefault("precision", "fp32")  # runs recorded before the option existed were fp32
        theirs.setdefault("min_valid", 0.0)  # and before --min-valid, only tiles without data were skipped
        for key, value in mine.items():
            if key != "batch_size" and theirs.get(key) != value:
                raise DataError(path, f"the run in this folder used {key}={theirs.get(key)!r}, not {value!r}; "
                                "use another --out to start a new run")  # fmt: skip
        return
    atomic_write_text(path, json.dumps(mine, indent=1))


def read_results(out: Path) -> dict[str, TileResult]:
    """Every tile result of ``out`` (all ranks' files); a torn last line (a kill mid-write) is ignored."""
    done: dict[str, TileResult] = {}
    for path in sorted(out.glob("tiles*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                res = TileResult(**json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue
            done[f"{res.row}_{res.col}"] = res
    return done


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line a kill left half written, so appended results start on a line of their own."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


# ---------------------------------------------------------------------------------------------------- the run
def _changed(res: Any, threshold: float, valid: np.ndarray | None = None) -> bool:
    """A tile's verdict: the model's change probability (≥ 0.5) when it has one, else its mask (a share of changed
    pixels ≥ ``threshold``; among the ``valid`` ones [T, T] when given, the mask then being at the tile's size),
    else its caption (not one of the datasets' no-change sentences)."""
    from changecap.data.text import is_no_change

    if res.change_probability is not None:
        return bool(res.change_probability >= 0.5)
    if res.mask is not None:
        if valid is None:
            return bool(res.mask.mean() >= threshold)
        return bool(valid.any() and (res.mask[valid] > 0).mean() >= threshold)
    return res.caption is not None and not is_no_change(res.caption)


def skip_reason(shares: Sequence[float], min_valid: float) -> str | None:
    """Why a tile whose dates have data on ``shares`` of its area inside the overlap is not captioned: ``"nodata"``
    (a date has none), ``"min_valid"`` (a date has data on less than ``min_valid`` of it), or None."""
    if min(shares) == 0.0:
        return "nodata"
    if min(shares) < min_valid:
        return "min_valid"
    return None


@dataclass
class TileInput:
    """One tile read from both dates and prepared for the model."""

    tile: Tile
    pair: Any  # torch.Tensor [2, 3, S, S], preprocessed as the model wants
    valid: np.ndarray  # [T, T] bool: both dates have data there (the rest is blank in both)
    shares: list[float]  # share of the tile's area inside the overlap with data, before and after


def read_tile_pair(inputs: SceneInputs, tile: Tile) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raster reads: both dates' raw values [3, T, T] and validity [T, T] over ``tile`` (before, then after)."""
    raw_b, ok_b = read_tile(inputs.before, inputs.bands_before, tile, (0, 0))
    raw_a, ok_a = read_tile(inputs.after, inputs.bands_after, tile, inputs.grid.after_offset)
    return raw_b, ok_b, raw_a, ok_a


def valid_shares(tile: Tile, valid: Sequence[np.ndarray], window: tuple[int, int, int, int]) -> list[float]:
    """Each date's share of the tile's area inside the overlap ``window`` that has data."""
    y0, x0, y1, x1 = tile_inside(tile, window)
    return [float(ok[y0:y1, x0:x1].mean()) for ok in valid]


def stretched_pair(
    raw_b: np.ndarray, raw_a: np.ndarray, both: np.ndarray, limits: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Stretching: both dates' raw values → uint8 [T, T, 3] with the run's stretch, blank (0) where ``both`` is
    False, so that missing data cannot read as a change."""
    rgb_b, rgb_a = to_uint8(raw_b, limits[0]), to_uint8(raw_a, limits[1])  # [T, T, 3]
    rgb_b[~both] = 0
    rgb_a[~both] = 0
    return rgb_b, rgb_a


def prepare_tile(run: SceneRun, tile: Tile, min_valid: float, preprocess: Any) -> TileInput | TileResult:
    """Read, check and stretch one tile → its model input, or the record of a skipped tile (``skip_reason``)."""
    from changecap.inference.predictor import prepare_pair_and_size

    raw_b, ok_b, raw_a, ok_a = read_tile_pair(run.inputs, tile)
    exact = valid_shares(tile, (ok_b, ok_a), run.inputs.grid.window)
    reason, shares = skip_reason(exact, min_valid), [round(v, 4) for v in exact]
    if reason is not None:
        return TileResult(tile.row, tile.col, tile.y, tile.x, tile.size, skipped=reason, valid=shares)
    both = ok_b & ok_a  # [T, T]; a pixel without data in one date is blank in both
    rgb_b, rgb_a = stretched_pair(raw_b, raw_a, both, run.limits)
    pair, _ = prepare_pair_and_size(rgb_b, rgb_a, preprocess, ("before tile", "after tile"))
    return TileInput(tile, pair, both, shares)


def caption_ready(captioner: Any, ready: Sequence[TileInput], out: Path, threshold: float) -> list[TileResult]:
    """The model on a batch of prepared tiles → their records; each tile's mask (models with a change mask) is
    written to ``out/tile_masks/<row>_<col>.png`` at the tile's size."""
    import torch

    results = captioner.caption_tensor(torch.stack([t.pair for t in ready]))  # [n, 2, 3, S, S] in
    records = []
    for item, res in zip(ready, results, strict=True):
        t, mask_name = item.tile, None
        if res.mask is not None:
            res.mask = captioner.mask_at_size(res.mask, (t.size, t.size))  # [T, T]
            mask_name = f"{t.key}.png"
            save_mask_png(res.mask, out / MASKS_DIR / mask_name)
        changed = _changed(res, threshold, item.valid)
        records.append(TileResult(t.row, t.col, t.y, t.x, t.size, None, res.caption, res.change_probability,
                                  changed, mask_name, item.shares))  # fmt: skip
    return records


def results_path(out: Path, rank: int = 0, world_size: int = 1) -> Path:
    """This rank's results file: ``tiles.jsonl`` alone, ``tiles.rank<R>.jsonl`` under torchrun."""
    return out / (TILES_FILE if world_size == 1 else f"tiles.rank{rank}.jsonl")


def append_results(results_file: Any, records: Sequence[TileResult]) -> Iterator[TileResult]:
    """File writes: each record as one JSON line (row-major), flushed before it is handed on."""
    for rec in sorted(records, key=lambda r: (r.row, r.col)):
        results_file.write(json.dumps(asdict(rec)) + "\n")
        results_file.flush()
        yield rec


def caption_tiles(
    captioner: Any,
    settings: SceneSettings,
    out: Path,
    *,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> Iterator[TileResult]:
    """Caption this rank's share of the tiles not done yet, appending each result to its results file: batches of
    ``settings.batch_size`` tiles are read and stretched (:func:`prepare_tile`), captioned (:func:`caption_ready`)
    and recorded (:func:`append_results`)."""
    from tqdm import tqdm

    with ExitStack() as stack:
        run = open_run(settings, out, stack)
        tiles = run.tiles[rank::world_size]
        done = read_results(out)
        todo = [t for t in tiles if t.key not in done]
        if captioner.capabilities.change_mask:
            (out / MASKS_DIR).mkdir(exist_ok=True)
        bar = tqdm(total=len(tiles), initial=len(tiles) - len(todo), desc="tiles", unit="tile", disable=not progress)
        path = results_path(out, rank, world_size)
        _drop_torn_tail(path)
        with path.open("a", encoding="utf-8") as results_file:
            for start in range(0, len(todo), settings.batch_size):
                batch = todo[start : start + settings.batch_size]
                prepared = [prepare_tile(run, t, settings.min_valid, captioner.preprocess) for t in batch]
                records = [p for p in prepared if isinstance(p, TileResult)]
                ready = [p for p in prepared if isinstance(p, TileInput)]
                if ready:
                    records += caption_ready(captioner, ready, out, settings.min_changed_fraction)
                yield from append_results(results_file, records)
                bar.update(len(batch))
        bar.close()


def tile_polygons(grid: SceneGrid, tiles: Sequence[TileResult]) -> list[tuple[list[list[float]], list[float]]]:
    """Each tile's polygon, clipped to the overlap of the two dates (``grid.footprint``), reprojected to WGS84 (a
    closed counter-clockwise ring of [lon, lat]), and the tile's whole window in the source CRS (minx, miny, maxx,
    maxy; edge tiles reach past the scenes); one reprojection call for all tiles."""
    from rasterio.warp import transform as warp

    all_bounds, rings, xs, ys = [], [], [], []
    for res in tiles:
        bounds = _pixel_box(grid.transform, res.y, res.x, res.size, res.size)
        ring = clip_ring(grid.footprint, bounds)
        if not ring:  # a tile that only touches the footprint (its data from a boundary pixel): its window's part
            r0, c0, h, w = grid.window  # inside the overlap window
            ring = clip_ring(_box(*_pixel_box(grid.transform, r0, c0, h, w)), bounds)
        all_bounds.append(bounds)
        rings.append(len(ring))
        xs += [p[0] for p in ring]
        ys += [p[1] for p in ring]
    lon, lat = warp(grid.crs, "EPSG:4326", xs, ys) if tiles else ([], [])
    out, first = [], 0
    for n, bounds in zip(rings, all_bounds, strict=True):
        ring = [[float(lon[k]), float(lat[k])] for k in range(first, first + n)]
        if _signed_area(ring) < 0:  # counter-clockwise in lon/lat too (RFC 7946), whatever the source CRS
            ring.reverse()
        out.append(([*ring, ring[0]], bounds))
        first += n
    return out


def write_outputs(settings: SceneSettings, out: Path, has_masks: bool) -> dict[str, Any]:
    """Build ``changes.geojson``, ``change_mask.tif`` (models with masks) and ``report.html`` from every tile result
    in ``out``; returns counts: tiles, captioned, skipped, skipped_by_reason, changed."""
    with ExitStack() as stack:  # the scenes stay open for the report's images
        return _write_outputs(settings, out, has_masks, open_run(settings, out, stack))


# a feature's properties, in this order; each has one JSON type in every feature of every model (None: left out)
FEATURE_FIELDS = ("caption", "change_probability", "changed", "tile", "bounds_source")


def _feature_properties(res: TileResult, bounds: list[float]) -> dict[str, Any]:
    props = {"caption": res.caption, "change_probability": None if res.change_probability is None else
             float(res.change_probability), "changed": bool(res.changed), "tile": [res.row, res.col],
             "bounds_source": [float(b) for b in bounds]}  # fmt: skip
    return {k: v for k, v in props.items() if v is not None}


def _write_outputs(settings: SceneSettings, out: Path, has_masks: bool, run: SceneRun) -> dict[str, Any]:
    from changecap.inference.scene_report import render_scene_report

    inputs, grid, expected = run.inputs, run.inputs.grid, run.tiles
    results = read_results(out)
    missing = [t.key for t in expected if t.key not in results]
    if missing:
        raise ChangeCapError(f"{out}: {len(missing)} tile(s) not captioned yet (first {missing[0]}); run again")
    ordered = [results[t.key] for t in expected]
    captioned = [r for r in ordered if r.skipped is None]
    skipped = dict(sorted(Counter(r.skipped for r in ordered if r.skipped is not None).items()))
    crs_name = grid.crs.to_string()
    features = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                 "properties": _feature_properties(res, bounds)}
                for res, (ring, bounds) in zip(captioned, tile_polygons(grid, captioned), strict=True)]  # fmt: skip
    fields = [k for k in FEATURE_FIELDS if any(k in f["properties"] for f in features)] if features else \
        ["changed", "tile", "bounds_source"]  # fmt: skip
    collection = {
        "type": "FeatureCollection",
        "properties": {
            "crs_source": crs_name,
            "tile": settings.tile,
            "overlap": settings.overlap,
            "min_valid": settings.min_valid,
            "fields": fields,  # the properties the features have: what this model predicts
            "skipped_tiles": len(ordered) - len(captioned),
            "skipped_by_reason": skipped,
        },
        "features": features,
    }
    atomic_write_text(out / GEOJSON_FILE, json.dumps(collection))
    if has_masks:
        _write_mask_tif(inputs, captioned, out)
    changed = [r for r in captioned if r.changed]
    # the most probable first (row-major without probabilities); at most REPORT_TILES thumbnails, so the page's
    # size does not grow with the scene (changes.geojson lists them all)
    changed.sort(key=lambda r: (-(r.change_probability or 0.0), r.row, r.col))
    overviews, thumbnails = _report_images(settings, inputs, changed[:REPORT_TILES], run.limits)
    page = render_scene_report(settings, crs_name, ordered, overviews, thumbnails, grid.window)
    atomic_write_text(out / REPORT_FILE, page)
    return {"tiles": len(ordered), "captioned": len(captioned), "skipped": len(ordered) - len(captioned),
            "skipped_by_reason": skipped, "changed": sum(bool(r.changed) for r in captioned)}  # fmt: skip


OVERVIEW_SIDE = 640  # longest side of a scene's overview in the report, in screen pixels
REPORT_TILES = 200  # changed tiles shown with thumbnails in the report


def _report_images(
    settings: SceneSettings, inputs: SceneInputs, changed: list[TileResult], limits: tuple[np.ndarray, np.ndarray]
) -> tuple[list[tuple[str, np.ndarray, float]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Both scenes' overviews on BEFORE's grid (decimated reads) and the changed tiles' RGB, in ``changed``'s order,
    for the report (AFTER read as the tiles read it: the aligned VRT or AFTER itself; ``limits`` the run's stretch
    of before and after)."""
    grid, before = inputs.grid, inputs.before
    scale = min(1.0, OVERVIEW_SIDE / max(grid.height, grid.width))
    out_h, out_w = max(1, round(grid.height * scale)), max(1, round(grid.width * scale))
    overviews, thumbnails, dates = [], {}, []
    for label, path, ds, bands, date_limits in (
        ("before", settings.before, before, inputs.bands_before, limits[0]),
        ("after", settings.after, inputs.after, inputs.bands_after, limits[1]),
    ):
        offset = (0, 0) if ds is before else grid.after_offset
        canvas = np.zeros((out_h, out_w, 3), np.uint8)  # black where the date has no data
        r0, c0, h, w = grid.window if ds is not before else (0, 0, grid.height, grid.width)
        window = (r0 + offset[0], c0 + offset[1], h, w)
        part = to_uint8(decimated_read(ds, bands, max(1, round(h * scale)), max(1, round(w * scale)), window),
                        date_limits)  # fmt: skip
        y, x = round(r0 * scale), round(c0 * scale)
        ph, pw = min(part.shape[0], out_h - y), min(part.shape[1], out_w - x)
        canvas[y : y + ph, x : x + pw] = part[:ph, :pw]
        overviews.append((f"{label}: {path}", canvas, scale))
        dates.append((ds, bands, date_limits, offset))
    for r in changed:
        tile = Tile(r.row, r.col, r.y, r.x, r.size)
        rgb = [to_uint8(read_tile(ds, bands, tile, offset)[0], limits) for ds, bands, limits, offset in dates]
        thumbnails[tile.key] = (rgb[0], rgb[1])
    return overviews, thumbnails


def _write_mask_tif(inputs: SceneInputs, captioned: list[TileResult], out: Path) -> None:
    """Tile masks into one GeoTIFF on BEFORE's grid, written window by window (overlaps: changed if any tile says
    so); its nodata ``NOT_COVERED`` marks the pixels no tile covered and those without data in a date."""
    from rasterio.windows import Window

    from changecap.data.image_io import read_mask

    rasterio = _rasterio()
    grid = inputs.grid
    profile = {"driver": "GTiff", "dtype": "uint8", "count": 1, "crs": grid.crs, "transform": grid.transform,
               "width": grid.width, "height": grid.height, "nodata": NOT_COVERED, "compress": "deflate",
               "tiled": True, "blockxsize": 256, "blockysize": 256}  # fmt: skip
    with atomic_path(out / MASK_FILE) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            for r0 in range(0, grid.height, 256):  # every block starts as "not covered"
                for c0 in range(0, grid.width, 256):
                    h, w = min(256, grid.height - r0), min(256, grid.width - c0)
                    dst.write(np.full((1, h, w), NOT_COVERED, np.uint8), window=Window(c0, r0, w, h))
        with rasterio.open(tmp, "r+") as dst:
            for res in captioned:
                if res.mask is None:
                    continue
                # [T, T], 1 = changed; a tile mask is the tile's size, whatever the image bound
                tile = read_mask(out / MASKS_DIR / res.mask, binary=True, max_pixels=res.size * res.size)
                y0, x0, y1, x1 = tile_inside(res, grid.window)  # the part of the tile inside the overlap
                window = (res.y + y0, res.x + x0, y1 - y0, x1 - x0)
                valid = read_valid(inputs.before, inputs.bands_before[0], window, (0, 0)) & \
                    read_valid(inputs.after, inputs.bands_after[0], window, grid.after_offset)  # fmt: skip
                part = tile[y0:y1, x0:x1]
                win = Window(window[1], window[0], window[3], window[2])
                current = dst.read(1, window=win)
                merged = np.where(current == NOT_COVERED, part, np.maximum(current, part))
                dst.write(np.where(valid, merged, current)[None], window=win)
