"""``changecap.data.importer``: the user's pairs and captions → a LEVIR-CC-layout dataset that the readers accept."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from changecap.data.annotations import parse_annotations
from changecap.data.check import check_dataset
from changecap.data.datasets import open_dataset
from changecap.data.files import is_temp_name
from changecap.data.image_io import read_mask, read_rgb
from changecap.data.importer import (
    IMPORT_RECORD,
    TILES_INDEX,
    ImportRejected,
    assign_splits,
    import_dataset,
    parse_split_ratios,
    tile_windows,
)
from changecap.errors import ChangeCapError, DataError
from tests.data.fakes import bomb_png, class_map_png
from tests.data.test_files import dead_pid

CHANGED = ("A house is built on the left.", "a new building appears", "a house has been constructed")
UNCHANGED = ("the scene is the same as before", "there is no difference", "no change has occurred")


def make_pairs(folder: Path, n: int, size: int = 16, suffix: str = ".png", seed: int = 0) -> Path:
    """``folder/A`` and ``folder/B`` with ``n`` noise pairs ``p00``, ``p01``, …; even pairs change."""
    rng = np.random.default_rng(seed)
    for side in ("A", "B"):
        (folder / side).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        before = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        after = before.copy()
        if i % 2 == 0:
            after[: size // 2, : size // 2] = 255
        Image.fromarray(before).save(folder / "A" / f"p{i:02d}{suffix}")
        Image.fromarray(after).save(folder / "B" / f"p{i:02d}{suffix}")
    return folder


def caption_rows(n: int, split: Sequence[str] | None = None) -> list[list[str]]:
    rows = []
    for i in range(n):
        for caption in CHANGED if i % 2 == 0 else UNCHANGED:
            rows.append([f"p{i:02d}", caption, *([split[i]] if split else [])])
    return rows


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_masks(folder: Path, n: int, size: int = 16, values: tuple[int, int] = (0, 255)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mask = np.full((size, size), values[0], np.uint8)
        if i % 2 == 0:
            mask[: size // 2, : size // 2] = values[1]
        Image.fromarray(mask).save(folder / f"p{i:02d}.png")
    return folder


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    return make_pairs(tmp_path / "pairs", 10)


@pytest.fixture
def sheet(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "captions.csv", ["name", "caption"], caption_rows(10))


def test_import_gives_a_levir_cc_dataset_the_readers_accept(tmp_path: Path, pairs: Path, sheet: Path) -> None:
    report = import_dataset(pairs, sheet, tmp_path / "out")
    assert report.format == "levir-cc" and report.pairs == 10 and report.splits == {"train": 7, "val": 1, "test": 2}
    assert report.flags_from_sheet == 0 and sum(report.changed.values()) == 5
    checked = check_dataset(tmp_path / "out", "levir-cc", deep=True, progress=False)
    assert checked.pairs == 10 and checked.image_sizes == {"16x16": 10}
    records = {r.name: r for r in parse_annotations(tmp_path / "out", "levir-cc")}
    assert set(records) == {f"p{i:02d}.png" for i in range(10)}
    r0 = records["p00.png"]
    assert (r0.changed, r0.changed_from) == (True, "json")  # written as changeflag, derived from the captions
    assert r0.captions[0] == "A house is built on the left"  # kept as written, tokenised by the reader
    assert not records["p01.png"].changed
    assert np.array_equal(read_rgb(r0.before_path), read_rgb(pairs / "A" / "p00.png"))  # type: ignore[arg-type]
    ds = open_dataset(tmp_path / "out", "levir-cc", "train")
    assert len(ds) == 7 and ds[0]["image"].shape == (2, 3, 16, 16)
    record = json.loads((tmp_path / "out" / IMPORT_RECORD).read_text())
    assert record["splits"] == report.splits and record["skipped"] == []


def test_round_trip_trains_two_steps(tmp_path: Path, pairs: Path, sheet: Path) -> None:
    from changecap.engine import TrainConfig, train
    from changecap.engine.objectives.hisem import HisemObjective
    from tests.engine.toy import toy_builder, toy_saver

    out = tmp_path / "out"
    import_dataset(pairs, sheet, out, masks=write_masks(tmp_path / "masks", 10), split_ratios=(0.6, 0.2, 0.2))
    check_dataset(out, "levir-mci", progress=False)
    config = TrainConfig.from_dict(
        {
            "data": {"root": str(out), "format": "levir-mci", "image_size": 16, "vocab": {"threshold": 0}},
            "model": {"dim": 16},
            "loss": {"router_warmup_epochs": 0, "gt_routing_until_epoch": 0},
            "train": {"epochs": 1, "batch_size": 2, "max_steps": 2, "val_every": 0, "output_dir": str(tmp_path / "r")},
            "logging": {"progress": False},
        },
        check_model=False,
    )
    result = train(config, objective=HisemObjective, model_builder=toy_builder(), model_saver=toy_saver)
    assert result.global_step == 2


def test_hard_links_copies_and_conversions(tmp_path: Path, pairs: Path, sheet: Path) -> None:
    import_dataset(pairs, sheet, tmp_path / "linked", seed=1)
    src, dst = pairs / "A" / "p03.png", next((tmp_path / "linked" / "images").rglob("A/p03.png"))
    assert src.stat().st_ino == dst.stat().st_ino  # same file system: one file, two names
    report = import_dataset(pairs, sheet, tmp_path / "copied", seed=1, link=False)
    assert (report.linked, report.copied) == (0, 20)
    assert src.stat().st_ino != next((tmp_path / "copied" / "images").rglob("A/p03.png")).stat().st_ino
    jpegs = make_pairs(tmp_path / "jpegs", 10, suffix=".jpg")
    report = import_dataset(jpegs, sheet, tmp_path / "converted")
    assert report.converted == 20 and not list((tmp_path / "converted").rglob("*.jpg"))
    check_dataset(tmp_path / "converted", "levir-cc", deep=True, progress=False)


def test_masks_are_kept_or_made_levir_mci_values(tmp_path: Path, pairs: Path, sheet: Path) -> None:
    import_dataset(pairs, sheet, tmp_path / "out", masks=write_masks(tmp_path / "m255", 10))
    import_dataset(pairs, sheet, tmp_path / "bin", masks=write_masks(tmp_path / "m01", 10, values=(0, 1)))
    for root in (tmp_path / "out", tmp_path / "bin"):
        check_dataset(root, "levir-mci", deep=True, progress=False)
        rec = next(r for r in parse_annotations(root, "levir-mci") if r.name == "p00.png")
        assert rec.mask_path is not None
        assert read_mask(rec.mask_path)[0, 0] == 2 and read_mask(rec.mask_path)[-1, -1] == 0  # 255 (or 1): class 2


def test_masks_turn_with_exif_and_respect_the_pixel_bound(tmp_path: Path, pairs: Path, sheet: Path) -> None:
    masks = write_masks(tmp_path / "masks", 10, values=(0, 1))
    stored = np.zeros((16, 16), np.uint8)
    stored[:4, :] = 1  # a band along the stored top edge
    class_map_png(masks / "p00.png", stored, orientation=6)
    good = (masks / "p01.png").read_bytes()
    bomb_png(masks / "p01.png")
    problems = _rejected(tmp_path, pairs, sheet, masks=masks)
    assert any(str(masks / "p01.png") in p and "30000×30000" in p for p in problems), problems
    (masks / "p01.png").write_bytes(good)
    import_dataset(pairs, sheet, tmp_path / "out", masks=masks, split_ratios="1,0,0")
    label = read_mask(tmp_path / "out" / "images" / "train" / "label" / "p00.png")
    np.testing.assert_array_equal(label, np.rot90(stored, -1) * 2)  # 0 / 1 stored as 0 / 255, upright


def test_split_is_deterministic_and_independent_of_row_order(tmp_path: Path, pairs: Path) -> None:
    rows = caption_rows(10)
    a = write_csv(tmp_path / "a.csv", ["name", "caption"], rows)
    b = write_csv(tmp_path / "b.csv", ["name", "caption"], rows[::-1])

    def splits(out: str, sheet: Path, seed: int) -> dict[str, str]:
        import_dataset(pairs, sheet, tmp_path / out, seed=seed)
        return {r.name: r.split for r in parse_annotations(tmp_path / out, "levir-cc")}

    first = splits("a", a, 3)
    assert splits("b", b, 3) == first  # same pairs and seed, rows in another order: same split
    assert splits("c", a, 4) != first
    names = [f"n{i}" for i in range(101)]
    assert assign_splits(names, (0.7, 0.1, 0.2), 0) == assign_splits(names[::-1], (0.7, 0.1, 0.2), 0)
    counts = list(assign_splits(names, (0.7, 0.1, 0.2), 0).values())
    assert (counts.count("train"), counts.count("val"), counts.count("test")) == (71, 10, 20)  # largest remainder


def test_split_and_changed_columns_are_respected(tmp_path: Path, pairs: Path) -> None:
    split = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    rows = [[*r, "1" if r[0] == "p01" else ""] for r in caption_rows(10, split)]
    sheet = write_csv(tmp_path / "s.csv", ["name", "caption", "split", "changed"], rows)
    report = import_dataset(pairs, sheet, tmp_path / "out")
    assert report.splits == {"train": 6, "val": 2, "test": 2} and report.flags_from_sheet == 1
    recs = {r.name: r for r in parse_annotations(tmp_path / "out", "levir-cc")}
    assert recs["p07.png"].split == "val" and recs["p01.png"].changed  # the sheet's flag wins over the captions
    with pytest.raises(ChangeCapError, match="--split-ratios conflicts with the split column"):
        import_dataset(pairs, sheet, tmp_path / "other", split_ratios="0.5,0.25,0.25")


def test_jsonl_captions_and_a_pairs_csv(tmp_path: Path, pairs: Path) -> None:
    lines = [json.dumps({"name": f"scene{i}.png", "captions": list(CHANGED if i % 2 == 0 else UNCHANGED),
                         "split": "train" if i < 8 else "test", "changed": i % 2 == 0}) for i in range(10)]  # fmt: skip
    (tmp_path / "caps.jsonl").write_text("\n".join(lines) + "\n")
    rows = [[f"scene{i}", f"pairs/A/p{i:02d}.png", f"pairs/B/p{i:02d}.png"] for i in range(10)]
    pairs_csv = write_csv(tmp_path / "pairs.csv", ["name", "before", "after"], rows)
    report = import_dataset(pairs_csv, tmp_path / "caps.jsonl", tmp_path / "out")
    assert report.splits == {"train": 8, "test": 2} and report.flags_from_sheet == 10
    names = sorted(r.name for r in parse_annotations(tmp_path / "out", "levir-cc"))
    assert names == [f"scene{i}.png" for i in range(10)]


def _rejected(tmp_path: Path, pairs: Path, sheet: Path, **kwargs: object) -> list[str]:
    with pytest.raises(ImportRejected) as info:
        import_dataset(pairs, sheet, tmp_path / "out", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists() and _temporaries(tmp_path) == []  # nothing written
    assert all("\n" not in line for line in info.value.problems)
    return info.value.problems


def test_every_bad_row_is_one_line_naming_file_row_and_field(tmp_path: Path, pairs: Path) -> None:
    rows = caption_rows(10)
    rows[4] = ["p01", " . "]  # empty after tokenisation
    rows.append(["p99", "a caption of no pair"])
    rows.append(["sub/p03.png", "a name with a folder"])
    rows.append(["p02", "x", "extra"])
    sheet = write_csv(tmp_path / "caps.csv", ["name", "caption"], rows)
    (pairs / "B" / "p05.png").unlink()  # missing after image
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(pairs / "B" / "p06.png")  # sizes differ
    problems = _rejected(tmp_path, pairs, sheet)
    assert any(p.startswith(f"{sheet} [row 6, caption]: caption is empty") for p in problems), problems
    assert any(p.startswith(f"{sheet} [row 32, name]: caption for an unknown pair 'p99'") for p in problems)
    assert any(p.startswith(f"{sheet} [row 33, name]: caption for an unknown pair 'sub/p03'") for p in problems)
    assert any(str(pairs / "A" / "p05.png") in p and "no after image B/p05.png" in p for p in problems)
    assert any(str(pairs / "B" / "p06.png") in p and "size 16×8 differs" in p for p in problems)
    assert len(problems) == 5


def test_duplicate_names_and_missing_files_in_a_pairs_csv(tmp_path: Path, pairs: Path, sheet: Path) -> None:
    rows = [[f"p{i:02d}", f"pairs/A/p{i:02d}.png", f"pairs/B/p{i:02d}.png"] for i in range(10)]
    rows[3] = ["p02", "pairs/A/p03.png", "pairs/B/p03.png"]  # name used twice
    rows[7][1] = "pairs/A/absent.png"
    pairs_csv = write_csv(tmp_path / "pairs.csv", ["name", "before", "after"], rows)
    problems = _rejected(tmp_path, pairs_csv, sheet)
    assert any(p.startswith(f"{pairs_csv} [row 5, name]: duplicate pair name 'p02' (first in row 4)") for p in problems)
    assert any(p.startswith(f"{pairs_csv} [row 9, before]: file not found") for p in problems)
    assert sum("caption for an unknown pair 'p03'" in p for p in problems) == 3  # its row was the duplicate


def test_jsonl_problems_name_the_line_and_field(tmp_path: Path, pairs: Path) -> None:
    lines = [json.dumps({"name": f"p{i:02d}", "captions": ["a house is built"]}) for i in range(10)]
    lines[2] = json.dumps({"name": "p02", "captions": ["ok", ""]})
    lines[3] = json.dumps({"name": "p02", "captions": ["again"]})
    lines[4] = "{not json"
    lines[5] = json.dumps({"name": "p05", "captions": ["x"], "split": "training"})
    (tmp_path / "c.jsonl").write_text("\n".join(lines))
    problems = _rejected(tmp_path, pairs, tmp_path / "c.jsonl")
    sheet = tmp_path / "c.jsonl"
    assert any(p.startswith(f"{sheet} [line 3, captions[1]]: caption is empty") for p in problems)
    assert any(p.startswith(f"{sheet} [line 4, name]: duplicate pair name 'p02'") for p in problems)
    assert any(p.startswith(f"{sheet} [line 5]: not valid JSON") for p in problems)
    assert any(p.startswith(f"{sheet} [line 6, split]: unknown split 'training'") for p in problems)


def test_bad_masks(tmp_path: Path, pairs: Path, sheet: Path) -> None:
    masks = write_masks(tmp_path / "masks", 10)
    bad = np.zeros((16, 16), np.uint8)
    bad[0, 0] = 7
    Image.fromarray(bad).save(masks / "p01.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(masks / "p02.png")
    (masks / "p03.png").unlink()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(masks / "stray.png")
    problems = _rejected(tmp_path, pairs, sheet, masks=masks)
    assert any(str(masks / "p01.png") in p and "invalid mask value(s) 7" in p for p in problems), problems
    assert any(str(masks / "p02.png") in p and "mask size 4×4 differs" in p for p in problems)
    assert any(str(masks / "p03.png") in p and "no mask for pair 'p03'" in p for p in problems)
    assert any(str(masks / "stray.png") in p and "mask of no pair" in p for p in problems)


def test_skip_bad_imports_the_rest_and_lists_what_it_left_out(tmp_path: Path, pairs: Path) -> None:
    rows = caption_rows(10)
    rows.append(["p99", "unknown"])
    sheet = write_csv(tmp_path / "caps.csv", ["name", "caption"], rows)
    (pairs / "A" / "p04.png").write_text("not an image")
    (pairs / "A" / "._p05.png").write_text("a file system's metadata, not a pair")
    report = import_dataset(pairs, sheet, tmp_path / "out", skip_bad=True)
    assert report.pairs == 9 and len(report.skipped) == 2
    assert "p04.png" not in {r.name for r in parse_annotations(tmp_path / "out", "levir-cc")}
    assert json.loads((tmp_path / "out" / IMPORT_RECORD).read_text())["skipped"] == report.skipped


@pytest.mark.parametrize(
    ("ratios", "message"),
    [("0.7,0.3", "three numbers"), ("0.7,0.2,0.2", "sum to 1"), ("a,b,c", "three numbers like"),
     ("1.2,-0.1,-0.1", ">= 0"), ("0,0.5,0.5", "train ratio")],
)  # fmt: skip
def test_bad_ratios(ratios: str, message: str) -> None:
    with pytest.raises(ChangeCapError, match=message):
        parse_split_ratios(ratios)


def test_output_is_atomic_and_never_overwrites(tmp_path: Path, pairs: Path, sheet: Path, monkeypatch) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="is not empty"):
        import_dataset(pairs, sheet, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    assert import_dataset(pairs, sheet, tmp_path / "empty").pairs == 10  # an empty folder is fine

    from changecap.data import importer

    calls = []

    def failing_place(self: object, src: Path, dst: Path) -> None:
        calls.append(dst)
        if len(calls) == 5:
            raise OSError("disk full")
        dst.write_bytes(src.read_bytes())

    monkeypatch.setattr(importer._Writer, "place", failing_place)
    with pytest.raises(DataError, match=r"new: cannot write the folder \(disk full\)"):
        import_dataset(pairs, sheet, tmp_path / "new")
    assert not (tmp_path / "new").exists() and _temporaries(tmp_path) == []


def _temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if is_temp_name(p.name)]


def test_output_checks_come_first_and_inputs_keep_their_modes(
    tmp_path: Path, pairs: Path, sheet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match=r"f \[--out\]: is a file"):
        import_dataset(tmp_path / "no-pairs", sheet, tmp_path / "f")  # before the (missing) pairs are looked at
    with pytest.raises(DataError, match=r"\[--out\]: cannot create the folder: .*f is a file"):
        import_dataset(pairs, sheet, tmp_path / "f" / "out")
    stale = tmp_path / f".out.{dead_pid()}.k1ll3d.tmp"  # a killed import's temporary folder
    (stale / "images").mkdir(parents=True)
    source = pairs / "A" / "p00.png"
    source.chmod(0o444)
    report = import_dataset(pairs, sheet, tmp_path / "out")
    assert report.linked == 20 and source.stat().st_mode & 0o777 == 0o444  # a linked input's mode is the user's
    assert _temporaries(tmp_path) == [] and (tmp_path / "out" / "LevirCCcaptions.json").is_file()


def test_tile_windows() -> None:
    assert tile_windows(70, 100, 32) == [
        (0, 0, (0, 0, 32, 32)), (0, 1, (32, 0, 32, 32), ), (0, 2, (64, 0, 32, 32)),
        (1, 0, (0, 32, 32, 32)), (1, 1, (32, 32, 32, 32)), (1, 2, (64, 32, 32, 32)),
    ]  # fmt: skip
    assert tile_windows(31, 100, 32) == []


def test_geotiff_pair_is_cut_into_tiles_with_their_bounds(tmp_path: Path) -> None:
    pytest.importorskip("rasterio")
    from changecap.synth.geotiff import ORIGIN, PIXEL, write_geotiff_pair

    before, after, truth = write_geotiff_pair(tmp_path / "scene", grid=2, size=40)  # 80 × 80 px
    pairs_csv = write_csv(tmp_path / "pairs.csv", ["before", "after"], [[str(before), str(after)]])
    masks = tmp_path / "masks"
    masks.mkdir()
    truth.rename(masks / "before.tif")  # masks are named like the pair (here: its before file's name)
    rows = [["r0_c0", "a house is built", "train"], ["r0_c1", "the scene is the same as before", "train"],
            ["r1_c1.png", "some trees are removed", "test"]]  # fmt: skip
    sheet = write_csv(tmp_path / "tiles.csv", ["name", "caption", "split"], rows)
    report = import_dataset(pairs_csv, sheet, tmp_path / "out", tile=32, masks=masks)
    assert report.splits == {"train": 2, "test": 1} and report.tiles_without_captions == 1  # r1_c0 not captioned
    check_dataset(tmp_path / "out", "levir-mci", deep=True, progress=False)
    index = json.loads((tmp_path / "out" / TILES_INDEX).read_text())
    assert index["tile"] == 32 and [t["name"] for t in index["tiles"]] == ["r0_c0.png", "r0_c1.png", "r1_c1.png"]
    t = index["tiles"][2]
    assert t["window"] == [32, 32, 32, 32] and t["crs"] == "EPSG:32633"
    x0, y0 = ORIGIN[0] + 32 * PIXEL, ORIGIN[1] - 64 * PIXEL
    assert t["bounds"] == pytest.approx([x0, y0, x0 + 32 * PIXEL, y0 + 32 * PIXEL])
    whole = read_rgb(before)
    assert np.array_equal(read_rgb(tmp_path / "out/images/test/A/r1_c1.png"), whole[32:64, 32:64])


def test_tiling_refuses_rasters_on_different_grids(tmp_path: Path) -> None:
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    from changecap.synth.geotiff import CRS, ORIGIN, PIXEL, write_geotiff_pair

    before, after, _ = write_geotiff_pair(tmp_path / "scene", grid=1, size=64)
    pixels = read_rgb(after).transpose(2, 0, 1)  # [3, H, W]
    shifted = from_origin(ORIGIN[0] + 10, ORIGIN[1], PIXEL, PIXEL)
    with rasterio.open(after, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs=CRS,
                       transform=shifted) as ds:  # fmt: skip
        ds.write(pixels)
    pairs_csv = write_csv(tmp_path / "pairs.csv", ["before", "after"], [[str(before), str(after)]])
    sheet = write_csv(tmp_path / "c.csv", ["name", "caption"], [["r0_c0", "a road is built"]])
    problems = _rejected(tmp_path, pairs_csv, sheet, tile=32)
    assert len(problems) == 1 and problems[0].startswith(f"{after}: its grid (CRS, origin or pixel size) differs")
