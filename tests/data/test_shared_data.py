"""Conformance on real benchmark samples in ../shared/data (skipped when absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from changecap.data.annotations import parse_annotations, split_counts
from changecap.data.check import check_dataset
from changecap.data.datasets import build_vocabulary, open_dataset
from changecap.data.image_io import read_mask, read_rgb
from changecap.data.text import NO_CHANGE_SENTENCES
from changecap.data.vocab import Vocabulary
from changecap.errors import DataError
from tests.conftest import require_shared

EXAMPLES = ("train_000016.png", "train_000051.png", "train_000054.png")


@pytest.mark.shared
def test_tokens_reader_on_levir_cc_tokens() -> None:
    root = require_shared("levir-cc-tokens")
    recs = parse_annotations(root, "tokens")
    assert split_counts(recs) == {"train": 6815, "val": 1333, "test": 1929}
    assert all(len(r.captions) == 5 for r in recs)
    unchanged = {s: sum(not r.changed for r in recs if r.split == s) for s in ("train", "val", "test")}
    assert unchanged == {"train": 3408, "val": 666, "test": 965}  # LEVIR-CC: 50 % per split
    assert all(sorted(r.captions) == sorted(NO_CHANGE_SENTENCES) for r in recs if not r.changed)
    assert max(len(c.split()) for r in recs for c in r.captions) == 39  # → max_length 41


@pytest.mark.shared
def test_build_vocabulary_reproduces_shipped_vocab() -> None:
    root = require_shared("levir-cc-tokens")
    shipped = Vocabulary.load(root / "vocab.json")
    assert len(shipped) == 468
    assert build_vocabulary(root, "tokens", "all", threshold=5, rule="gt") == shipped
    assert len(build_vocabulary(root, "tokens", "all", threshold=5, rule="ge")) == 501
    assert len(build_vocabulary(root, "tokens", "train", threshold=5, rule="gt")) == 404


def _levir_layout_from_examples(tmp: Path) -> Path:
    """LEVIR-CC layout in ``tmp`` whose images are symlinks to the shared examples (nothing is copied)."""
    ex = require_shared("levir-cc-examples")
    tok = require_shared("levir-cc-tokens")
    images = []
    for i, name in enumerate(EXAMPLES):
        toks = json.loads((tok / "tokens" / f"{Path(name).stem}.txt").read_text())
        sents = [{"tokens": t[1:-1], "raw": " " + " ".join(t[1:-1]) + " ."} for t in toks]
        images.append({"filepath": "train", "filename": name, "imgid": i, "split": "train", "sentences": sents})
        for side in ("A", "B"):
            d = tmp / "images" / "train" / side
            d.mkdir(parents=True, exist_ok=True)
            (d / name).symlink_to(ex / "images" / "train" / side / name)
    (tmp / "LevirCCcaptions.json").write_text(json.dumps({"images": images}))
    return tmp


@pytest.mark.shared
def test_reading_levir_cc_example_images(tmp_path: Path) -> None:
    ex = require_shared("levir-cc-examples")
    for name in EXAMPLES:
        for side in ("A", "B"):
            img = read_rgb(ex / "images" / "train" / side / name)
            assert img.shape == (256, 256, 3) and img.dtype == np.uint8 and img.std() > 5
    root = _levir_layout_from_examples(tmp_path / "levir")
    report = check_dataset(root, "levir-cc", deep=True, progress=False)
    assert report.splits["train"].pairs == 3 and report.image_sizes == {"256x256": 3}
    ds = open_dataset(root, "levir-cc", "train", image_size=224, resize_mode="clip", normalize="clip")
    s = ds[0]
    assert s["image"].shape == (2, 3, 224, 224)
    assert -2.0 < float(s["image"].mean()) < 2.0
    assert s["captions"] == ds.records[0].captions and len(s["captions"]) == 5


@pytest.mark.shared
def test_levir_cd_masks_and_the_screenshot_pair() -> None:
    root = require_shared("levir-cd-samples")
    m = read_mask(root / "label" / "test_2_0000_0000.png")
    assert set(np.unique(m).tolist()) == {0, 2}  # 255 = building change
    assert set(np.unique(read_mask(root / "label" / "test_2_0000_0000.png", binary=True)).tolist()) == {0, 1}
    # the screenshot pair: opaque RGBA PNGs (alpha dropped) whose dates differ in height by one pixel
    a, b = read_rgb(root / "A" / "test_113_0256.png"), read_rgb(root / "B" / "test_113_0256.png")
    assert a.shape == (384, 768, 3) and b.shape == (383, 768, 3)


@pytest.mark.shared
def test_size_mismatch_on_real_screenshot(tmp_path: Path) -> None:
    src = require_shared("levir-cd-samples")
    root = tmp_path / "ds"
    for side in ("A", "B"):
        d = root / "images" / "test" / side
        d.mkdir(parents=True)
        (d / "test_113_0256.png").symlink_to(src / side / "test_113_0256.png")
    entry = {"filename": "test_113_0256.png", "split": "test", "sentences": [{"raw": "a house is built ."}]}
    (root / "LevirCCcaptions.json").write_text(json.dumps({"images": [entry]}))
    with pytest.raises(DataError, match=r"B/test_113_0256\.png.*768×383.*A/test_113_0256\.png"):
        check_dataset(root, "levir-cc", progress=False)
