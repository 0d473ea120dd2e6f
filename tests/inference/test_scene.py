"""``changecap scene`` on GeoTIFFs the tests make (UTM 33N, 10 m pixels, a known transform): outputs and their
georeferencing, grid checks and --align, nodata tiles, 16-bit multi-band input, resume, sharding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio", reason="changecap scene needs the 'geo' extra (rasterio)")
from rasterio.transform import from_origin  # noqa: E402
from rasterio.warp import transform as warp  # noqa: E402

from changecap.cli.main import main  # noqa: E402
from changecap.inference import ChangeCaptioner  # noqa: E402
from changecap.inference.scene import (  # noqa: E402
    SceneSettings,
    caption_tiles,
    read_results,
    record_settings,
    write_outputs,
)

UTM = "EPSG:32633"
ORIGIN = (500_000.0, 4_100_000.0)


def write_scene(
    path: Path,
    seed: int,
    height: int = 80,
    width: int = 100,
    *,
    crs: str | None = UTM,
    origin: tuple[float, float] = ORIGIN,
    res: float = 10.0,
    count: int = 3,
    dtype: str = "uint8",
    nodata: float | None = None,
    blank: tuple[slice, slice] | list[tuple[slice, slice]] | None = None,
) -> Path:
    rng = np.random.default_rng(seed)
    hi = 255 if dtype == "uint8" else 4000
    data = rng.integers(1, hi, (count, height, width)).astype(dtype)
    for rows, cols in [blank] if isinstance(blank, tuple) else blank or []:
        data[:, rows, cols] = nodata if nodata is not None else 0
    profile = {"driver": "GTiff", "height": height, "width": width, "count": count, "dtype": dtype, "crs": crs,
               "transform": from_origin(*origin, res, res), "nodata": nodata}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def run_scene(before: Path, after: Path, model: Path, out: Path, *extra: str) -> int:
    argv = ["scene", str(before), str(after), "--model", str(model), "--out", str(out), "--device", "cpu"]
    return main([*argv, "--no-progress", *extra])


@pytest.fixture
def scenes(tmp_path: Path) -> tuple[Path, Path]:
    return write_scene(tmp_path / "before.tif", 1), write_scene(tmp_path / "after.tif", 2)


def test_geojson_tiles_reprojected_to_wgs84(scenes: tuple[Path, Path], model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_scene(*scenes, model_dir, out) == 0  # the model's pair size (32 px) → 3 × 4 tiles over 80 × 100
    fc = json.loads((out / "changes.geojson").read_text())
    assert fc["type"] == "FeatureCollection" and fc["properties"]["crs_source"] == UTM
    assert len(fc["features"]) == 12
    captioner = ChangeCaptioner.from_pretrained(model_dir, device="cpu")
    for feature in fc["features"]:
        row, col = feature["properties"]["tile"]
        minx, maxy = ORIGIN[0] + 320 * col, ORIGIN[1] - 320 * row  # 32 px × 10 m
        assert feature["properties"]["bounds_source"] == pytest.approx([minx, maxy - 320, minx + 320, maxy])
        # the polygon: the tile cut to the scene (100 × 80 px = 1000 × 800 m)
        maxx, miny = min(minx + 320, ORIGIN[0] + 1000), max(maxy - 320, ORIGIN[1] - 800)
        xs, ys = [minx, maxx, maxx, minx], [miny, miny, maxy, maxy]
        lon, lat = warp(UTM, "EPSG:4326", xs, ys)
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) == 5
        assert np.allclose(ring[:4], np.stack([lon, lat], 1), atol=1e-9)
        assert 14.9 < ring[0][0] < 15.1 and 37.0 < ring[0][1] < 37.1  # UTM 33N, near its central meridian
        props = feature["properties"]
        assert props["changed"] == (props["change_probability"] >= 0.5) and isinstance(props["caption"], str)
    # a tile's caption is the model's caption of that tile
    with rasterio.open(scenes[0]) as b, rasterio.open(scenes[1]) as a:
        win = rasterio.windows.Window(32, 0, 32, 32)
        one = captioner(b.read(window=win).transpose(1, 2, 0), a.read(window=win).transpose(1, 2, 0))
    tile01 = next(f for f in fc["features"] if f["properties"]["tile"] == [0, 1])
    assert tile01["properties"]["caption"] == one.caption
    assert not (out / "change_mask.tif").exists()  # HiSem predicts no mask
    page = (out / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "Settings" in page


def test_mask_geotiff_keeps_crs_and_transform(scenes: tuple[Path, Path], scc_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_scene(*scenes, scc_dir, out, "--overlap", "8") == 0  # 64 px tiles stepping 56
    with rasterio.open(out / "change_mask.tif") as m, rasterio.open(scenes[0]) as b:
        assert m.crs == b.crs and m.transform == b.transform and (m.height, m.width) == (b.height, b.width)
        values = m.read(1)
    assert set(np.unique(values)) <= {0, 1} | {255} and (values != 255).all()  # every pixel covered
    fc = json.loads((out / "changes.geojson").read_text())
    assert len(fc["features"]) == 4 and all("change_probability" not in f["properties"] for f in fc["features"])
    assert fc["properties"]["fields"] == ["caption", "changed", "tile", "bounds_source"]


def test_nodata_tiles_are_skipped_and_counted(tmp_path: Path, model_dir: Path) -> None:
    before = write_scene(tmp_path / "b.tif", 1, nodata=0, blank=(slice(0, 32), slice(0, 64)))
    after = write_scene(tmp_path / "a.tif", 2)
    out = tmp_path / "out"
    assert run_scene(before, after, model_dir, out) == 0
    fc = json.loads((out / "changes.geojson").read_text())
    assert fc["properties"]["skipped_tiles"] == 2
    assert {tuple(f["properties"]["tile"]) for f in fc["features"]}.isdisjoint({(0, 0), (0, 1)})


def test_uint16_four_band_input_with_bands(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    before = write_scene(tmp_path / "b.tif", 1, count=4, dtype="uint16")
    after = write_scene(tmp_path / "a.tif", 2, count=4, dtype="uint16")
    assert run_scene(before, after, model_dir, tmp_path / "out", "--bands", "3,2,1") == 0
    single = write_scene(tmp_path / "s.tif", 3, count=1)
    assert run_scene(single, single, model_dir, tmp_path / "out1") == 2
    err = capsys.readouterr().err.strip()
    assert "s.tif" in err and "1 band(s); choose three with --bands" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("after_kwargs", "message"),
    [
        ({"crs": "EPSG:32632"}, "different CRS"),
        ({"res": 20.0}, "different resolutions"),
        ({"origin": (600_000.0, 4_100_000.0)}, "do not overlap"),
        ({"origin": (500_005.0, 4_100_000.0)}, "fraction of a pixel"),
    ],
)
def test_grid_mismatches_are_one_line_errors(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture, after_kwargs: dict, message: str
) -> None:
    before = write_scene(tmp_path / "b.tif", 1)
    after = write_scene(tmp_path / "a.tif", 2, **after_kwargs)
    assert run_scene(before, after, model_dir, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "b.tif" in err and "a.tif" in err and len(err.splitlines()) == 1


def test_align_resamples_after_onto_before(tmp_path: Path, model_dir: Path) -> None:
    before = write_scene(tmp_path / "b.tif", 1)
    after = write_scene(tmp_path / "a.tif", 2, height=40, width=50, res=20.0)  # same footprint, half resolution
    out = tmp_path / "out"
    assert run_scene(before, after, model_dir, out, "--align") == 0
    assert len(json.loads((out / "changes.geojson").read_text())["features"]) == 12


def test_an_offset_after_scene_overlaps_part_of_before(tmp_path: Path, model_dir: Path) -> None:
    before = write_scene(tmp_path / "b.tif", 1)
    after = write_scene(tmp_path / "a.tif", 2, origin=(ORIGIN[0] + 400.0, ORIGIN[1]))  # 40 px to the east
    out = tmp_path / "out"
    assert run_scene(before, after, model_dir, out) == 0
    fc = json.loads((out / "changes.geojson").read_text())
    assert {f["properties"]["bounds_source"][0] for f in fc["features"]} == {ORIGIN[0] + 400.0, ORIGIN[0] + 720.0}


def test_resume_after_a_kill_gives_the_same_outputs(scenes: tuple[Path, Path], model_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    full = tmp_path / "full"
    assert run_scene(*scenes, model_dir, full, "--batch-size", "5") == 0
    # a run killed after 7 tiles, mid-way through writing the 8th line
    part = tmp_path / "part"
    part.mkdir()
    (part / "scene_run.json").write_text((full / "scene_run.json").read_text())
    lines = (full / "tiles.jsonl").read_text().splitlines()
    (part / "tiles.jsonl").write_text("\n".join(lines[:7]) + "\n" + lines[7][:20])
    capsys.readouterr()
    assert run_scene(*scenes, model_dir, part, "--batch-size", "5") == 0
    assert "12 tiles (7 done by an earlier run, 5 in this one): 12 captioned, 0 skipped;" in capsys.readouterr().out
    assert (part / "changes.geojson").read_text() == (full / "changes.geojson").read_text()
    # other settings in the same folder are refused rather than mixed
    assert run_scene(*scenes, model_dir, part, "--overlap", "4") == 2


def test_shards_cover_every_tile_once(scenes: tuple[Path, Path], model_dir: Path, tmp_path: Path) -> None:
    captioner = ChangeCaptioner.from_pretrained(model_dir, device="cpu")
    settings = SceneSettings(str(scenes[0]), str(scenes[1]), str(model_dir), 32)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    for out in (single, sharded):
        out.mkdir()
        record_settings(out, settings)
    list(caption_tiles(captioner, settings, single, progress=False))
    for rank in (0, 1):  # what torchrun's two ranks do, one after the other
        list(caption_tiles(captioner, settings, sharded, rank=rank, world_size=2, progress=False))
    assert sorted(p.name for p in sharded.glob("tiles*.jsonl")) == ["tiles.rank0.jsonl", "tiles.rank1.jsonl"]
    assert read_results(sharded) == read_results(single)
    write_outputs(settings, single, False)
    write_outputs(settings, sharded, False)
    assert (single / "changes.geojson").read_text() == (sharded / "changes.geojson").read_text()


def test_unreadable_file_is_one_line(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    good = write_scene(tmp_path / "g.tif", 1)
    assert run_scene(bad, good, model_dir, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert "bad.tif" in err and len(err.splitlines()) == 1


def test_the_changed_verdict_uses_probability_then_mask_then_caption() -> None:
    from changecap.inference.predictor import CaptionResult
    from changecap.inference.scene import _changed

    assert _changed(CaptionResult("the scene is the same as before", 0.7, []), 0.001) is True
    mask = np.zeros((10, 10), np.uint8)
    assert _changed(CaptionResult("a road is built", None, [], mask), 0.001) is False  # the mask decides
    mask[0, 0] = 1
    assert _changed(CaptionResult("the scene is the same as before", None, [], mask), 0.001) is True
    assert _changed(CaptionResult("there is no difference", None, []), 0.001) is False
    assert _changed(CaptionResult("a road is built", None, []), 0.001) is True


REPO = Path(__file__).resolve().parents[2]


def _cli_env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]), "OMP_NUM_THREADS": "1"}


def test_a_killed_run_resumes_to_the_same_outputs(tmp_path: Path, model_dir: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    before = write_scene(tmp_path / "b.tif", 1, 160, 160)
    after = write_scene(tmp_path / "a.tif", 2, 160, 160)  # 5 × 5 tiles of 32 px
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert run_scene(before, after, model_dir, full) == 0
    cmd = [sys.executable, "-m", "changecap.cli.main", "scene", str(before), str(after), "--model", str(model_dir),
           "--out", str(killed), "--device", "cpu", "--batch-size", "1", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=_cli_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = killed / "tiles.jsonl"
    deadline = time.monotonic() + 120
    while not (results.is_file() and len(results.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(read_results(killed))
    assert 3 <= done_before < 25 and not (killed / "changes.geojson").exists()
    # what a kill mid-write leaves: temporaries named after the killed process; the rerun removes them
    stale = [killed / f".changes.geojson.{proc.pid}.k2j4x.tmp", killed / f".scene_run.json.{proc.pid}.q9.tmp",
             killed / "tile_masks" / f".0_0.png.{proc.pid}.a8c1.tmp"]  # fmt: skip
    (killed / "tile_masks").mkdir()
    for path in stale:
        path.write_text("partial")
    assert run_scene(before, after, model_dir, killed) == 0
    assert (killed / "changes.geojson").read_text() == (full / "changes.geojson").read_text()
    assert not any(path.exists() for path in stale)


def test_sigterm_ends_the_run_cleanly_and_it_resumes(tmp_path: Path, scc_dir: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    before = write_scene(tmp_path / "b.tif", 1, 192, 192)
    after = write_scene(tmp_path / "a.tif", 2, 192, 192)  # 3 × 3 tiles of 64 px
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    assert run_scene(before, after, scc_dir, full) == 0
    cmd = [sys.executable, "-m", "changecap.cli.main", "scene", str(before), str(after), "--model", str(scc_dir),
           "--out", str(stopped), "--device", "cpu", "--batch-size", "1", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=_cli_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = stopped / "tiles.jsonl"
    deadline = time.monotonic() + 120
    while not (results.is_file() and len(results.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be stopped"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert f"terminated; the finished tiles are kept in {results}" in err and "Traceback" not in err
    assert _temporaries(stopped) == []
    assert run_scene(before, after, scc_dir, stopped) == 0
    assert (stopped / "changes.geojson").read_text() == (full / "changes.geojson").read_text()


def test_torchrun_shards_the_tiles_between_two_processes(tmp_path: Path, model_dir: Path) -> None:
    import socket
    import subprocess
    import sys

    before, after = write_scene(tmp_path / "b.tif", 1), write_scene(tmp_path / "a.tif", 2)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert run_scene(before, after, model_dir, single) == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "changecap.cli.main", "scene",
           str(before), str(after), "--model", str(model_dir), "--out", str(sharded), "--device", "cpu",
           "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, env=_cli_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in sharded.glob("tiles*.jsonl")) == ["tiles.rank0.jsonl", "tiles.rank1.jsonl"]
    assert (sharded / "changes.geojson").read_text() == (single / "changes.geojson").read_text()


def test_the_report_shows_at_most_report_tiles_thumbnails(
    scenes: tuple[Path, Path], model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import changecap.inference.scene as scene_module

    monkeypatch.setattr(scene_module, "REPORT_TILES", 2)
    out = tmp_path / "out"
    assert run_scene(*scenes, model_dir, out) == 0
    changed = sum(f["properties"]["changed"] for f in json.loads((out / "changes.geojson").read_text())["features"])
    page = (out / "report.html").read_text()
    if changed > 2:
        assert f"The 2 most probable of the {changed} changed tiles" in page
    assert page.count('alt="before"') == min(changed, 2)


def test_a_run_never_mixes_precisions_and_old_runs_count_as_fp32(tmp_path: Path) -> None:
    from changecap.errors import DataError
    from changecap.inference.scene import SETTINGS_FILE

    settings = SceneSettings("a.tif", "b.tif", "model", 32)
    record_settings(tmp_path, settings)
    recorded = json.loads((tmp_path / SETTINGS_FILE).read_text())
    assert recorded["precision"] == "fp32"
    del recorded["precision"]  # a run recorded before the option existed
    (tmp_path / SETTINGS_FILE).write_text(json.dumps(recorded))
    record_settings(tmp_path, settings)  # resumes: it was fp32
    bf16 = SceneSettings("a.tif", "b.tif", "model", 32, precision="bf16")
    with pytest.raises(DataError, match="used precision='fp32', not 'bf16'"):
        record_settings(tmp_path, bf16)


def test_each_dates_stretch_is_computed_once_and_recorded(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import changecap.inference.scene as scene

    before = write_scene(tmp_path / "b.tif", 1, dtype="uint16")
    after = write_scene(tmp_path / "a.tif", 2, dtype="uint16")
    calls: list[str] = []
    real = scene.stretch_limits

    def counting(ds, bands, percentiles, max_side=1024):  # type: ignore[no-untyped-def]
        calls.append(Path(ds.name).name)
        return real(ds, bands, percentiles, max_side)

    monkeypatch.setattr(scene, "stretch_limits", counting)
    assert run_scene(before, after, model_dir, tmp_path / "out") == 0
    assert sorted(calls) == ["a.tif", "b.tif"]  # tiles and report share one stretch per date
    recorded = json.loads((tmp_path / "out" / scene.STRETCH_FILE).read_text())
    with rasterio.open(before) as ds:
        expected = real(ds, [1, 2, 3], (2.0, 98.0))
    np.testing.assert_allclose(recorded["before"], expected)
    (tmp_path / "out" / scene.STRETCH_FILE).write_text("{torn")  # a damaged record is recomputed, not trusted
    recorded_settings = json.loads((tmp_path / "out" / "scene_run.json").read_text())
    recorded_settings["percentiles"] = tuple(recorded_settings["percentiles"])
    write_outputs(SceneSettings(**recorded_settings), tmp_path / "out", has_masks=False)
    assert len(calls) == 4 and json.loads((tmp_path / "out" / scene.STRETCH_FILE).read_text()) == recorded


# ---------------------------------------------------------------------------------------------------- geometry
def _rings_in(fc: dict, crs: str) -> list[list[tuple[float, float]]]:
    """The features' rings (open) reprojected from WGS84 back to ``crs``."""
    rings = []
    for f in fc["features"]:
        ring = f["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1]
        xs, ys = warp("EPSG:4326", crs, [p[0] for p in ring[:-1]], [p[1] for p in ring[:-1]])
        rings.append(list(zip(xs, ys, strict=True)))
    return rings


def _ring_area(ring: list[tuple[float, float]]) -> float:
    return 0.5 * sum(p[0] * q[1] - q[0] * p[1] for p, q in zip(ring, [*ring[1:], ring[0]], strict=True))


def _union_area(boxes: list[tuple[float, float, float, float]]) -> float:
    """Area of the union of axis-aligned boxes (minx, miny, maxx, maxy), exact by coordinate compression."""
    xs = sorted({b[0] for b in boxes} | {b[2] for b in boxes})
    ys = sorted({b[1] for b in boxes} | {b[3] for b in boxes})
    area = 0.0
    for x0, x1 in zip(xs, xs[1:], strict=False):
        for y0, y1 in zip(ys, ys[1:], strict=False):
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            if any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in boxes):
                area += (x1 - x0) * (y1 - y0)
    return area


