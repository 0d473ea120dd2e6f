"""The generated folder: LEVIR-CC/MCI layout and fields, determinism, masks, nuisance, change balance."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from changecap.data.text import NO_CHANGE_SENTENCES, tokenize
from changecap.errors import DataError
from changecap.synth import generate, generate_synthcc, split_sizes


def _load(root: Path, rec: dict[str, Any], sub: str) -> np.ndarray:
    return np.asarray(Image.open(root / "images" / rec["filepath"] / sub / rec["filename"]))


def test_annotation_fields_are_exactly_levir_cc(tiny_records: list[dict[str, Any]]) -> None:
    sentid = 0
    for imgid, rec in enumerate(tiny_records):
        assert set(rec) == {"filepath", "filename", "imgid", "split", "changeflag", "sentids", "sentences"}
        assert rec["imgid"] == imgid and rec["filepath"] == rec["split"] in ("train", "val", "test")
        assert re.fullmatch(rf"{rec['split']}_\d{{6}}\.png", rec["filename"])
        assert rec["changeflag"] in (0, 1) and isinstance(rec["changeflag"], int)
        assert rec["sentids"] == list(range(sentid, sentid + 5))
        assert len(rec["sentences"]) == 5
        for s, sid in zip(rec["sentences"], rec["sentids"]):
            assert set(s) == {"tokens", "raw", "imgid", "sentid"}
            assert s["imgid"] == imgid and s["sentid"] == sid
            assert s["raw"].startswith(" ") and s["raw"].endswith(" .") and s["raw"] == s["raw"].lower()
            assert s["tokens"] == tokenize(s["raw"]) and all(isinstance(t, str) for t in s["tokens"])
        sentid += 5


def test_splits_and_file_numbering(tiny_records: list[dict[str, Any]]) -> None:
    by_split: dict[str, list[str]] = {}
    for rec in tiny_records:
        by_split.setdefault(rec["split"], []).append(rec["filename"])
    assert {k: len(v) for k, v in by_split.items()} == split_sizes(60)
    for split, names in by_split.items():
        assert names == [f"{split}_{i:06d}.png" for i in range(1, len(names) + 1)]


def test_images_and_masks_have_the_levir_mci_format(tiny_set: Path, tiny_records: list[dict[str, Any]]) -> None:
    for rec in tiny_records:
        a, b, m = (_load(tiny_set, rec, sub) for sub in ("A", "B", "label"))
        assert a.shape == b.shape == m.shape == (64, 64, 3) and a.dtype == np.uint8
        assert set(np.unique(m).tolist()) <= {0, 128, 255}
        assert (m[..., 0] == m[..., 1]).all() and (m[..., 0] == m[..., 2]).all()


def test_about_half_of_each_split_is_changed(tiny_records: list[dict[str, Any]]) -> None:
    for split, n in split_sizes(60).items():
        changed = sum(r["changeflag"] for r in tiny_records if r["split"] == split)
        assert changed == n // 2


def test_captions_mask_and_meta_agree(
    tiny_set: Path, tiny_records: list[dict[str, Any]], tiny_meta: dict[str, Any]
) -> None:
    items = tiny_meta["items"]
    assert [it["filename"] for it in items] == [r["filename"] for r in tiny_records]
    for rec, it in zip(tiny_records, items):
        caps = [" ".join(s["tokens"]) for s in rec["sentences"]]
        mask = _load(tiny_set, rec, "label")[..., 0]
        types = {e["type"] for e in it["events"]}
        assert it["changed"] == bool(rec["changeflag"]) == bool(it["events"])
        if not rec["changeflag"]:
            assert caps == list(NO_CHANGE_SENTENCES)
            assert not mask.any()
            continue
        assert not set(caps) & set(NO_CHANGE_SENTENCES)
        # LEVIR-MCI classes: building change 255, road change 128, nothing else marked
        assert bool((mask == 255).any()) == ("building" in types), (rec["filename"], it["events"])
        assert bool((mask == 128).any()) == ("road" in types), (rec["filename"], it["events"])
        assert it["mask_pixels"] == {"road": int((mask == 128).sum()), "building": int((mask == 255).sum())}


def test_nuisance_on_unchanged_pairs(
    tiny_set: Path, tiny_records: list[dict[str, Any]], tiny_meta: dict[str, Any]
) -> None:
    """Unchanged pairs still differ (light, season, haze, noise, misregistration) while their mask is empty."""
    unchanged = [(r, it) for r, it in zip(tiny_records, tiny_meta["items"]) if not r["changeflag"]]
    assert unchanged
    for rec, it in unchanged:
        a = _load(tiny_set, rec, "A").astype(int)
        b = _load(tiny_set, rec, "B").astype(int)
        assert np.abs(a - b).mean() > 2.0
        assert it["nuisance"]["before"]["shift"] == [0, 0]
        assert it["nuisance"]["after"]["shift"] != [0, 0]


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    kw: dict[str, Any] = {"pairs": 6, "size": 48, "progress": False}
    a = generate_synthcc(tmp_path / "a", seed=4, **kw)
    b = generate_synthcc(tmp_path / "b", seed=4, workers=2, **kw)
    c = generate_synthcc(tmp_path / "c", seed=5, **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 3 + 5 * 6  # three JSON files; A, B, label and two land-cover maps per pair
    assert sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) == files
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "images/train/A/train_000001.png").read_bytes() != (c / "images/train/A/train_000001.png").read_bytes()
    assert json.loads((a / "synthcc_meta.json").read_text())["seed"] == 4


def test_regenerating_smaller_set_removes_stale_files(tmp_path: Path) -> None:
    generate_synthcc(tmp_path, pairs=8, size=32, progress=False)
    generate_synthcc(tmp_path, pairs=4, size=32, progress=False)
    pngs = list((tmp_path / "images").rglob("*.png"))
    assert len(pngs) == 5 * 4
    assert len(json.loads((tmp_path / "scene_captions.json").read_text())["images"]) == 2 * 4
    assert len(json.loads((tmp_path / "LevirCCcaptions.json").read_text())["images"]) == 4


@pytest.mark.parametrize("size", [32, 96])
def test_other_sizes_render(tmp_path: Path, size: int) -> None:
    root = generate_synthcc(tmp_path, pairs=3, size=size, seed=1, progress=False)
    rec = json.loads((root / "LevirCCcaptions.json").read_text())["images"][0]
    assert _load(root, rec, "A").shape == (size, size, 3)


def test_refuses_to_overwrite_a_folder_that_is_not_synthcc(tmp_path: Path) -> None:
    real = tmp_path / "levir"
    real.mkdir()
    (real / "LevirCCcaptions.json").write_text('{"images": []}')
    with pytest.raises(DataError, match="did not write"):
        generate_synthcc(real, pairs=2, size=32, progress=False)
    assert (real / "LevirCCcaptions.json").read_text() == '{"images": []}'
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="notes.txt"):
        generate_synthcc(other, pairs=2, size=32, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        generate_synthcc(tmp_path / "file", pairs=2, size=32, progress=False)


def test_single_date_layout(tiny_set: Path, tiny_records: list[dict[str, Any]]) -> None:
    doc = json.loads((tiny_set / "scene_captions.json").read_text())
    assert doc["format"] == "synthcc-scene-captions" and doc["version"] == 1
    assert doc["landcover_classes"][:8] == [
        "bare land",
        "grass",
        "trees",
        "water",
        "road",
        "building",
        "parking",
        "disturbed soil",
    ]
    images = doc["images"]
    # two records per pair, in file order: date A (before), then date B (after)
    assert [(r["split"], r["filename"], r["date"]) for r in images] == [
        (p["split"], p["filename"], date) for p in tiny_records for date in ("A", "B")
    ]
    for rec in images:
        assert {"filename", "split", "date", "sentences", "objects", "landcover_pixels"} <= set(rec)
        assert len(rec["sentences"]) == 5 and all(isinstance(s, str) and s for s in rec["sentences"])
        folder = tiny_set / "images" / rec["split"]
        with Image.open(folder / "landcover" / rec["date"] / rec["filename"]) as im:
            assert im.mode == "L" and im.size == (64, 64)
            lc = np.asarray(im)
        assert int(lc.max()) < len(doc["landcover_classes"])
        assert rec["landcover_pixels"] == [int((lc == k).sum()) for k in range(len(doc["landcover_classes"]))]
        assert (folder / rec["date"] / rec["filename"]).is_file()


def _pair_files_digest(root: Path) -> str:
    """SHA-256 over the pair files' content: both JSON files as bytes, the images and masks as decoded pixels (so
    the digest does not depend on the zlib build)."""
    h = hashlib.sha256()
    for name in ("LevirCCcaptions.json", "synthcc_meta.json"):
        h.update((root / name).read_bytes())
    for p in sorted((root / "images").glob("*/*/*.png")):  # {split}/{A,B,label}/<name>; not landcover/{A,B}/
        h.update(str(p.relative_to(root)).encode())
        h.update(np.asarray(Image.open(p)).tobytes())
    return h.hexdigest()


def test_pair_files_of_the_tiny_preset_keep_their_content(tiny_set: Path) -> None:
    """The pairs of ``--preset tiny --seed 0`` (images, masks, captions and meta): a change here changes every
    SynthCC set users have generated and every number measured on one."""
    assert _pair_files_digest(tiny_set) == "ca7a83a94969d307bdebc34f6afc29e76967f101c38ab64455009e958adac78c"


def test_scene_captions_do_not_touch_the_pair_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw: dict[str, Any] = {"pairs": 4, "size": 40, "seed": 2, "progress": False}
    a = generate_synthcc(tmp_path / "a", **kw)
    monkeypatch.setattr(generate, "_SCENE_CAPTION_STREAM", generate._SCENE_CAPTION_STREAM + 1)
    b = generate_synthcc(tmp_path / "b", **kw)
    assert (a / "scene_captions.json").read_bytes() != (b / "scene_captions.json").read_bytes()
    assert _pair_files_digest(a) == _pair_files_digest(b)


def test_scene_captions_are_written_before_the_completion_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[str] = []
    real = generate._write_json

    def spy(path: Path, data: Any) -> None:
        assert not (path.parent / "LevirCCcaptions.json").exists()  # the marker is written last
        real(path, data)
        written.append(path.name)

    monkeypatch.setattr(generate, "_write_json", spy)
    generate_synthcc(tmp_path, pairs=3, size=32, progress=False)
    assert written == ["synthcc_meta.json", "scene_captions.json", "LevirCCcaptions.json"]
    assert not list(tmp_path.glob("*.tmp"))
