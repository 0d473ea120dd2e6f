"""Caption two whole georeferenced scenes tile by tile (``changecap scene``; extra ``geo``: rasterio).

The scenes are read in windows, so memory stays flat whatever their size. Both must share CRS and resolution and
overlap (``align=True`` resamples AFTER onto BEFORE's grid through a ``WarpedVRT`` instead). Tiles of ``tile``
source pixels step by ``tile − overlap`` over the overlap, in BEFORE's pixel grid; edge tiles read past the scene
and are padded (``boundless``). A tile where either date is all nodata (the dataset's mask) is skipped and counted.
Non-8-bit imagery is stretched per band between percentiles of a decimated read of the whole scene, so every tile of
a date is scaled alike.

Each finished tile is appended to ``OUT/tiles.jsonl`` (flushed) and its mask, when the model predicts one, written
to ``OUT/tile_masks/``: an interrupted run started again with the same settings captions only the tiles not yet
done, and the outputs are rebuilt from the whole file. Under ``torchrun`` every rank takes a disjoint share of the
tiles (its own ``tiles.rank<R>.jsonl``) and rank 0 merges them once all are done.

Outputs: ``changes.geojson`` (RFC 7946: WGS84 lon/lat, one Polygon per captioned tile), ``change_mask.tif``
(models with a CD head; BEFORE's CRS and transform, 1 = changed, 255 = not covered), ``report.html``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from changecap.data.files import atomic_write_text
from changecap.errors import ChangeCapError, DataError

TILES_FILE, SETTINGS_FILE, MASKS_DIR = "tiles.jsonl", "scene_run.json", "tile_masks"
GEOJSON_FILE, MASK_FILE, REPORT_FILE = "changes.geojson", "change_mask.tif", "report.html"
STRETCH_FILE = "stretch.json"  # both dates' per-band limits, computed once per run and reused by the report
NOT_COVERED = 255  # change_mask.tif value where no tile was captioned


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
    precision: str = "fp32"  # the captioner's (bf16 tiles may differ from fp32 ones: a run never mixes them)

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
    skipped: str | None = None  # why the tile was not captioned (nodata)
    caption: str | None = None
    change_probability: float | None = None
    changed: bool | None = None
    mask: str | None = None  # file name under tile_masks/


@dataclass
class SceneGrid:
    """The common grid of the two scenes: BEFORE's pixel grid, and where the overlap lies in it."""

    crs: Any
    transform: Any  # BEFORE's affine transform
    width: int
    height: int
    window: tuple[int, int, int, int]  # overlap in BEFORE pixels: row_off, col_off, height, width
    after_offset: tuple[int, int]  # AFTER pixel = BEFORE pixel + offset (row, col); (0, 0) when aligned


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
    rasterio = _rasterio()
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "no such file")
    try:
        return stack.enter_context(rasterio.open(p))
    except rasterio.errors.RasterioIOError as e:
        raise DataError(p, f"cannot read as a raster ({' '.join(str(e).split())})") from None


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


def common_grid(before: Any, after: Any, settings: SceneSettings, stack: ExitStack) -> tuple[SceneGrid, Any]:
    """Check CRS, resolution and overlap (or align AFTER onto BEFORE) → the grid and the AFTER dataset to read."""
    names = f"{settings.before} and {settings.after}"
    if settings.align:
        from rasterio.vrt import WarpedVRT
        from rasterio.warp import Resampling, transform_bounds

        if after.crs is None or before.crs is None:
            raise DataError(None, f"{names}: --align needs both scenes georeferenced (a CRS)")
        # AFTER's footprint in BEFORE's pixels decides the overlap; the VRT then reads AFTER on BEFORE's grid
        left, bottom, right, top = transform_bounds(after.crs, before.crs, *after.bounds)
        cols, rows = zip(*(~before.transform @ (x, y) for x, y in ((left, top), (right, bottom))), strict=True)
        dr, dc = math.floor(min(rows)), math.floor(min(cols))
        span_r, span_c = math.ceil(max(rows)) - dr, math.ceil(max(cols)) - dc
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
    r0, c0 = max(0, dr), max(0, dc)
    r1, c1 = min(before.height, dr + span_r), min(before.width, dc + span_c)
    if r1 <= r0 or c1 <= c0:
        raise DataError(None, f"{names}: the scenes do not overlap")
    return SceneGrid(before.crs, before.transform, before.width, before.height, (r0, c0, r1 - r0, c1 - c0),
                     offset), after  # fmt: skip