def _boxes(rings: list[list[tuple[float, float]]]) -> list[tuple[float, float, float, float]]:
    """Each ring's bounds, checking that it is a rectangle (its area is its bounds' area)."""
    boxes = []
    for ring in rings:
        x, y = [p[0] for p in ring], [p[1] for p in ring]
        box = (min(x), min(y), max(x), max(y))
        assert _ring_area(ring) == pytest.approx((box[2] - box[0]) * (box[3] - box[1]), abs=1e-3)  # CCW too
        boxes.append(box)
    return boxes


@pytest.mark.parametrize("overlap", [0, 8])
def test_tile_polygons_cover_the_scene_and_no_more(tmp_path: Path, model_dir: Path, overlap: int) -> None:
    before = write_scene(tmp_path / "b.tif", 1, 70, 90)  # 70 × 90 px: no multiple of the 32 px tile
    after = write_scene(tmp_path / "a.tif", 2, 70, 90)
    out = tmp_path / "out"
    assert run_scene(before, after, model_dir, out, "--overlap", str(overlap)) == 0
    fc = json.loads((out / "changes.geojson").read_text())
    boxes = _boxes(_rings_in(fc, UTM))
    scene = (ORIGIN[0], ORIGIN[1] - 700, ORIGIN[0] + 900, ORIGIN[1])  # 10 m pixels
    for box in boxes:
        assert scene[0] - 1e-6 <= box[0] and box[2] <= scene[2] + 1e-6
        assert scene[1] - 1e-6 <= box[1] and box[3] <= scene[3] + 1e-6
    assert abs(_union_area(boxes) - 900 * 700) < 100  # one pixel's area
    # bounds_source keeps each tile's whole window, which reaches past the scene's edges
    windows = [tuple(f["properties"]["bounds_source"]) for f in fc["features"]]
    assert _union_area(windows) > 900 * 700 + 100


