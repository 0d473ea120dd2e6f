from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from changecap.data.annotations import parse_annotations
from changecap.data.semantic_maps import (
    SECOND_CLASSES,
    SECOND_PALETTE,
    change_from_semantic,
    read_change_mask,
    read_semantic_map,
    read_semantic_pair,
    semantic_map_size,
)
from changecap.errors import DataError
from tests.data.fakes import bomb_png, class_map_png, make_levir, make_second_cc

IDS = np.array([[0, 1, 2, 3], [4, 5, 6, 0]], dtype=np.uint8)  # every SECOND class once


def test_palette_and_class_table_agree() -> None:
    assert len(SECOND_CLASSES) == len(SECOND_PALETTE) == len(set(SECOND_PALETTE)) == 7
    assert SECOND_PALETTE[0] == (255, 255, 255) and SECOND_CLASSES[0] == "unchanged"


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L"])
def test_every_storage_of_a_map_decodes_to_the_same_ids(mode: str, tmp_path: Path) -> None:
    rgb = np.array(SECOND_PALETTE, dtype=np.uint8)[IDS]  # [2, 4, 3]
    if mode == "RGB":
        img = Image.fromarray(rgb)
    elif mode == "RGBA":
        img = Image.fromarray(np.concatenate([rgb, np.full((2, 4, 1), 255, np.uint8)], axis=2))
    elif mode == "P":
        img = Image.fromarray(IDS, mode="L").convert("P")
        img.putpalette([c for colour in SECOND_PALETTE for c in colour])
    else:  # single band: class ids
        img = Image.fromarray(IDS)
    img.save(tmp_path / "m.png")
    assert read_semantic_map(tmp_path / "m.png").tolist() == IDS.tolist()


def test_unknown_colours_and_ids_are_one_line_errors_naming_the_file(tmp_path: Path) -> None:
    rgb = np.full((3, 3, 3), 255, np.uint8)
    rgb[1, 1] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match=r"colour\.png: colour\(s\) \(1, 2, 3\)"):
        read_semantic_map(tmp_path / "colour.png")
    Image.fromarray(np.full((3, 3), 9, np.uint8)).save(tmp_path / "ids.png")
    with pytest.raises(DataError, match=r"ids\.png: invalid class id\(s\) 9"):
        read_semantic_map(tmp_path / "ids.png")
    with pytest.raises(DataError, match="semantic map not found"):
        read_semantic_map(tmp_path / "absent.png")


def test_maps_turn_with_exif_like_their_images_and_respect_the_pixel_bound(tmp_path: Path) -> None:
    path = class_map_png(tmp_path / "m.png", IDS, orientation=6)  # stored [2, 4], shown [4, 2]
    np.testing.assert_array_equal(read_semantic_map(path), np.rot90(IDS, -1))
    assert semantic_map_size(path) == (2, 4)  # (width, height), upright
    for read in (read_semantic_map, semantic_map_size):
        with pytest.raises(DataError, match=r"bomb\.png: image is 30000×30000 pixels"):
            read(bomb_png(tmp_path / "bomb.png"))


def test_pair_sizes_must_agree(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match=r"b\.png: semantic map size 5×4 differs"):
        read_semantic_pair(tmp_path / "a.png", tmp_path / "b.png")


def test_change_is_where_the_maps_differ() -> None:
    maps = np.zeros((2, 3, 3), np.uint8)  # [2, H, W]
    maps[0, 0, 0], maps[1, 0, 0] = 3, 5  # low vegetation -> building
    maps[0, 1, 1] = maps[1, 1, 1] = 4  # tree on both dates: annotated, not changed
    maps[1, 2, 2] = 1  # unchanged -> water
    assert change_from_semantic(maps).tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]


@pytest.mark.parametrize("grey", [False, True])
def test_change_mask_of_a_second_cc_record(grey: bool, tmp_path: Path) -> None:
    root = make_second_cc(tmp_path / "ds", pairs={"train": 2}, size=8, grey_maps=grey)
    changed, unchanged = parse_annotations(root, "second-cc")
    mask = read_change_mask(changed)
    assert mask is not None and mask.dtype == np.uint8 and mask.shape == (8, 8)
    assert mask[:2, :2].all() and mask[-2:, -2:].all() and int(mask.sum()) == 8
    assert not read_change_mask(unchanged).any()  # type: ignore[union-attr]


def test_change_mask_of_other_formats(tmp_path: Path) -> None:
    mci = parse_annotations(make_levir(tmp_path / "mci", "levir-mci", pairs={"train": 1}, size=8), "levir-mci")[0]
    assert set(np.unique(read_change_mask(mci)).tolist()) == {0, 1, 2}  # type: ignore[arg-type]
    assert set(np.unique(read_change_mask(mci, binary=True)).tolist()) == {0, 1}  # type: ignore[arg-type]
    cc = parse_annotations(make_levir(tmp_path / "cc", pairs={"train": 1}, size=8), "levir-cc")[0]
    assert read_change_mask(cc) is None and not cc.has_mask
