"""Plane geometry helpers for the SynthCC layout (unit-square coordinates, x to the right, y down).

Everything here is small numpy arithmetic on a handful of points; rasterisation happens in ``render``.
"""

from __future__ import annotations

import numpy as np

# 3x3 location grid, row-major from the top-left; names are the values of the ``location`` field in synthcc_meta.json
# ("center" uses the LEVIR-CC spelling so that meta and captions agree).
GRID_LOCATIONS: tuple[tuple[str, str, str], ...] = (
    ("top-left", "top", "top-right"),
    ("left", "center", "right"),
    ("bottom-left", "bottom", "bottom-right"),
)
LOCATIONS: tuple[str, ...] = (*(name for row in GRID_LOCATIONS for name in row), "scene")
# When the changed objects spread over more than this share of the scene in BOTH directions, no single grid cell
# describes them and the location is "scene" ("across the scene").
SPREAD_EXTENT = 0.6


def grid_location(x: float, y: float) -> str:
    """Name of the 3x3 grid cell holding the point (x, y) of the unit square."""
    col = min(2, max(0, int(x * 3)))
    row = min(2, max(0, int(y * 3)))
    return GRID_LOCATIONS[row][col]


def cell_center(location: str) -> tuple[float, float]:
    """Centre of a named grid cell (the inverse of :func:`grid_location` for the nine cells)."""
    for r, row in enumerate(GRID_LOCATIONS):
        if location in row:
            return ((row.index(location) + 0.5) / 3, (r + 0.5) / 3)
    return (0.5, 0.5)


def objects_location(centers: np.ndarray) -> tuple[str, tuple[float, float], tuple[float, float]]:
    """Location name, centroid and extent of a group of object centres ``[K, 2]``.

    The location is the grid cell of the centroid, or ``"scene"`` when the group spans more than
    :data:`SPREAD_EXTENT` of the scene both horizontally and vertically.
    """
    c = centers.mean(axis=0)
    ext = centers.max(axis=0) - centers.min(axis=0)
    cx, cy, ex, ey = float(c[0]), float(c[1]), float(ext[0]), float(ext[1])
    loc = "scene" if ex > SPREAD_EXTENT and ey > SPREAD_EXTENT else grid_location(cx, cy)
    return loc, (round(cx, 4), round(cy, 4)), (round(ex, 4), round(ey, 4))


def unit(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle)])


def rect_corners(cx: float, cy: float, half_len: float, half_wid: float, angle: float) -> np.ndarray:
    """Corners ``[4, 2]`` of a rotated rectangle (long axis along ``angle``), in drawing order."""
    u = unit(angle) * half_len
    v = np.array([-np.sin(angle), np.cos(angle)]) * half_wid
    c = np.array([cx, cy])
    return np.stack([c + u + v, c - u + v, c - u - v, c + u - v])


def hip_roof_facets(
    cx: float, cy: float, half_len: float, half_wid: float, angle: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The four facets of a hip roof as (polygon ``[n, 2]``, outward unit normal ``[2]``) pairs.

    The ridge runs along the long axis at half-length ``half_len - half_wid``; the two long sides are trapezoids
    and the two ends triangles, so each facet can be shaded by how much it faces the sun.
    """
    u1 = unit(angle)
    v1 = np.array([-np.sin(angle), np.cos(angle)])
    c = np.array([cx, cy])
    u, v = u1 * half_len, v1 * half_wid
    r = u1 * max(half_len - half_wid, 0.0)
    p1, p2, p3, p4 = c + u + v, c - u + v, c - u - v, c + u - v
    r1, r2 = c + r, c - r
    return [
        (np.stack([p1, p2, r2, r1]), v1),
        (np.stack([p4, p3, r2, r1]), -v1),
        (np.stack([p1, p4, r1]), u1),
        (np.stack([p2, p3, r2]), -u1),
    ]


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull ``[h, 2]`` (counter-clockwise) of a few points ``[n, 2]`` by Andrew's monotone chain."""
    pts = sorted(map(tuple, points.tolist()))
    if len(pts) <= 2:
        return np.array(pts)

    def cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, float]] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple[float, float]] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


def shadow_polygon(footprint: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Ground shadow of a prism: the hull of its footprint and the footprint moved by the shadow vector."""
    return convex_hull(np.concatenate([footprint, footprint + offset]))


def quadratic_bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 17) -> np.ndarray:
    """``n`` points ``[n, 2]`` of the quadratic Bézier curve with control point ``p1``."""
    t = np.linspace(0.0, 1.0, n)[:, None]  # [n, 1]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def polyline_resample(points: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Points ``[m, 2]`` every ``step`` along a polyline and the unit tangents ``[m, 2]`` there."""
    seg = np.diff(points, axis=0)  # [n-1, 2]
    seg_len = np.linalg.norm(seg, axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])
    s = np.arange(0.0, cum[-1], step)
    idx = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(seg) - 1)
    frac = (s - cum[idx]) / np.maximum(seg_len[idx], 1e-12)
    pts = points[idx] + seg[idx] * frac[:, None]
    tangents = seg[idx] / np.maximum(seg_len[idx], 1e-12)[:, None]
    return pts, tangents


def blob_polygon(
    rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, n: int = 24, wobble: float = 0.18
) -> np.ndarray:
    """An irregular closed outline ``[n, 2]`` (ellipse with low-order radial noise): ponds, woods, clearings."""
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    radial = np.ones(n)
    for k in (2, 3, 5):
        radial += wobble / k * 1.6 * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    rot = rng.uniform(0, np.pi)
    x, y = rx * radial * np.cos(t), ry * radial * np.sin(t)
    return np.stack([cx + x * np.cos(rot) - y * np.sin(rot), cy + x * np.sin(rot) + y * np.cos(rot)], axis=1)


def inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd test of many points ``[m, 2]`` against one polygon ``[n, 2]`` (vectorised over points)."""
    x, y = points[:, 0:1], points[:, 1:2]  # [m, 1]
    x1, y1 = polygon[:, 0], polygon[:, 1]  # [n]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    crosses = (y1 > y) != (y2 > y)  # [m, n]
    with np.errstate(divide="ignore", invalid="ignore"):
        xint = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    return ((crosses & (x < xint)).sum(axis=1) % 2) == 1
