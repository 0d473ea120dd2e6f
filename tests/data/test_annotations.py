from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from changecap.data.annotations import Layout, parse_annotations, parse_list_file, split_counts
from changecap.data.text import dubai_changed_from_captions
from changecap.errors import DataError
from tests.data.fakes import make_dubai, make_levir, make_second_cc, make_tokens

PAIRS = {"train": 2, "val": 1, "test": 1}


def _edit(root: Path, fn: Callable[[dict], None]) -> None:
    p = root / "LevirCCcaptions.json"
    data = json.loads(p.read_text())
    fn(data)
    p.write_text(json.dumps(data))


def test_levir_records(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", pairs=PAIRS, size=8)
    recs = parse_annotations(root, "levir-cc")
    assert split_counts(recs) == {"train": 2, "val": 1, "test": 1}
    r = recs[0]
    assert r.name == "train_000001.png" and r.split == "train"
    assert r.before_path == root / "images/train/A/train_000001.png"
    assert r.after_path == root / "images/train/B/train_000001.png"
    assert r.mask_path is None
    assert r.captions[3] == "a building , a road and a lawn are added above the river"  # re-tokenised raw
    assert (r.changed, r.changed_from) == (True, "json")
    assert [x.name for x in parse_annotations(root, "levir-cc", "val")] == ["val_000001.png"]


def test_tokens_field_is_the_fallback_and_flag_derived_from_text(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", pairs=PAIRS, size=8, changeflag=False)

    def drop_raw(d: dict) -> None:
        for s in d["images"][0]["sentences"]:
            s.pop("raw")

    _edit(root, drop_raw)
    recs = parse_annotations(root, "levir-cc")
    assert recs[0].captions[0] == "a house is built on the left side"
    assert [(r.changed, r.changed_from) for r in recs[:2]] == [(True, "captions"), (False, "captions")]


def test_keep_empty_keeps_empty_captions_for_the_audit(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", pairs=PAIRS, size=8)

    def blank(d: dict) -> None:
        d["images"][0]["sentences"][1]["raw"] = " . "
        d["images"][1]["sentences"] = []

    _edit(root, blank)
    with pytest.raises(DataError, match=r"images\[0\]\.sentences\[1\]"):
        parse_annotations(root, "levir-cc")
    recs = parse_annotations(root, "levir-cc", keep_empty=True)
    assert recs[0].captions[1] == "" and len(recs[0].captions) == 5
    assert recs[1].captions == []
    tok = make_tokens(tmp_path / "tok", pairs={"train": 2})
    (tok / "tokens" / "train_000001.txt").write_text(json.dumps([["<START>", "<END>"], ["<START>", "a", "<END>"]]))
    with pytest.raises(DataError, match="caption is empty"):
        parse_annotations(tok, "tokens")
    assert parse_annotations(tok, "tokens", keep_empty=True)[0].captions == ["", "a"]


def test_filepath_field_selects_the_image_folder(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", pairs=PAIRS, size=8)
    shutil.move(root / "images/test", root / "images/extra")
    _edit(root, lambda d: d["images"][3].__setitem__("filepath", "extra"))
    (rec,) = parse_annotations(root, "levir-cc", "test")
    assert rec.before_path == root / "images/extra/A/test_000001.png"


def test_check_files_false_needs_no_images(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", "levir-mci", pairs=PAIRS, size=8)
    shutil.rmtree(root / "images")
    assert len(parse_annotations(root, "levir-mci", check_files=False)) == 4
    with pytest.raises(DataError, match="label folder not found"):
        parse_annotations(root, "levir-mci")


def test_whu_cdc_json_masks_are_optional_per_split(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", "whu-cdc", pairs=PAIRS, size=8)
    shutil.rmtree(root / "images/test/label")
    recs = {r.split: r for r in parse_annotations(root, "whu-cdc")}
    assert recs["train"].mask_path is not None and recs["test"].mask_path is None


def test_whu_cdc_list_files_with_zipped_tokens(tmp_path: Path) -> None:
    root = make_tokens(tmp_path / "ds", pairs=PAIRS, with_images=True, size=8, zipped=True)
    assert not (root / "tokens").exists() and (root / "tokens.zip").exists()
    recs = parse_annotations(root, "whu-cdc")
    assert [r.name for r in recs] == ["train_000001.png", "train_000002.png", "val_000001.png", "test_000001.png"]
    assert recs[0].has_images and recs[0].captions[0] == "a house is built on the left side"
    assert recs[1].changed is False and recs[1].changed_from == "captions"


def test_tokens_layout_and_list_dedupe(tmp_path: Path) -> None:
    root = make_tokens(tmp_path / "ds", pairs=PAIRS, per_caption_lines=True)
    assert (root / "train.txt").read_text().splitlines()[:2] == ["train_000001.png-0", "train_000001.png-1"]
    assert parse_list_file(root / "train.txt") == ["train_000001.png", "train_000002.png"]
    recs = parse_annotations(root, "tokens")
    assert len(recs) == 4 and not any(r.has_images for r in recs)
    assert recs[1].captions[2] == "the two scenes seem identical"
    (root / "test.txt").unlink()
    assert split_counts(parse_annotations(root, "tokens")) == {"train": 2, "val": 1}  # absent list: no split
    with pytest.raises(DataError, match=r"test\.txt.*split list not found"):
        parse_annotations(root, "tokens", "test")


def test_tokens_images_need_both_dates(tmp_path: Path) -> None:
    root = make_tokens(tmp_path / "ds", pairs=PAIRS, with_images=True, size=8)
    shutil.rmtree(root / "images/val/B")
    with pytest.raises(DataError, match=r"images/val/B.*image folder not found"):
        parse_annotations(root, "tokens", "val")


def test_dubai_split_from_file_prefix_and_discovery(tmp_path: Path) -> None:
    root = make_dubai(tmp_path / "ds", pairs=PAIRS, tile=8)
    recs = parse_annotations(root, "dubai-cc")
    assert [r.split for r in recs] == ["train", "train", "val", "test"]
    assert recs[0].before_path is not None and recs[0].before_path.parent.name == "500_2000"
    assert recs[0].after_path is not None and recs[0].after_path.parent.name == "500_2010"
    assert recs[0].captions[0] == "A road was built on the Left"
    assert [(r.changed, r.changed_from) for r in recs[:2]] == [(True, "captions"), (False, "captions")]


def test_dubai_layout_overrides(tmp_path: Path) -> None:
    src = make_dubai(tmp_path / "src", pairs=PAIRS, tile=8)
    caps = tmp_path / "caps"
    shutil.copytree(next(src.rglob("description_jsontr_te_val")), caps)
    (caps / "Test_captions.json").rename(caps / "test_lowercase_prefix.json")  # prefixes are case-insensitive
    before, after = tmp_path / "t1", tmp_path / "t2"
    shutil.copytree(next(src.rglob("500_2000")), before)
    shutil.copytree(next(src.rglob("500_2010")), after)
    lay = Layout(captions_dir=caps, before_dir=before, after_dir=after)
    recs = parse_annotations(tmp_path / "caps", "dubai-cc", layout=lay)
    assert split_counts(recs) == {"train": 2, "val": 1, "test": 1}
    assert recs[-1].after_path == after / "4.tif"


def test_dubai_change_flag_rule() -> None:
    assert not dubai_changed_from_captions(["Nothing has changed.", "there is no difference", "No change was made"])
    assert dubai_changed_from_captions(["Nothing has changed.", "A road was built."])


def test_root_and_annotation_discovery_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset root not found"):
        parse_annotations(tmp_path / "missing", "levir-cc")
    root = make_levir(tmp_path / "ds", pairs=PAIRS, size=8)
    (root / "LevirCCcaptions.json").rename(root / "captions_v2.json")
    assert len(parse_annotations(root, "levir-cc")) == 4  # the single JSON in the root is used
    (root / "other.json").write_text("{}")
    with pytest.raises(DataError, match="several caption JSON files"):
        parse_annotations(root, "levir-cc")
    assert len(parse_annotations(root, "levir-cc", layout=Layout(annotation=root / "captions_v2.json"))) == 4


def test_second_cc_records(tmp_path: Path) -> None:
    root = make_second_cc(tmp_path / "ds", pairs=PAIRS, size=8)
    recs = parse_annotations(root, "second-cc")
    assert split_counts(recs) == {"train": 2, "val": 1, "test": 1}
    r = recs[0]
    assert (r.name, r.split, r.changed, r.changed_from) == ("00000.png", "train", True, "json")
    assert r.before_path == root / "train/rgb/A/00000.png" and r.after_path == root / "train/rgb/B/00000.png"
    assert r.semantic_paths == (root / "train/sem/A/00000.png", root / "train/sem/B/00000.png")
    assert r.mask_path is None and r.has_mask and r.has_images
    assert [x.name for x in parse_annotations(root, "second-cc", "test")] == ["00003.png"]


def test_second_cc_flag_from_captions_and_layout_overrides(tmp_path: Path) -> None:
    root = make_second_cc(tmp_path / "ds", pairs=PAIRS, size=8, changeflag=False)
    recs = parse_annotations(root, "second-cc")
    assert [(r.changed, r.changed_from) for r in recs[:2]] == [(True, "captions"), (False, "captions")]
    (root / "SECOND-CC-AUG.json").rename(tmp_path / "captions.json")
    with pytest.raises(DataError, match="SECOND-CC-AUG.json"):
        parse_annotations(root, "second-cc")
    moved = tmp_path / "imgs"
    moved.mkdir()
    for split in PAIRS:
        shutil.move(root / split, moved / split)
    lay = Layout(annotation=tmp_path / "captions.json", image_root=moved)
    assert parse_annotations(root, "second-cc", layout=lay)[0].semantic_paths[0] == moved / "train/sem/A/00000.png"  # type: ignore[index]
