"""Readers of single-date scene captions and land-cover maps: records in file order, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from changecap.data.single_date import (
    SCENE_CAPTIONS_FILE,
    SingleDateRecord,
    load_scene_captions,
    read_landcover,
    read_landcover_classes,
    read_synthcc_single_dates,
)
from changecap.errors import ConfigError, DataError
from tests.data.fakes import bomb_png, class_map_png

CLASSES = ["bare land", "grass", "trees"]


def _make_set(root: Path, pairs: dict[str, int] | None = None, size: int = 8) -> Path:
    """A tiny set in the single-date layout: every pair's A and B image, land-cover maps, scene_captions.json."""
    pairs = pairs or {"train": 2, "val": 1}
    images = []
    rng = np.random.default_rng(0)
    for split, n in pairs.items():
        for k in range(1, n + 1):
            name = f"{split}_{k:06d}.png"
            for date in ("A", "B"):
                for sub, arr in (
                    (date, rng.integers(0, 256, (size, size, 3), dtype=np.uint8)),
                    (f"landcover/{date}", rng.integers(0, len(CLASSES), (size, size), dtype=np.uint8)),
                ):
                    path = root / "images" / split / sub / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(arr).save(path)
                images.append(
                    {"filename": name, "split": split, "date": date, "sentences": [f"{split} {k} {date}", "trees"]}
                )
    doc = {"format": "synthcc-scene-captions", "version": 1, "landcover_classes": CLASSES, "images": images}
    (root / SCENE_CAPTIONS_FILE).write_text(json.dumps(doc))
    return root


def _edit(root: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = root / SCENE_CAPTIONS_FILE
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def test_records_of_one_split_in_file_order(tmp_path: Path) -> None:
    root = _make_set(tmp_path)
    train = read_synthcc_single_dates(root, "train")
    assert [(r.image_path.name, r.date) for r in train] == [
        ("train_000001.png", "A"),
        ("train_000001.png", "B"),
        ("train_000002.png", "A"),
        ("train_000002.png", "B"),
    ]
    r = train[1]
    assert r == SingleDateRecord(
        root / "images/train/B/train_000001.png",
        "train",
        "B",
        ("train 1 B", "trees"),
        root / "images/train/landcover/B/train_000001.png",
    )
    assert [r.split for r in read_synthcc_single_dates(root, "val")] == ["val", "val"]
    assert read_synthcc_single_dates(root, "test") == []
    assert read_landcover_classes(root) == tuple(CLASSES)
    doc, every = load_scene_captions(root)
    assert len(every) == 6 and doc["landcover_classes"] == CLASSES


def test_read_landcover_checks_mode_size_and_values(tmp_path: Path) -> None:
    root = _make_set(tmp_path)
    rec = read_synthcc_single_dates(root, "train")[0]
    lc = read_landcover(rec.landcover_path, len(CLASSES), size=(8, 8))
    assert lc.dtype == np.uint8 and lc.shape == (8, 8) and int(lc.max()) < len(CLASSES)
    np.testing.assert_array_equal(lc, np.asarray(Image.open(rec.landcover_path)))
    with pytest.raises(DataError, match=r"value 2 is not a land-cover class \(expected 0 to 1\)"):
        read_landcover(rec.landcover_path, 2)
    with pytest.raises(DataError, match="8x8 px, its image 9x8 px"):
        read_landcover(rec.landcover_path, len(CLASSES), size=(9, 8))
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(rgb)
    with pytest.raises(DataError, match="single-channel 8-bit image, got mode RGB"):
        read_landcover(rgb, 3)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    with pytest.raises(DataError, match="not a readable image"):
        read_landcover(junk, 3)
    with pytest.raises(DataError, match="land-cover map not found"):
        read_landcover(tmp_path / "missing.png", 3)


def test_read_landcover_turns_with_exif_and_respects_the_pixel_bound(tmp_path: Path) -> None:
    ids = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)  # [2, 3]
    path = class_map_png(tmp_path / "lc.png", ids, orientation=8)
    np.testing.assert_array_equal(read_landcover(path, 3, size=(3, 2)), np.rot90(ids, 1))  # upright, ids exact
    with pytest.raises(DataError, match=r"bomb\.png: image is 30000×30000 pixels"):
        read_landcover(bomb_png(tmp_path / "bomb.png"), 3)


