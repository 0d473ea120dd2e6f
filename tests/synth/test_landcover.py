"""Land-cover maps: every renderer class has a land-cover class, and the maps show what was drawn, in each image's
own frame (the after image is misregistered)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from changecap.synth import classes as C
from changecap.synth.generate import render_pair
from changecap.synth.landcover import LANDCOVER_CLASSES, LANDCOVER_LUT, class_pixels, landcover_map
from changecap.synth.scene import visible

# Ids the renderer draws: the ground and object classes up to the cars (consecutive), then the roof facets.
DRAWN_CLASSES = [*range(C.CAR0 + C.N_CAR_COLORS), *range(C.ROOF0, C.N_CLASSES)]


def test_every_drawn_class_has_a_land_cover_class() -> None:
    assert C.TREE_LIGHT < C.CAR0 and all(LANDCOVER_LUT[c] < len(LANDCOVER_CLASSES) for c in DRAWN_CLASSES)
    name = {c: LANDCOVER_CLASSES[LANDCOVER_LUT[c]] for c in DRAWN_CLASSES}
    assert name[C.BARE] == "bare land" and name[C.GRASS] == name[C.LAWN] == "grass"
    assert name[C.TREE] == name[C.TREE_LIGHT] == name[C.FOREST_FLOOR] == "trees"
    assert name[C.WATER] == name[C.SHORE] == "water"
    assert name[C.ROAD] == name[C.CURB] == name[C.DRIVEWAY] == "road"
    assert name[C.PARKING] == name[C.PAINT] == name[C.CAR0] == "parking"
    assert name[C.SOIL] == "disturbed soil"
    assert {name[C.roof_class(s, k)] for s in range(C.N_ROOF_SLOTS) for k in range(C.N_SHADES)} == {"building"}


def test_map_and_pixel_counts_of_a_class_canvas() -> None:
    canvas = np.array([[C.BARE, C.LAWN], [C.roof_class(3, 2), C.CAR0 + 4]], np.uint8)
    lc = landcover_map(canvas)
    assert [LANDCOVER_CLASSES[v] for v in lc.ravel()] == ["bare land", "grass", "building", "parking"]
    assert class_pixels(lc) == [1, 1, 0, 0, 0, 1, 1, 0]


def _footprints(pair_scene: object, date: str, shift: tuple[int, int], size: int) -> np.ndarray:
    """Roof footprints of the buildings of ``date`` drawn directly in a frame shifted by ``shift`` pixels."""
    im = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(im)
    for b in pair_scene.buildings:  # type: ignore[attr-defined]
        if visible(b.state, date):
            draw.polygon((b.corners() * size - np.asarray(shift)).ravel().tolist(), fill=1)
    return np.asarray(im) > 0


@pytest.mark.parametrize("index", [3, 5, 6])  # pairs with buildings in both images
def test_building_pixels_are_the_roofs_in_each_images_own_frame(index: int) -> None:
    size = 128
    pair = render_pair(0, index, True, size)
    assert pair.shifts[0] == (0, 0) and pair.shifts[1] != (0, 0)
    for k, date in enumerate("AB"):
        lc = pair.landcover[k]
        assert lc.shape == (size, size) and lc.dtype == np.uint8 and int(lc.max()) < len(LANDCOVER_CLASSES)
        roofs = lc == LANDCOVER_CLASSES.index("building")
        own = _footprints(pair.scene, date, pair.shifts[k], size)
        other = _footprints(pair.scene, date, pair.shifts[1 - k], size)
        assert own.any()
        iou_own = (own & roofs).sum() / (own | roofs).sum()
        iou_other = (other & roofs).sum() / (other | roofs).sum()
        assert iou_own >= 0.98 and iou_other < iou_own - 0.1, (date, iou_own, iou_other)


def test_unchanged_ground_keeps_its_class_across_dates() -> None:
    """An unchanged pair: the after map is the before map moved by the misregistration."""
    pair = render_pair(0, 2, False, 96)
    dx, dy = pair.shifts[1]
    a, b = pair.landcover
    h, w = a.shape
    # after pixel (y, x) shows the ground of before pixel (y + dy, x + dx); compare where both exist
    a_part = a[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
    b_part = b[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
    # shadows never change a class; only tree canopies (their light spot) may differ with the sun angle
    assert (a_part == b_part).mean() > 0.97
