"""Pixel measures of the audit: hash, aligned difference, duplicate candidates, one read per pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from changecap.data.audit_images import (
    PRESCREEN_FACTOR,
    THUMB,
    aligned_difference,
    difference_score,
    near_duplicates,
    pair_thumbnails,
    phash,
    popcount,
    same_scene_difference,
    scan_pair,
    thumbnail,
    tiny_residual,
)


def _scene(seed: int, size: int = 128) -> np.ndarray:
    """A textured test image: smooth blobs plus a few bright rectangles ("houses")."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 200, (8, 8, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)).copy()
    for _ in range(6):
        y, x = rng.integers(4, size - 16, 2)
        img[y : y + 8, x : x + 12] = rng.integers(150, 255, 3)
    return img


def _relit(img: np.ndarray, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    out = np.roll(img, shift, axis=(0, 1)).astype(np.float32) * np.array([0.9, 0.95, 0.92]) + 7
    return np.clip(out, 0, 255).astype(np.uint8)


def test_phash_is_stable_under_relighting_and_differs_between_scenes() -> None:
    a = _scene(0)
    h = phash(thumbnail(a, THUMB))
    assert bin(h ^ phash(thumbnail(_relit(a), THUMB))).count("1") <= 4
    assert bin(h ^ phash(thumbnail(_scene(1), THUMB))).count("1") > 16


def test_popcount_matches_python() -> None:
    x = np.array([0, 1, 2**63 + 5, 2**64 - 1], dtype=np.uint64)
    assert popcount(x).tolist() == [bin(int(v)).count("1") for v in x]


def test_aligned_difference_ignores_light_and_shift_but_not_a_new_object() -> None:
    a = thumbnail(_scene(0), THUMB)
    mean, block = aligned_difference(a, _relit(a, (1, -2)))
    assert mean < 1.5 and block < 4
    changed = a.copy()
    changed[20:28, 30:40] = (250, 240, 230)  # a new roof
    assert aligned_difference(a, changed)[1] > 20
    full = _scene(3)
    assert difference_score(full, _relit(full, (2, 2)), threshold=4.0) < 4.0
    assert same_scene_difference(full, thumbnail(_relit(full), 100)) < 4.0  # different sizes are compared too
    assert same_scene_difference(full, _scene(4)) > 10
    bound = PRESCREEN_FACTOR * 4.0  # the pre-screen at the default duplicate threshold
    assert tiny_residual(thumbnail(full, 16), thumbnail(_relit(full, (2, 1)), 16)) < bound
    assert tiny_residual(thumbnail(full, 16), thumbnail(_scene(4), 16)) > bound


def test_near_duplicates_need_both_dates() -> None:
    ha = np.array([0b1111, 0b1111, 0b1111, 0], dtype=np.uint64)
    hb = np.array([0, 0b1, 2**40 - 1, 0], dtype=np.uint64)
    assert near_duplicates(ha, hb, max_bits=1) == [(0, 1)]
    assert near_duplicates(ha, hb, max_bits=4, chunk=1) == [(0, 1), (0, 3), (1, 3)]


def test_scan_pair_reads_once_and_reports_problems_as_text(tmp_path: Path) -> None:
    a, b = _scene(0, 64), _scene(1, 64)
    label = np.zeros((64, 64, 3), np.uint8)
    label[48:60, 10:20] = 255
    label[50:52, 0:64] = 128
    for name, img in (("a.png", a), ("b.png", b), ("m.png", label)):
        Image.fromarray(img).save(tmp_path / name)
    scan = scan_pair(tmp_path / "a.png", tmp_path / "b.png", tmp_path / "m.png", difference_threshold=4.0)
    assert scan.error is None and (scan.width, scan.height) == (64, 64)
    assert scan.mask_classes == {1: 128, 2: 120 - 20} and scan.mask_pixels == 228
    assert scan.mask_extent is not None and scan.mask_extent.y0 == pytest.approx(48 / 64)
    assert scan.difference is not None and scan.difference > 4.0
    assert scan_pair(tmp_path / "a.png", tmp_path / "b.png", None).difference is None
    Image.fromarray(_scene(2, 32)).save(tmp_path / "small.png")
    bad = scan_pair(tmp_path / "a.png", tmp_path / "small.png", None)
    assert bad.error is not None and "differs from the before image" in bad.error
    missing = scan_pair(tmp_path / "a.png", tmp_path / "nope.png", None)
    assert missing.error is not None and "not found" in missing.error
    before, after, mask = pair_thumbnails(tmp_path / "a.png", tmp_path / "nope.png", tmp_path / "m.png", 24)
    assert before is not None and before.shape == (24, 24, 3) and after is None
    assert mask is not None and set(np.unique(mask).tolist()) == {0, 127, 254}