def test_aligned_tile_polygons_cover_the_overlap_of_the_dates(tmp_path: Path, model_dir: Path) -> None:
    before = write_scene(tmp_path / "b.tif", 1)  # 1000 × 800 m
    # 20 m pixels, shifted by a fraction of BEFORE's pixels: x 500215..501015, y 4099095..4099895
    after = write_scene(tmp_path / "a.tif", 2, 40, 40, origin=(ORIGIN[0] + 215, ORIGIN[1] - 105), res=20.0)
    out = tmp_path / "out"
    assert run_scene(before, after, model_dir, out, "--align") == 0
    fc = json.loads((out / "changes.geojson").read_text())
    boxes = _boxes(_rings_in(fc, UTM))
    overlap = (ORIGIN[0] + 215, ORIGIN[1] - 800, ORIGIN[0] + 1000, ORIGIN[1] - 105)
    assert all(overlap[0] - 1e-6 <= b[0] and b[3] <= overlap[3] + 1e-6 for b in boxes)
    assert abs(_union_area(boxes) - (785 * 695)) < 100


def test_a_run_refused_for_its_crs_can_be_retried_with_align(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    before = write_scene(tmp_path / "b.tif", 1)
    (x,), (y,) = warp(UTM, "EPSG:32632", [ORIGIN[0]], [ORIGIN[1]])  # the same ground in the next UTM zone
    after = write_scene(tmp_path / "a.tif", 2, crs="EPSG:32632", origin=(x, y))
    out = tmp_path / "out"
    assert run_scene(before, after, model_dir, out) == 2
    assert "use --align" in capsys.readouterr().err and not (out / "scene_run.json").exists()
    assert run_scene(before, after, model_dir, out, "--align") == 0
    assert json.loads((out / "scene_run.json").read_text())["align"] is True
    fc = json.loads((out / "changes.geojson").read_text())
    # AFTER's grid is turned by the zones' convergence: its polygons are cut to BEFORE's scene, not rectangles
    rings = _rings_in(fc, UTM)
    assert all(ORIGIN[0] - 1e-6 <= p[0] <= ORIGIN[0] + 1000 + 1e-6 for ring in rings for p in ring)
    assert all(ORIGIN[1] - 800 - 1e-6 <= p[1] <= ORIGIN[1] + 1e-6 for ring in rings for p in ring)
    assert 0.8 * 1000 * 800 < sum(_ring_area(r) for r in rings) < 1000 * 800


def test_clip_ring_cuts_any_polygon_to_a_box() -> None:
    from changecap.inference.scene import clip_ring

    triangle = [(0.0, 0.0), (4.0, 0.0), (0.0, 4.0)]
    assert clip_ring(triangle, (0, 0, 2, 2)) == [(0.0, 0.0), (2.0, 0.0), (2.0, 2.0), (0.0, 2.0)]
    assert clip_ring(triangle, (1, 1, 3, 3)) == [(1.0, 1.0), (3.0, 1.0), (1.0, 3.0)]
    assert clip_ring(triangle, (3, 3, 5, 5)) == []
    clockwise = [(0.0, 0.0), (0.0, 1.0), (0.5, 1.0), (1.0, 1.0), (1.0, 0.0)]  # with a vertex on an edge
    assert clip_ring(clockwise, (-1, -1, 2, 2)) == [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]


# ---------------------------------------------------------------------------------------------------- nodata
def test_partly_nodata_tiles_are_masked_skipped_and_counted(
    tmp_path: Path, scc_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    """128² px, four 64 px tiles; AFTER has no data on all of tile (0, 0), 75 % of (0, 1) and 25 % of (1, 0)."""
    before = write_scene(tmp_path / "b.tif", 1, 128, 128)
    blank = [(slice(0, 64), slice(0, 64)), (slice(0, 48), slice(64, 128)), (slice(64, 80), slice(0, 64))]
    after = write_scene(tmp_path / "a.tif", 2, 128, 128, nodata=0, blank=blank)
    out = tmp_path / "out"
    assert run_scene(before, after, scc_dir, out) == 0
    line = capsys.readouterr().out
    assert "4 tiles (0 done by an earlier run, 4 in this one): 2 captioned, 2 skipped (1 below --min-valid 0.5, " \
        "1 without data in a date);" in line  # fmt: skip
    results = read_results(out)
    assert (results["0_0"].skipped, results["0_1"].skipped, results["1_0"].skipped) == ("nodata", "min_valid", None)
    assert results["0_1"].valid == [1.0, 0.25] and results["1_0"].valid == [1.0, 0.75]
    fc = json.loads((out / "changes.geojson").read_text())
    assert fc["properties"]["skipped_tiles"] == 2
    assert fc["properties"]["skipped_by_reason"] == {"min_valid": 1, "nodata": 1}
    # the model saw the missing part blank in both dates, so it cannot read as a change
    with rasterio.open(before) as b, rasterio.open(after) as a:
        win = rasterio.windows.Window(0, 64, 64, 64)
        tile_b, tile_a = b.read(window=win).transpose(1, 2, 0), a.read(window=win).transpose(1, 2, 0)
    tile_b[:16] = 0
    one = ChangeCaptioner.from_pretrained(scc_dir, device="cpu")(tile_b, tile_a)
    tile10 = next(f for f in fc["features"] if f["properties"]["tile"] == [1, 0])
    assert tile10["properties"]["caption"] == one.caption
    with rasterio.open(out / "change_mask.tif") as m:
        assert m.nodata == 255
        values = m.read(1)
    assert (values[:80, :64] == 255).all() and (values[:64] == 255).all()  # skipped or without data
    assert set(np.unique(values[80:, :64])) <= {0, 1} and set(np.unique(values[64:, 64:])) <= {0, 1}
    # a stricter threshold skips the 75 % tile too
    assert run_scene(before, after, scc_dir, tmp_path / "strict", "--min-valid", "0.8") == 0
    fc = json.loads((tmp_path / "strict" / "changes.geojson").read_text())
    assert fc["properties"]["skipped_by_reason"] == {"min_valid": 2, "nodata": 1}


def test_runs_recorded_before_min_valid_resume_with_min_valid_0(tmp_path: Path) -> None:
    from changecap.errors import DataError

    record_settings(tmp_path, SceneSettings("a.tif", "b.tif", "model", 32))
    recorded = json.loads((tmp_path / "scene_run.json").read_text())
    del recorded["min_valid"]  # such runs skipped only tiles without data
    (tmp_path / "scene_run.json").write_text(json.dumps(recorded))
    record_settings(tmp_path, SceneSettings("a.tif", "b.tif", "model", 32, min_valid=0.0))
    with pytest.raises(DataError, match="used min_valid=0.0, not 0.5"):
        record_settings(tmp_path, SceneSettings("a.tif", "b.tif", "model", 32))


# ---------------------------------------------------------------------------------------------------- one schema
SCHEMA = {"caption": str, "change_probability": float, "changed": bool, "tile": list, "bounds_source": list}
PREDICTS = {  # fixture → the properties its model gives
    "model_dir": {"caption", "change_probability"},  # HiSem
    "plain_model_dir": {"caption"},
    "scc_dir": {"caption"},  # Semantic-CC: a mask too, no probability
    "cd_dir": set(),  # the change detector: masks only
    "dfm_dir": {"caption"},
}


@pytest.mark.parametrize("model", list(PREDICTS))
def test_one_geojson_schema_for_every_model(
    scenes: tuple[Path, Path], tmp_path: Path, request: pytest.FixtureRequest, model: str
) -> None:
    out = tmp_path / "out"
    assert run_scene(*scenes, request.getfixturevalue(model), out) == 0
    fc = json.loads((out / "changes.geojson").read_text())
    fields = [k for k in SCHEMA if k in PREDICTS[model] | {"changed", "tile", "bounds_source"}]
    assert fc["properties"]["fields"] == fields and fc["features"]
    for feature in fc["features"]:
        props = feature["properties"]
        assert list(props) == fields  # no null for what the model does not predict: the key is left out
        assert all(type(props[k]) is SCHEMA[k] for k in fields)
        assert all(type(v) is int for v in props["tile"]) and all(type(v) is float for v in props["bounds_source"])
    page = (out / "report.html").read_text()
    assert "<td>n/a</td>" not in page
    if "class='tiles'" in page:  # the table of changed tiles: a column for each thing the model predicts
        assert ("<th>P(change)</th>" in page) == ("change_probability" in fields)
        assert ("<th>caption</th>" in page) == ("caption" in fields)


# ---------------------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("which", ["before", "after"])
def test_a_scene_without_crs_is_a_one_line_error_naming_it(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture, which: str
) -> None:
    paths = {name: write_scene(tmp_path / f"{name}.tif", 1, crs=None if name == which else UTM)
             for name in ("before", "after")}  # fmt: skip
    for extra in ([], ["--align"]):
        assert run_scene(paths["before"], paths["after"], model_dir, tmp_path / "out", *extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {paths[which]}: has no CRS") and "gdal_edit.py -a_srs" in err
        assert len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "scene_run.json").exists()


def test_a_tile_larger_than_the_scene_is_refused_and_the_default_shrinks(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    before, after = write_scene(tmp_path / "b.tif", 1, 20, 24), write_scene(tmp_path / "a.tif", 2, 20, 24)
    assert run_scene(before, after, model_dir, tmp_path / "big", "--tile", "50000") == 2  # no 30 GB of tile arrays
    err = capsys.readouterr().err.strip()
    assert "--tile 50000 is larger than the overlap" in err and "(20 × 24 px); use --tile 24 or less" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "big" / "scene_run.json").exists()
    out = tmp_path / "default"
    assert run_scene(before, after, model_dir, out) == 0  # the model's 32 px shrink to the scene's 24
    assert json.loads((out / "scene_run.json").read_text())["tile"] == 24
    assert len(json.loads((out / "changes.geojson").read_text())["features"]) == 1


# ---------------------------------------------------------------------------------------------------- the output folder
def _taken_by_a_file(tmp: Path) -> Path:
    (tmp / "taken").write_text("x")
    return tmp / "taken"


def _under_a_file(tmp: Path) -> Path:
    (tmp / "file").write_text("x")
    return tmp / "file" / "out"


def _output_is_a_folder(tmp: Path) -> Path:
    (tmp / "out" / "changes.geojson").mkdir(parents=True)
    return tmp / "out"


def _masks_is_a_file(tmp: Path) -> Path:
    (tmp / "out").mkdir()
    (tmp / "out" / "tile_masks").write_text("x")
    return tmp / "out"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_taken_by_a_file, "taken [--out]: is a file; a folder is required"),
        (_under_a_file, "out [--out]: cannot create the folder: "),
        (_output_is_a_folder, "changes.geojson: is a folder where the run writes a file"),
        (_masks_is_a_file, "tile_masks: is a file where the run keeps its tile masks"),
    ],
)
def test_an_unusable_out_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture, make: object, message: str
) -> None:
    before, after = write_scene(tmp_path / "b.tif", 1), write_scene(tmp_path / "a.tif", 2)
    out = make(tmp_path)  # type: ignore[operator]
    assert run_scene(before, after, tmp_path / "no-model", out) == 2  # refused before the model is loaded
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(("read_only", "message"), [(True, "read-only file system"), (False, "no permission")])
def test_an_unwritable_out_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, read_only: bool, message: str
) -> None:
    import os

    from changecap.data import files

    before, after = write_scene(tmp_path / "b.tif", 1), write_scene(tmp_path / "a.tif", 2)
    # as on a read-only mount or in a folder not ours (the tests may run as root, whom permissions do not stop)
    monkeypatch.setattr(files.os, "access", lambda path, mode: not mode & os.W_OK)
    monkeypatch.setattr(files, "_read_only_fs", lambda folder: read_only)
    assert run_scene(before, after, tmp_path / "no-model", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert "out [--out]: " in err and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root writes whatever the permissions")  # fmt: skip
def test_a_folder_without_write_permission_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    out.mkdir(mode=0o500)
    before, after = write_scene(tmp_path / "b.tif", 1), write_scene(tmp_path / "a.tif", 2)
    try:
        assert run_scene(before, after, tmp_path / "no-model", out) == 2
    finally:
        out.chmod(0o700)
    assert f"{out} [--out]: no permission to write in the folder {out}" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- temporaries
def _temporaries(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob(".*"))


def test_outputs_have_normal_permissions_and_planted_links_are_never_followed(
    scenes: tuple[Path, Path], scc_dir: Path, tmp_path: Path
) -> None:
    import os

    out = tmp_path / "out"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    # symbolic links at names a writer could predict beside the outputs (temporaries are created exclusively instead)
    planted = [out / folder / f".{name}{tail}" for folder, name in (("", "change_mask.tif"), ("", "changes.geojson"),
               ("tile_masks", "0_0.png")) for tail in (".tmp", f".{os.getpid()}.tmp")]  # fmt: skip
    (out / "tile_masks").mkdir(parents=True)
    for link in planted:
        link.symlink_to(victim)
    assert run_scene(*scenes, scc_dir, out) == 0
    assert victim.read_text() == "precious"
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("changes.geojson", "change_mask.tif", "report.html", "scene_run.json", "tile_masks/0_0.png"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert _temporaries(out) == sorted(link.name for link in planted)  # the links, left alone


def test_an_interrupted_outputs_step_leaves_no_temporary(
    scenes: tuple[Path, Path], scc_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    from changecap.data import image_io

    def ctrl_c(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "out"
    with monkeypatch.context() as m:
        m.setattr(image_io, "read_mask", ctrl_c)  # Ctrl-C while change_mask.tif is being written (its tiles read)
        assert run_scene(*scenes, scc_dir, out) == 130
    assert f"interrupted; the finished tiles are kept in {out / 'tiles.jsonl'}" in capsys.readouterr().err
    assert _temporaries(out) == [] and not (out / "change_mask.tif").exists()
    assert run_scene(*scenes, scc_dir, out) == 0 and (out / "change_mask.tif").is_file()


def test_each_part_of_tile_captioning_works_alone(tmp_path: Path) -> None:
    """Raster reads, stretching, preparing, the model step and the results file, each called on its own."""
    from contextlib import ExitStack

    from PIL import Image

    from changecap.inference import scene
    from changecap.inference.predictor import CaptionResult
    from changecap.models.preprocess import PreprocessConfig

    before = write_scene(tmp_path / "b.tif", 1, 64, 64, dtype="uint16")
    after = write_scene(tmp_path / "a.tif", 2, 64, 64, dtype="uint16", nodata=0, blank=(slice(0, 16), slice(0, 32)))
    settings = SceneSettings(str(before), str(after), "model", tile=32)
    out = tmp_path / "out"
    out.mkdir()
    pre = PreprocessConfig(image_size=16, resize_mode="resize")
    with ExitStack() as stack:
        run = scene.open_run(settings, out, stack)  # the one opening: inputs, recorded stretch, tiles
        assert [(t.row, t.col) for t in run.tiles] == [(0, 0), (0, 1), (1, 0), (1, 1)]
        assert (out / scene.STRETCH_FILE).is_file()
        tile = run.tiles[0]
        raw_b, ok_b, raw_a, ok_a = scene.read_tile_pair(run.inputs, tile)
        assert raw_b.shape == raw_a.shape == (3, 32, 32) and raw_b.dtype == np.uint16
        assert ok_b.all() and not ok_a[:16].any() and ok_a[16:].all()
        assert scene.valid_shares(tile, (ok_b, ok_a), run.inputs.grid.window) == [1.0, 0.5]
        rgb_b, rgb_a = scene.stretched_pair(raw_b, raw_a, ok_b & ok_a, run.limits)
        assert rgb_b.dtype == rgb_a.dtype == np.uint8 and rgb_b.shape == (32, 32, 3)
        assert not rgb_b[:16].any() and not rgb_a[:16].any() and rgb_b[16:].any()  # blank in both dates there
        ready = scene.prepare_tile(run, tile, 0.5, pre)
        assert isinstance(ready, scene.TileInput) and tuple(ready.pair.shape) == (2, 3, 16, 16)
        assert ready.shares == [1.0, 0.5] and ready.valid.sum() == 32 * 16
        skipped = scene.prepare_tile(run, tile, 0.6, pre)
        assert isinstance(skipped, scene.TileResult) and skipped.skipped == "min_valid"

    class Stub:
        """What the model step needs of a captioner: one result per pair, masks at the model's resolution."""

        mask_at_size = staticmethod(ChangeCaptioner.mask_at_size)

        def caption_tensor(self, pairs: object) -> list[CaptionResult]:
            return [CaptionResult("a road is built", None, [], np.ones((16, 16), np.uint8))]

    (out / scene.MASKS_DIR).mkdir()
    (captioned,) = scene.caption_ready(Stub(), [ready], out, threshold=0.001)
    assert (captioned.caption, captioned.changed, captioned.mask) == ("a road is built", True, "0_0.png")
    assert Image.open(out / scene.MASKS_DIR / "0_0.png").size == (32, 32)  # at the tile's size
    other = scene.TileResult(0, 1, 0, 32, 32, skipped="nodata", valid=[1.0, 0.0])
    with scene.results_path(out).open("a", encoding="utf-8") as f:
        written = list(scene.append_results(f, [other, captioned]))
    assert [(r.row, r.col) for r in written] == [(0, 0), (0, 1)]  # row-major
    assert sorted(read_results(out)) == ["0_0", "0_1"] and scene.results_path(out, 1, 2).name == "tiles.rank1.jsonl"
