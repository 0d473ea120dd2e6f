"""Land-cover classes of SynthCC single-date images and the lookup from the renderer's pixel classes.

The land-cover map of an image is its class canvas (``render.draw_classes``, cropped to the image's own window)
through :data:`LANDCOVER_LUT`: one ``np.take`` per image, no second rendering. Cast shadows live on a separate
canvas, so a shadowed pixel keeps the class of the ground, roof or canopy it falls on.

===  ===============  ====================================================================================
id   class            renderer classes (``classes.py``)
===  ===============  ====================================================================================
0    bare land        BARE (the land-cover field below the scene's grass level)
1    grass            GRASS, LAWN
2    trees            TREE, TREE_LIGHT (canopies), FOREST_FLOOR (the ground between the trees of woods)
3    water            WATER, SHORE (the wet bank ring belongs to the water body)
4    road             ROAD, CURB, DRIVEWAY (every paved way; driveways only exist beside roads)
5    building         every roof facet (ROOF0 ..), hip roofs and flat roofs alike
6    parking          PARKING, PAINT (stall lines), CAR0 .. (cars only stand in parking lots)
7    disturbed soil   SOIL (building lots, demolition and clearing sites)
===  ===============  ====================================================================================
"""

from __future__ import annotations

import numpy as np

from changecap.synth import classes as C

LANDCOVER_CLASSES: tuple[str, ...] = (
    "bare land",
    "grass",
    "trees",
    "water",
    "road",
    "building",
    "parking",
    "disturbed soil",
)
BARE_LAND, GRASS, TREES, WATER, ROAD, BUILDING, PARKING, DISTURBED_SOIL = range(len(LANDCOVER_CLASSES))

_SOURCES: dict[int, tuple[int, ...]] = {
    BARE_LAND: (C.BARE,),
    GRASS: (C.GRASS, C.LAWN),
    TREES: (C.TREE, C.TREE_LIGHT, C.FOREST_FLOOR),
    WATER: (C.WATER, C.SHORE),
    ROAD: (C.ROAD, C.CURB, C.DRIVEWAY),
    BUILDING: tuple(range(C.ROOF0, C.N_CLASSES)),
    PARKING: (C.PARKING, C.PAINT, *range(C.CAR0, C.CAR0 + C.N_CAR_COLORS)),
    DISTURBED_SOIL: (C.SOIL,),
}


def _lookup_table() -> np.ndarray:
    """``uint8 [256]`` renderer class -> land-cover id. Ids the renderer never draws (the gap between the car and
    roof classes) map to 255, which no reader accepts, so a new renderer class without a land-cover class shows."""
    lut = np.full(256, 255, np.uint8)
    for target, sources in _SOURCES.items():
        lut[list(sources)] = target
    return lut


LANDCOVER_LUT = _lookup_table()


def landcover_map(classes: np.ndarray) -> np.ndarray:
    """Land-cover ids ``uint8 [H, W]`` of a renderer class canvas ``uint8 [H, W]``."""
    return np.take(LANDCOVER_LUT, classes)


def class_pixels(landcover: np.ndarray) -> list[int]:
    """Pixels of each land-cover class in a map, in :data:`LANDCOVER_CLASSES` order."""
    return [int(np.count_nonzero(landcover == k)) for k in range(len(LANDCOVER_CLASSES))]  # 3x faster than bincount
