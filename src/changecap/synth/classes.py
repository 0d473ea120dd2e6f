"""Pixel classes of the SynthCC label canvas.

The renderer first draws every scene object as a small integer class into a ``uint8`` canvas and only then turns
classes into colours with one palette lookup (see ``render.colorize``); changing the season or the illumination of
an image is then a change of palette, never a redraw.
"""

from __future__ import annotations

BARE = 0  # bare land / dry soil (the default ground)
GRASS = 1  # grassland; where the scene's low-frequency land-cover field is above its level
SOIL = 2  # freshly disturbed soil: demolition and clearing sites, building lots
LAWN = 3  # mown lawn around houses
FOREST_FLOOR = 4  # dark ground under woods
SHORE = 5  # wet sand ring around water
WATER = 6
CURB = 7  # light concrete edge of a road
ROAD = 8  # asphalt
PARKING = 9  # parking-lot asphalt
PAINT = 10  # parking stall lines
DRIVEWAY = 11  # concrete driveways
TREE = 12  # tree canopy
TREE_LIGHT = 13  # sunlit part of a canopy
CAR0 = 14  # CAR0 .. CAR0 + N_CAR_COLORS - 1: car bodies
N_CAR_COLORS = 5
ROOF0 = 24  # ROOF0 + slot * N_SHADES + shade: roof facets
N_ROOF_SLOTS = 8
N_SHADES = 4
ROOF_SHADES: tuple[float, ...] = (0.64, 0.82, 1.0, 1.18)  # brightness of a facet facing away from .. towards the sun
N_CLASSES = ROOF0 + N_ROOF_SLOTS * N_SHADES  # 56

VEGETATION: tuple[int, ...] = (GRASS, LAWN, FOREST_FLOOR, TREE, TREE_LIGHT)


def roof_class(slot: int, shade: int) -> int:
    """Class id of roof colour ``slot`` at brightness level ``shade`` (0 darkest)."""
    return ROOF0 + slot * N_SHADES + shade
