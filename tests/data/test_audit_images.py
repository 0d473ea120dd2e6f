"""Pixel measures of the audit: hash, aligned difference, duplicate candidates, one read per pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from changecap.data.audit_images import (
    PRESCREEN_FACTOR,
    THUMB,
    MaskSource,
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


def test_a_mask_derived_from_two_semantic_maps(tmp_path: Path) -> None:
    """SECOND-CC: the mask is where the maps differ (1 = changed, no class), read by the scan and the thumbnails."""
    from changecap.data.annotations import parse_annotations
    from changecap.data.semantic_maps import SECOND_PALETTE
    from tests.data.fakes import make_second_cc

    root = make_second_cc(tmp_path / "second", pairs={"train": 2}, size=16)
    changed, unchanged = parse_annotations(root, "second-cc", "train")
    source = MaskSource.of(changed)
    assert source is not None and source.derived and source.mask_path is None
    assert source.semantic_paths == tuple(str(p) for p in changed.semantic_paths or ())
    assert source.files == source.semantic_paths and source.where.endswith("sem/A/00000.png")
    scan = scan_pair(changed.before_path, changed.after_path, source)
    assert scan.error is None and scan.mask_classes is None and scan.mask_pixels == 2 * 4 * 4
    assert scan.mask_extent is not None and (scan.mask_extent.y0, scan.mask_extent.y1) == (0.0, 1.0)
    assert scan_pair(None, None, MaskSource.of(unchanged)).mask_pixels == 0
    *_, thumb = pair_thumbnails(changed.before_path, changed.after_path, source, 8)
    assert thumb is not None and set(np.unique(thumb).tolist()) == {0, 255}  # white = changed
    # a mask file is still read as classes, from a path or a source
    label = np.zeros((16, 16), np.uint8)
    label[:4, :4] = 128
    Image.fromarray(label).save(tmp_path / "label.png")
    assert scan_pair(None, None, tmp_path / "label.png").mask_classes == {1: 16}
    assert scan_pair(None, None, MaskSource(mask_path=str(tmp_path / "label.png"))).mask_classes == {1: 16}
    # maps of another size than the images: the message names the map
    Image.fromarray(np.full((8, 8, 3), SECOND_PALETTE[0], np.uint8)).save(changed.semantic_paths[0])  # type: ignore[index]
    bad = scan_pair(changed.before_path, changed.after_path, source)
    assert bad.error is not None and "sem/A/00000.png" in bad.error and "differs from" in bad.error
    with pytest.raises(ValueError, match="exactly one"):
        MaskSource()