def make_tiles(grid: SceneGrid, tile: int, overlap: int) -> list[Tile]:
    """Tiles covering the overlap window, row-major; the last row/column may reach past it (padded on read)."""
    r0, c0, h, w = grid.window
    step = tile - overlap
    rows = max(1, math.ceil((h - overlap) / step)) if h > tile else 1
    cols = max(1, math.ceil((w - overlap) / step)) if w > tile else 1
    return [Tile(i, j, r0 + i * step, c0 + j * step, tile) for i in range(rows) for j in range(cols)]


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


def run_stretch_limits(
    out: Path, settings: SceneSettings, before: Any, after_raw: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Both dates' stretch limits for the run in ``out``: read from its ``stretch.json`` if there, else computed (a
    decimated read of each whole scene) and recorded, so tiles and report use one stretch and read the scenes once."""
    path = out / STRETCH_FILE
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            return np.array(saved["before"], np.float64), np.array(saved["after"], np.float64)
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            pass  # a torn or foreign file: compute again (the limits are a pure function of the scenes)
    limits_b = stretch_limits(before, check_bands(before, settings.bands, settings.before), settings.percentiles)
    limits_a = stretch_limits(after_raw, check_bands(after_raw, settings.bands, settings.after), settings.percentiles)
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


# ---------------------------------------------------------------------------------------------------- results file
def record_settings(out: Path, settings: SceneSettings) -> None:
    """Record the settings, or check that an existing run in ``out`` used the same ones (resume)."""
    path = out / SETTINGS_FILE
    mine = asdict(settings)
    mine["percentiles"] = list(mine["percentiles"])
    if path.is_file():
        try:
            theirs = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(path, f"unreadable ({e}); remove it or use another --out") from None
        theirs.setdefault("precision", "fp32")  # runs recorded before the option existed were fp32
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
def _changed(res: Any, threshold: float) -> bool:
    """A tile's verdict: the model's change probability (≥ 0.5) when it has one, else its mask (a share of changed
    pixels ≥ ``threshold``), else its caption (not one of the datasets' no-change sentences)."""
    from changecap.data.text import is_no_change

    if res.change_probability is not None:
        return bool(res.change_probability >= 0.5)
    if res.mask is not None:
        return bool(res.mask.mean() >= threshold)
    return res.caption is not None and not is_no_change(res.caption)


def caption_tiles(
    captioner: Any,
    settings: SceneSettings,
    out: Path,
    *,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> Iterator[TileResult]:
    """Caption this rank's share of the tiles not done yet, appending each result to its results file."""
    from tqdm import tqdm

    from changecap.inference.evaluate import save_mask_png
    from changecap.inference.predictor import prepare_pair_and_size

    with ExitStack() as stack:
        limited_gdal_cache(stack)
        before = open_scene(settings.before, stack)
        after_raw = open_scene(settings.after, stack)
        bands_b = check_bands(before, settings.bands, settings.before)
        bands_a = check_bands(after_raw, settings.bands, settings.after)
        grid, after = common_grid(before, after_raw, settings, stack)
        limits_b, limits_a = run_stretch_limits(out, settings, before, after_raw)
        tiles = make_tiles(grid, settings.tile, settings.overlap)[rank::world_size]
        done = read_results(out)
        todo = [t for t in tiles if t.key not in done]
        name = "tiles.jsonl" if world_size == 1 else f"tiles.rank{rank}.jsonl"
        bar = tqdm(total=len(tiles), initial=len(tiles) - len(todo), desc="tiles", unit="tile", disable=not progress)
        _drop_torn_tail(out / name)
        with (out / name).open("a", encoding="utf-8") as results_file:
            for start in range(0, len(todo), settings.batch_size):
                batch = todo[start : start + settings.batch_size]
                ready, records = [], []
                for t in batch:
                    raw_b, ok_b = read_tile(before, bands_b, t, (0, 0))
                    raw_a, ok_a = read_tile(after, bands_a, t, grid.after_offset)
                    if not (ok_b.any() and ok_a.any()):
                        records.append(TileResult(t.row, t.col, t.y, t.x, t.size, skipped="nodata"))
                        continue
                    pair, _ = prepare_pair_and_size(to_uint8(raw_b, limits_b), to_uint8(raw_a, limits_a),
                                            captioner.preprocess, ("before tile", "after tile"))  # fmt: skip
                    ready.append((t, pair))
                if ready:
                    import torch

                    outs = captioner.caption_tensor(torch.stack([p for _, p in ready]))
                    for (t, _), res in zip(ready, outs, strict=True):
                        mask_name = None
                        if res.mask is not None:
                            mask_name = f"{t.key}.png"
                            save_mask_png(captioner.mask_at_size(res.mask, (t.size, t.size)),
                                          out / MASKS_DIR / mask_name)  # fmt: skip
                        records.append(TileResult(t.row, t.col, t.y, t.x, t.size, None, res.caption,
                                                  res.change_probability,
                                                  _changed(res, settings.min_changed_fraction), mask_name))  # fmt: skip
                for rec in sorted(records, key=lambda r: (r.row, r.col)):
                    results_file.write(json.dumps(asdict(rec)) + "\n")
                    results_file.flush()
                    yield rec
                bar.update(len(batch))
        bar.close()


def tile_polygons(grid: SceneGrid, tiles: Sequence[TileResult]) -> list[tuple[list[list[float]], list[float]]]:
    """Each tile's corners reprojected to WGS84 (a closed counter-clockwise ring of [lon, lat]) and its bounds in the
    source CRS (minx, miny, maxx, maxy); one reprojection call for all tiles."""
    from rasterio.warp import transform as warp

    t = grid.transform
    all_bounds, xs, ys = [], [], []
    for res in tiles:
        x0, y0 = t @ (res.x, res.y + res.size)  # lower-left corner (north-up grids: minx, miny)
        x1, y1 = t @ (res.x + res.size, res.y)  # upper-right corner
        bounds = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        all_bounds.append(bounds)
        # (minx, miny), (maxx, miny), (maxx, maxy), (minx, maxy): counter-clockwise
        xs += [bounds[0], bounds[2], bounds[2], bounds[0]]
        ys += [bounds[1], bounds[1], bounds[3], bounds[3]]
    lon, lat = warp(grid.crs, "EPSG:4326", xs, ys) if tiles else ([], [])
    out = []
    for i, bounds in enumerate(all_bounds):
        ring = [[float(lon[4 * i + k]), float(lat[4 * i + k])] for k in range(4)]
        out.append(([*ring, ring[0]], bounds))
    return out


def write_outputs(settings: SceneSettings, out: Path, has_masks: bool) -> dict[str, Any]:
    """Build ``changes.geojson``, ``change_mask.tif`` (models with masks) and ``report.html`` from every tile result
    in ``out``; returns counts."""
    with ExitStack() as stack:  # the scenes stay open for the report's images
        limited_gdal_cache(stack)
        before = open_scene(settings.before, stack)
        after_raw = open_scene(settings.after, stack)
        grid, after = common_grid(before, after_raw, settings, stack)
        return _write_outputs(settings, out, has_masks, grid, (before, after, after_raw))


def _write_outputs(
    settings: SceneSettings, out: Path, has_masks: bool, grid: SceneGrid, scenes: tuple[Any, Any, Any]
) -> dict[str, Any]:
    rasterio = _rasterio()
    from changecap.inference.scene_report import write_scene_report

    expected = make_tiles(grid, settings.tile, settings.overlap)
    results = read_results(out)
    missing = [t.key for t in expected if t.key not in results]
    if missing:
        raise ChangeCapError(f"{out}: {len(missing)} tile(s) not captioned yet (first {missing[0]}); run again")
    ordered = [results[t.key] for t in expected]
    captioned = [r for r in ordered if r.skipped is None]
    crs_name = grid.crs.to_string() if grid.crs is not None else None
    features = []
    for res, (ring, bounds) in zip(captioned, tile_polygons(grid, captioned), strict=True):
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"caption": res.caption, "change_probability": res.change_probability,
                           "changed": res.changed, "tile": [res.row, res.col], "bounds_source": bounds},
        })  # fmt: skip
    collection = {
        "type": "FeatureCollection",
        "properties": {
            "crs_source": crs_name,
            "tile": settings.tile,
            "overlap": settings.overlap,
            "skipped_tiles": len(ordered) - len(captioned),
        },
        "features": features,
    }
    atomic_write_text(out / GEOJSON_FILE, json.dumps(collection))
    if has_masks:
        _write_mask_tif(grid, captioned, out, rasterio)
    changed = [r for r in captioned if r.changed]
    # the most probable first (row-major without probabilities); at most REPORT_TILES thumbnails, so the page's
    # size does not grow with the scene (changes.geojson lists them all)
    changed.sort(key=lambda r: (-(r.change_probability or 0.0), r.row, r.col))
    limits = run_stretch_limits(out, settings, scenes[0], scenes[2])
    overviews, thumbnails = _report_images(settings, grid, changed[:REPORT_TILES], limits, *scenes)
    write_scene_report(settings, crs_name, ordered, overviews, thumbnails, out / REPORT_FILE)
    return {"tiles": len(ordered), "captioned": len(captioned), "skipped": len(ordered) - len(captioned),
            "changed": sum(bool(r.changed) for r in captioned)}  # fmt: skip


