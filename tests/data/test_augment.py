from __future__ import annotations

import numpy as np

from changecap.data.augment import HFLIP_WORDS, VFLIP_WORDS, flip_array, flip_caption, flip_pair


def test_horizontal_flip_swaps_left_right_words() -> None:
    assert flip_caption("a house is built on the left of the road", horizontal=True) == (
        "a house is built on the right of the road"
    )
    assert flip_caption("trees in the lower-left and top-right corners", horizontal=True) == (
        "trees in the lower-right and top-left corners"
    )
    assert flip_caption("the leftmost villa , west of the lake", horizontal=True) == (
        "the rightmost villa , east of the lake"
    )
    assert flip_caption("roads at the top", horizontal=True) == "roads at the top"  # vertical words untouched


def test_vertical_flip_swaps_top_bottom_words() -> None:
    assert flip_caption("a road at the top above the houses", vertical=True) == "a road at the bottom below the houses"
    assert flip_caption("the upper-left part and the lower area", vertical=True) == (
        "the lower-left part and the upper area"
    )
    assert flip_caption("north-west of the bridge", vertical=True) == "south-west of the bridge"
    assert flip_caption("on the left", vertical=True) == "on the left"


def test_both_flips_are_a_half_turn() -> None:
    cap = "a house in the top-left corner , northeast of the road , turning clockwise"
    half_turn = "a house in the bottom-right corner , southwest of the road , turning clockwise"
    assert flip_caption(cap, True, True) == half_turn
    assert flip_caption(flip_caption(cap, True, False), True, False) == cap  # a flip is an involution


def test_case_is_kept_and_non_spatial_compounds_are_not_touched() -> None:
    assert flip_caption("A road on the Left", horizontal=True) == "A road on the Right"
    assert flip_caption("BOTTOM", vertical=True) == "TOP"
    assert flip_caption("a right-angled road built up", horizontal=True) == "a right-angled road built up"
    assert flip_caption("a t-junction", horizontal=True, vertical=True) == "a t-junction"
    assert flip_caption("the upside-down view", vertical=True) == "the upside-down view"


def test_word_tables_are_involutions() -> None:
    for table in (HFLIP_WORDS, VFLIP_WORDS):
        for a, b in table.items():
            if a != "anticlockwise":  # anticlockwise → clockwise → counterclockwise (synonym)
                assert table[b] == a


def test_flip_pair_flips_images_mask_and_captions_together() -> None:
    before = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)  # [H, W, C]
    after = before + 100
    mask = np.array([[2, 0, 0], [0, 0, 1]], np.uint8)
    b, a, m, caps = flip_pair(before, after, mask, ["a building at the top-left"], horizontal=True)
    np.testing.assert_array_equal(b, before[:, ::-1])
    np.testing.assert_array_equal(a, after[:, ::-1])
    assert m is not None and m.tolist() == [[0, 0, 2], [1, 0, 0]]
    assert caps == ["a building at the top-right"]
    _, _, m2, caps2 = flip_pair(before, after, mask, ["a building at the top-left"], vertical=True)
    assert m2 is not None and m2.tolist() == [[0, 0, 1], [2, 0, 0]]
    assert caps2 == ["a building at the bottom-left"]
    assert flip_array(before) is before