def _drop_key(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.pop(key)


def _set_record(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["images"][1].__setitem__(field, value)


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (_drop_key("format"), ["[format]", "synthcc-scene-captions"]),
        (lambda d: d.__setitem__("version", 2), ["[version]", "unsupported version 2"]),
        (lambda d: d.__setitem__("version", True), ["[version]"]),
        (lambda d: d.__setitem__("landcover_classes", []), ["[landcover_classes]"]),
        (lambda d: d.__setitem__("landcover_classes", ["a", "a"]), ["[landcover_classes]", "distinct"]),
        (lambda d: d.__setitem__("landcover_classes", ["a", 3]), ["[landcover_classes]"]),
        (_drop_key("images"), ["[images]"]),
        (lambda d: d["images"].__setitem__(1, "x"), ["[images[1]]", "expected an object"]),
        (_set_record("filename", "../x.png"), ["[images[1].filename]"]),
        (_set_record("filename", 7), ["[images[1].filename]"]),
        (_set_record("split", "dev"), ["[images[1].split]", "'dev'"]),
        (_set_record("date", "C"), ["[images[1].date]", "'C'"]),
        (_set_record("sentences", []), ["[images[1].sentences]"]),
        (_set_record("sentences", ["ok", " "]), ["[images[1].sentences[1]]"]),
        (lambda d: d["images"][1].update(date="A"), ["[images[1]]", "duplicate record (first at images[0])"]),
    ],
)
def test_malformed_scene_captions_raise_one_line_data_errors(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], needles: list[str]
) -> None:
    root = _make_set(tmp_path)
    _edit(root, edit)
    with pytest.raises(DataError) as e:
        read_synthcc_single_dates(root, "train")
    msg = str(e.value)
    assert "\n" not in msg and SCENE_CAPTIONS_FILE in msg
    for needle in needles:
        assert needle in msg, msg


def test_missing_broken_or_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="scene_captions.json: not found"):
        read_synthcc_single_dates(tmp_path, "train")
    (tmp_path / SCENE_CAPTIONS_FILE).write_text("{broken")
    with pytest.raises(DataError, match=r"not valid JSON \(line 1"):
        read_synthcc_single_dates(tmp_path, "train")
    (tmp_path / SCENE_CAPTIONS_FILE).write_text("[]")
    with pytest.raises(DataError, match="expected a JSON object, got list"):
        read_landcover_classes(tmp_path)


def test_listed_files_must_exist_and_split_must_be_known(tmp_path: Path) -> None:
    root = _make_set(tmp_path)
    (root / "images/train/landcover/B/train_000002.png").unlink()
    with pytest.raises(DataError, match=r"land-cover map not found \(listed in scene_captions.json images\[3\]\)"):
        read_synthcc_single_dates(root, "train")
    assert len(read_synthcc_single_dates(root, "train", check_files=False)) == 4
    assert len(read_synthcc_single_dates(root, "val")) == 2  # other splits are still readable
    (root / "images/val/A/val_000001.png").unlink()
    with pytest.raises(DataError, match=r"val_000001.png: image not found"):
        read_synthcc_single_dates(root, "val")
    with pytest.raises(ConfigError, match="split"):
        read_synthcc_single_dates(root, "validation")


def test_skipping_other_splits_reads_nothing_of_them(tmp_path: Path) -> None:
    root = _make_set(tmp_path)
    validated = read_synthcc_single_dates(root, "train")

    def break_val(doc: dict[str, Any]) -> None:
        for rec in doc["images"]:
            if rec["split"] == "val":
                rec.update(sentences=None, date="C", filename="../x")  # malformed, but never looked at

    _edit(root, break_val)
    assert read_synthcc_single_dates(root, "train", other_splits="skip") == validated
    with pytest.raises(DataError, match=r"images\[4\]"):
        read_synthcc_single_dates(root, "train")  # validating every record finds them
    _edit(root, lambda doc: doc["images"].append({**doc["images"][0]}))
    with pytest.raises(DataError, match="duplicate record"):
        read_synthcc_single_dates(root, "train", other_splits="skip")