OVERVIEW_SIDE = 640  # longest side of a scene's overview in the report, in screen pixels
REPORT_TILES = 200  # changed tiles shown with thumbnails in the report


def _report_images(
    settings: SceneSettings,
    grid: SceneGrid,
    changed: list[TileResult],
    limits: tuple[np.ndarray, np.ndarray],
    before: Any,
    after: Any,
    after_raw: Any,
) -> tuple[list[tuple[str, np.ndarray, float]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Both scenes' overviews on BEFORE's grid (decimated reads) and the changed tiles' RGB, in ``changed``'s order,
    for the report (``after`` is what the tiles read: the aligned VRT or AFTER itself; ``limits`` the run's
    stretch of before and after)."""
    scale = min(1.0, OVERVIEW_SIDE / max(grid.height, grid.width))
    out_h, out_w = max(1, round(grid.height * scale)), max(1, round(grid.width * scale))
    overviews, thumbnails, dates = [], {}, []
    for label, path, ds, limit_ds, date_limits in (("before", settings.before, before, before, limits[0]),
                                                   ("after", settings.after, after, after_raw, limits[1])):  # fmt: skip
        bands = check_bands(limit_ds, settings.bands, path)
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


def _write_mask_tif(grid: SceneGrid, captioned: list[TileResult], out: Path, rasterio: Any) -> None:
    """Tile masks into one GeoTIFF on BEFORE's grid, written window by window (overlaps: changed if any tile says
    so); pixels no tile covered are ``NOT_COVERED``."""
    from PIL import Image
    from rasterio.windows import Window

    path = out / MASK_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    profile = {"driver": "GTiff", "dtype": "uint8", "count": 1, "crs": grid.crs, "transform": grid.transform,
               "width": grid.width, "height": grid.height, "nodata": NOT_COVERED, "compress": "deflate",
               "tiled": True, "blockxsize": 256, "blockysize": 256}  # fmt: skip
    with rasterio.open(tmp, "w", **profile) as dst:
        for r0 in range(0, grid.height, 256):  # every block starts as "not covered"
            for c0 in range(0, grid.width, 256):
                h, w = min(256, grid.height - r0), min(256, grid.width - c0)
                dst.write(np.full((1, h, w), NOT_COVERED, np.uint8), window=Window(c0, r0, w, h))
    with rasterio.open(tmp, "r+") as dst:
        for res in captioned:
            if res.mask is None:
                continue
            tile = (np.asarray(Image.open(out / MASKS_DIR / res.mask)) > 0).astype(np.uint8)  # [T, T]
            # the part of the tile inside the raster
            h, w = min(res.size, grid.height - res.y), min(res.size, grid.width - res.x)
            window = Window(res.x, res.y, w, h)
            current = dst.read(1, window=window)
            merged = np.where(current == NOT_COVERED, tile[:h, :w], np.maximum(current, tile[:h, :w]))
            dst.write(merged[None], window=window)
    tmp.replace(path)
