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
    crs: str = UTM,
    origin: tuple[float, float] = ORIGIN,
    res: float = 10.0,
    count: int = 3,
    dtype: str = "uint8",
    nodata: float | None = None,
    blank: tuple[slice, slice] | None = None,
) -> Path:
    rng = np.random.default_rng(seed)
    hi = 255 if dtype == "uint8" else 4000
    data = rng.integers(1, hi, (count, height, width)).astype(dtype)
    if blank is not None:
        data[:, blank[0], blank[1]] = nodata if nodata is not None else 0
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
        xs, ys = [minx, minx + 320, minx + 320, minx], [maxy - 320, maxy - 320, maxy, maxy]
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
    assert len(fc["features"]) == 4 and all(f["properties"]["change_probability"] is None for f in fc["features"])


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
    assert "(5 in this run)" in capsys.readouterr().out  # 12 tiles, 7 done
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
    assert run_scene(before, after, model_dir, killed) == 0
    assert (killed / "changes.geojson").read_text() == (full / "changes.geojson").read_text()


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
