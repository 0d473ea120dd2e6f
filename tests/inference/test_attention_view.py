"""Word attention over the after image: the colour ramp, where a peaked map lights up, an even map shows nothing,
the box the grid covers."""

from __future__ import annotations

import numpy as np
import pytest

from changecap.inference.attention_view import (
    FLOOR_ALPHA,
    HEAT_STOPS,
    attention_overlay,
    heat_colours,
    word_views,
)


def test_the_ramp_runs_from_its_first_to_its_last_colour() -> None:
    colours = heat_colours(np.array([-1.0, 0.0, 1.0, 2.0]))
    assert colours.shape == (4, 3) and colours.dtype == np.uint8
    assert colours[0].tolist() == colours[1].tolist() == list(HEAT_STOPS[0][1])  # clipped below
    assert colours[2].tolist() == colours[3].tolist() == list(HEAT_STOPS[-1][1])
    brightness = heat_colours(np.linspace(0, 1, 11)).astype(int).sum(axis=1)
    assert (np.diff(brightness) > 0).all()  # brighter with more attention, also in grey


def test_a_peaked_map_lights_its_cell_and_an_even_map_nothing() -> None:
    after = np.full((64, 64, 3), 100, dtype=np.uint8)
    grid = np.full((4, 4), 0.01, dtype=np.float32)
    grid[1, 2] = 1 - 15 * 0.01  # the cell of rows 16–31, columns 32–47
    out = attention_overlay(after, grid, size=64).astype(int).sum(axis=2)  # [64, 64] brightness
    assert out.shape == (64, 64)
    y, x = np.unravel_index(out.argmax(), out.shape)
    assert 16 <= y < 32 and 32 <= x < 48
    even = attention_overlay(after, np.full((4, 4), 1 / 16, dtype=np.float32), size=32)
    assert len(np.unique(even.reshape(-1, 3), axis=0)) == 1  # one colour: no cell stands out
    dimmed = 100 * 0.7 * (1 - FLOOR_ALPHA) + np.array(HEAT_STOPS[0][1]) * FLOOR_ALPHA
    assert np.abs(even[0, 0] - dimmed).max() <= 1


def test_the_box_is_the_part_of_the_image_shown() -> None:
    after = np.zeros((40, 100, 3), dtype=np.uint8)
    after[:, 30:70] = 255  # the centred square a clip resize keeps is white, the sides black
    grid = np.full((2, 2), 0.25, dtype=np.float32)
    inside = attention_overlay(after, grid, box=(30, 0, 70, 40), size=20)
    whole = attention_overlay(after, grid, size=20)
    assert inside.min() > 100 and whole[:, 0].max() < 50  # the box shows only the square


def test_word_views_pair_words_with_their_maps() -> None:
    after = np.zeros((8, 8, 3), dtype=np.uint8)
    grids = np.stack([np.eye(2, dtype=np.float32) / 2, np.full((2, 2), 0.25, dtype=np.float32)])
    views = word_views(after, grids, ["a", "house"], size=16)
    assert [(w, peak) for w, peak, _ in views] == [("a", 0.5), ("house", 0.25)]
    assert all(im.shape == (16, 16, 3) for _, _, im in views)
    with pytest.raises(ValueError, match="2 attention maps for 1 words"):
        word_views(after, grids, ["a"])
