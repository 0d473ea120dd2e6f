"""synthcc_statistics on the tiny set: numbers recomputed independently from the files."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from changecap.errors import DataError
from changecap.synth import format_statistics, split_sizes, synthcc_statistics


def test_statistics_match_the_annotation_file(tiny_set: Path, tiny_records: list[dict[str, Any]]) -> None:
    st = synthcc_statistics(tiny_set)
    assert st["pairs"] == 60 and st["size"] == 64 and st["preset"] == "tiny"
    assert {k: v["pairs"] for k, v in st["splits"].items()} == split_sizes(60)
    assert st["changed"] == sum(r["changeflag"] for r in tiny_records)
    lengths = [len(s["tokens"]) for r in tiny_records for s in r["sentences"]]
    assert st["captions"] == 300
    assert st["caption_words_max"] == max(lengths)
    assert st["caption_words_mean"] == pytest.approx(sum(lengths) / len(lengths), abs=0.01)
    train = Counter(t for r in tiny_records if r["split"] == "train" for s in r["sentences"] for t in s["tokens"])
    assert st["vocab_train_gt5"] == sum(c > 5 for c in train.values()) + 4
    assert st["distinct_words"] == len({t for r in tiny_records for s in r["sentences"] for t in s["tokens"]})
    assert sum(st["recipes"].values()) == st["changed"]
    assert 0 < st["mask_share_changed"]["building"] < 0.5


def test_format_statistics_is_a_table(tiny_set: Path) -> None:
    text = format_statistics(synthcc_statistics(tiny_set))
    assert "| train |" in text and "| total | 60 |" in text and "vocabulary:" in text


def test_missing_or_broken_folder_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="LevirCCcaptions.json"):
        synthcc_statistics(tmp_path)
    (tmp_path / "LevirCCcaptions.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        synthcc_statistics(tmp_path)
    (tmp_path / "LevirCCcaptions.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="no pairs"):
        synthcc_statistics(tmp_path)


def test_single_date_statistics_match_the_scene_captions(tiny_set: Path) -> None:
    doc = json.loads((tiny_set / "scene_captions.json").read_text())
    sd = synthcc_statistics(tiny_set)["single_date"]
    assert sd["images"] == 120 and sd["splits"] == {k: 2 * v for k, v in split_sizes(60).items()}
    lengths = [len(s.split()) + s.count(",") for r in doc["images"] for s in r["sentences"]]  # commas are tokens
    assert sd["captions"] == 600 and sd["caption_words_max"] == max(lengths)
    assert sd["caption_words_mean"] == pytest.approx(sum(lengths) / len(lengths), abs=0.01)
    pixels = np.sum([r["landcover_pixels"] for r in doc["images"]], axis=0)
    assert list(sd["landcover_share"]) == doc["landcover_classes"]
    assert list(sd["landcover_share"].values()) == pytest.approx(list(pixels / pixels.sum()), abs=1e-4)
    roads = sum(r["objects"]["roads"] > 0 for r in doc["images"])
    assert sd["images_with"]["roads"] == pytest.approx(roads / 120, abs=1e-4)
    text = format_statistics(synthcc_statistics(tiny_set))
    assert "single dates: 120 images" in text and "| water |" in text and "scene vocabulary:" in text


def test_land_cover_shares_from_the_maps_when_a_record_has_no_pixel_counts(tmp_path: Path, tiny_set: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(tiny_set, root)
    path = root / "scene_captions.json"
    doc = json.loads(path.read_text())
    for r in doc["images"]:
        del r["landcover_pixels"]
    path.write_text(json.dumps(doc))
    assert synthcc_statistics(root)["single_date"] == synthcc_statistics(tiny_set)["single_date"]
