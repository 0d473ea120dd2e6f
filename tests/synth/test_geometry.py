"""Location grid and small geometry helpers."""

from __future__ import annotations

import numpy as np
import pytest

from changecap.synth.geometry import (
    cell_center,
    convex_hull,
    grid_location,
    hip_roof_facets,
    inside_polygon,
    objects_location,
    rect_corners,
)


@pytest.mark.parametrize(
    ("x", "y", "name"),
    [
        (0.1, 0.1, "top-left"),
        (0.5, 0.1, "top"),
        (0.9, 0.2, "top-right"),
        (0.2, 0.5, "left"),
        (0.5, 0.5, "center"),
        (0.8, 0.5, "right"),
        (0.1, 0.9, "bottom-left"),
        (0.5, 0.99, "bottom"),
        (1.0, 1.0, "bottom-right"),
    ],
)
def test_grid_location_and_cell_center_agree(x: float, y: float, name: str) -> None:
    assert grid_location(x, y) == name
    assert grid_location(*cell_center(name)) == name


def test_objects_location_uses_centroid_or_scene_when_spread() -> None:
    loc, centroid, extent = objects_location(np.array([[0.1, 0.8], [0.2, 0.9]]))
    assert loc == "bottom-left" and centroid == (0.15, 0.85) and extent == (0.1, 0.1)
    assert objects_location(np.array([[0.05, 0.05], [0.95, 0.95]]))[0] == "scene"
    # spread in one direction only: still a cell (a row of houses along the top)
    assert objects_location(np.array([[0.05, 0.1], [0.95, 0.15]]))[0] == "top"


def test_rectangle_and_hip_roof_cover_the_same_area() -> None:
    corners = rect_corners(0.5, 0.5, 0.2, 0.1, 0.3)

    def area(p: np.ndarray) -> float:
        x, y = p[:, 0], p[:, 1]
        return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))

    assert area(corners) == pytest.approx(0.4 * 0.2)
    facets = hip_roof_facets(0.5, 0.5, 0.2, 0.1, 0.3)
    assert len(facets) == 4
    assert sum(area(p) for p, _ in facets) == pytest.approx(area(corners))
    for poly, normal in facets:  # outward normals point away from the centre
        assert float((poly.mean(axis=0) - 0.5) @ normal) > 0


def test_convex_hull_and_point_in_polygon() -> None:
    pts = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]], float)
    hull = convex_hull(pts)
    assert len(hull) == 4
    inside = inside_polygon(np.array([[0.5, 0.5], [1.5, 0.5], [0.1, 0.9]]), hull)
    assert inside.tolist() == [True, False, True]
