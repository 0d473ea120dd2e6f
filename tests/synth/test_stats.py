"""synthcc_statistics on the tiny set: numbers recomputed independently from the files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

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
