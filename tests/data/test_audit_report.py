"""The audit's HTML page: self-contained, counts per check, thumbnails of every flagged pair, skipped checks."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from changecap.data.audit import CHECKS, audit_dataset
from changecap.data.audit_report import render_html, write_html
from tests.data.fakes import make_levir, make_second_cc, make_tokens


def _edit(root: Path) -> None:
    doc = json.loads((root / "LevirCCcaptions.json").read_text())
    doc["images"][0]["changeflag"] = 0  # a changed pair flagged unchanged (its mask has pixels)
    doc["images"][1]["sentences"][0]["raw"] = " a house appears ."  # an unchanged pair gets a change caption
    (root / "LevirCCcaptions.json").write_text(json.dumps(doc))


def test_html_is_self_contained_with_a_thumbnail_per_flagged_pair(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", "levir-mci", pairs={"train": 2, "val": 1, "test": 1}, size=16)
    _edit(root)
    report = audit_dataset(root, "levir-mci", progress=False)
    out = write_html(report, tmp_path / "audit.html", thumb_size=32)
    page = out.read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "<script" not in page and "@import" not in page
    flagged = {(f.split, f.name) for f in report.findings if f.severity != "info"}
    assert flagged == {("train", "train_000001.png"), ("train", "train_000002.png")}
    # before, after and mask of each flagged pair, embedded once
    assert page.count("background-image: url(data:image/png;base64,") == 3 * len(
        {(f.split, f.name) for f in report.findings}
    )
    for c in CHECKS:
        assert c.name in page
    assert 'id="mask_in_unchanged_pair"' in page and 'id="mixed_captions"' in page
    assert "train/train_000001.png" in page


def test_caption_only_page_says_image_checks_were_skipped(tmp_path: Path) -> None:
    root = make_tokens(tmp_path / "tok", pairs={"train": 2, "val": 1, "test": 1})
    report = audit_dataset(root, "tokens", progress=False)
    page = render_html(report)
    assert "image checks were skipped" in page
    assert page.count("skipped: no images: caption files only") == sum(c.needs == "images" for c in CHECKS)
    assert "base64" not in page


def test_second_cc_pages_show_the_mask_of_the_semantic_maps(tmp_path: Path) -> None:
    root = make_second_cc(tmp_path / "second", pairs={"train": 2, "val": 1, "test": 1}, size=16)
    doc = json.loads((root / "SECOND-CC-AUG.json").read_text())
    doc["images"][0]["changeflag"] = 0  # a changed pair flagged unchanged: its maps differ
    (root / "SECOND-CC-AUG.json").write_text(json.dumps(doc))
    report = audit_dataset(root, "second-cc", progress=False)
    assert {(f.check, f.name) for f in report.findings if f.severity == "error"} >= {
        ("mask_in_unchanged_pair", "00000.png")
    }
    page = render_html(report, thumb_size=16)
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "<script" not in page
    masks = re.findall(r"\.p\d+m \{ background-image: url\(data:image/png;base64,([^)]+)\)", page)
    assert len(masks) == len({(f.split, f.name) for f in report.findings})
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(masks[0]))))
    assert set(np.unique(shown).tolist()) == {0, 255} and shown[:4, :4].all() and not shown[6:10, 6:10].any()
