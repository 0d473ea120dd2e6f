"""SynthCC scene layout: what is where before and after, and the ground-truth change events.

A :class:`Scene` is a list of objects in the unit square (1 unit = 128 m), each with a ``state``: ``static``
(in both images), ``before`` (only in the before image: demolished, cleared) or ``after`` (only in the after image:
built, dug). The change events that the captions describe are computed from the objects actually placed, never
from the intention, so the captions cannot claim a count or a location the pixels do not show.

Planning order: the land-cover field, the roads (static network, then new roads), the changed objects, and last the
static filler (houses along roads, clusters, woods, scattered trees, parking lots, ponds) in the space that is left.
An occupancy grid keeps objects from overlapping; changed objects are kept fully inside the tile so they can be
counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image

from changecap.synth import classes as C
from changecap.synth.geometry import (
    blob_polygon,
    inside_polygon,
    objects_location,
    polyline_resample,
    quadratic_bezier,
    rect_corners,
)

State = Literal["static", "before", "after"]

# Change recipes of changed pairs and their probabilities (buildings appearing dominate, as in LEVIR-CC).
RECIPES: dict[str, float] = {
    "build": 0.36,  # buildings appear on open land or along an existing road
    "road_build": 0.14,  # a new road and buildings along it
    "road": 0.10,  # a new road
    "demolish": 0.10,  # buildings disappear
    "clear": 0.08,  # trees / woods removed
    "clear_build": 0.09,  # trees replaced by buildings
    "water": 0.08,  # a pond or lake appears
    "road_clear": 0.05,  # a road cut through woods
}
ROAD_SHAPES: dict[str, float] = {"straight": 0.35, "curved": 0.3, "t-shaped": 0.15, "crossroad": 0.1, "branch": 0.1}

GRID = 100  # occupancy cells per unit
# Occupancy bits.
OCC_ROAD, OCC_BUILDING, OCC_WATER, OCC_PARKING, OCC_TREE, OCC_RESERVED = 1, 2, 4, 8, 16, 32
OCC_HARD = OCC_ROAD | OCC_BUILDING | OCC_WATER | OCC_PARKING | OCC_RESERVED
INNER = 0.04  # changed objects stay this far inside the tile border

# The land-cover field is a sum of bicubic upsamplings of random grids (cells per 1.5 units, weight): large patches
# with ragged edges.
LANDCOVER_OCTAVES: tuple[tuple[int, float], ...] = ((5, 1.0), (14, 0.35))


class PlacementError(RuntimeError):
    """A recipe found no room in this layout; the planner retries with the next attempt's random stream."""


@dataclass
class Building:
    cx: float
    cy: float
    half_len: float  # along ``angle``; always >= half_wid
    half_wid: float
    angle: float
    kind: str  # "house" (hip roof) or "large" (flat roof)
    roof: int  # roof colour slot
    height: float  # shadow length in units
    state: State = "static"

    def corners(self) -> np.ndarray:
        return rect_corners(self.cx, self.cy, self.half_len, self.half_wid, self.angle)


@dataclass
class Road:
    points: np.ndarray  # [n, 2] centre line
    width: float  # asphalt width; the curb adds 40 %
    state: State = "static"


@dataclass
class Tree:
    cx: float
    cy: float
    r: float
    state: State = "static"


@dataclass
class Patch:
    """A filled ground polygon of one class (lawn, soil, forest floor, shore, water) or a line (driveway)."""

    polygon: np.ndarray  # [n, 2]; for lines the polyline
    cls: int
    state: State = "static"
    line_width: float = 0.0  # > 0: drawn as a polyline of this width


@dataclass
class ParkingLot:
    cx: float
    cy: float
    half_len: float
    half_wid: float
    angle: float
    cars: list[tuple[float, float, int]]  # (along, across) offsets in the lot frame, colour index
    state: State = "static"


@dataclass
class Scene:
    """Everything needed to render both images and the change mask of one pair."""

    landcover: list[np.ndarray]  # one [g + 1, g + 1] random grid per LANDCOVER_OCTAVES entry
    grass_level: float  # land cover is grass where the upsampled field exceeds this level
    shadow_angle: float  # direction shadows are cast (radians, y down)
    roof_colors: list[int]  # palette index of each roof slot (see render.ROOF_COLORS)
    recipe: str = "none"
    ground: list[Patch] = field(default_factory=list)
    roads: list[Road] = field(default_factory=list)
    lots: list[ParkingLot] = field(default_factory=list)
    buildings: list[Building] = field(default_factory=list)
    trees: list[Tree] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def visible(state: State, when: str) -> bool:
    """Whether an object with ``state`` is in the before (``"A"``) or after (``"B"``) image."""
    return state == "static" or (state == "before" and when == "A") or (state == "after" and when == "B")


def landcover_field(octaves: list[np.ndarray], n: int, offset: float = 0.0, scale: float | None = None) -> np.ndarray:
    """Land-cover field ``[n, n]`` over the unit square from the scene's random grids (``LANDCOVER_OCTAVES``).

    ``offset``/``scale`` map pixel indices to unit coordinates (pixel ``i`` covers ``offset + i * scale`` to
    ``offset + (i + 1) * scale``; the renderer's canvas has a margin around the tile). Each grid spans
    [-0.25, 1.25], is upsampled bicubically to a fine grid once and then sampled bilinearly at the pixel centres
    (Pillow's resize with a source box), so the value at a ground point does not depend on ``n``: the planner samples
    the same field on its occupancy grid, and "on the bareland" in a caption agrees with the rendered ground.
    """
    scale = 1.0 / n if scale is None else scale
    out = np.zeros((n, n), np.float32)
    for values, (_, weight) in zip(octaves, LANDCOVER_OCTAVES):
        big = 4 * values.shape[0]
        fine = Image.fromarray(values.astype(np.float32), mode="F").resize((big, big), Image.Resampling.BICUBIC)
        lo, hi = (offset + 0.25) / 1.5 * big, (offset + n * scale + 0.25) / 1.5 * big  # tile span on the fine grid
        out += weight * np.asarray(fine.resize((n, n), Image.Resampling.BILINEAR, box=(lo, lo, hi, hi)))
    return out


class Occupancy:
    """Coarse bit grid over the unit square telling which kinds of object already cover each cell."""

    def __init__(self) -> None:
        self.grid = np.zeros((GRID, GRID), np.uint8)

    @staticmethod
    def _cells(x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice]:
        c0, c1 = max(0, int(x0 * GRID)), min(GRID, int(math.ceil(x1 * GRID)))
        r0, r1 = max(0, int(y0 * GRID)), min(GRID, int(math.ceil(y1 * GRID)))
        return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))

    def free(self, box: tuple[float, float, float, float], bits: int) -> bool:
        rs, cs = self._cells(*box)
        return not bool((self.grid[rs, cs] & bits).any())

    def mark(self, box: tuple[float, float, float, float], bits: int) -> None:
        rs, cs = self._cells(*box)
        self.grid[rs, cs] |= bits

    def mark_polyline(self, points: np.ndarray, half_width: float, bits: int) -> None:
        pts, _ = polyline_resample(points, max(half_width, 0.01))
        for x, y in np.concatenate([pts, points[-1:]]):
            self.mark((x - half_width, y - half_width, x + half_width, y + half_width), bits)

    def mark_polygon(self, polygon: np.ndarray, bits: int) -> None:
        lo, hi = polygon.min(axis=0), polygon.max(axis=0)
        rs, cs = self._cells(lo[0], lo[1], hi[0], hi[1])
        if rs.stop <= rs.start or cs.stop <= cs.start:
            return
        yy, xx = np.mgrid[rs, cs]
        centers = np.stack([(xx.ravel() + 0.5) / GRID, (yy.ravel() + 0.5) / GRID], axis=1)  # [cells, 2]
        inside = inside_polygon(centers, polygon).reshape(yy.shape)
        self.grid[rs, cs] |= np.where(inside, bits, 0).astype(np.uint8)


def _box(corners: np.ndarray, pad: float) -> tuple[float, float, float, float]:
    lo, hi = corners.min(axis=0) - pad, corners.max(axis=0) + pad
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


def _inside_tile(corners: np.ndarray, inner: float = INNER) -> bool:
    return bool((corners >= inner).all() and (corners <= 1 - inner).all())


def _pick(rng: np.random.Generator, table: dict[str, float]) -> str:
    keys = list(table)
    p = np.array([table[k] for k in keys])
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _count_for(rng: np.random.Generator, weights: tuple[float, float, float, float], many_max: int = 12) -> int:
    """Draw a target count from the weights of the classes 1 / 2 / 3-5 / 6+ (the caption count words)."""
    cls = int(rng.choice(4, p=np.array(weights) / sum(weights)))
    return (1, 2, int(rng.integers(3, 6)), int(rng.integers(6, many_max + 1)))[cls]


class Planner:
    """Builds one :class:`Scene` from a random stream; see the module docstring for the order of steps."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.occ = Occupancy()
        n_roofs = C.N_ROOF_SLOTS
        self.scene = Scene(
            landcover=[rng.standard_normal((g + 1, g + 1)).astype(np.float32) for g, _ in LANDCOVER_OCTAVES],
            grass_level=float(rng.uniform(-0.9, 0.9)),
            shadow_angle=float(rng.uniform(0.15, 0.85) * np.pi + (np.pi if rng.random() < 0.15 else 0.0)),
            roof_colors=[int(v) for v in rng.permutation(12)[:n_roofs]],
        )
        self._lc_fine: np.ndarray | None = None
        self._road_pts = np.zeros((0, 2))  # [m, 2] samples of every road centre line
        self._road_clear = np.zeros(0)  # [m] distance a footprint must keep from each sample (curb half-width)
        self.shadow_len = float(rng.uniform(0.6, 1.0))  # sun elevation: scales every shadow

    # ------------------------------------------------------------------ queries
    def surface_at(self, points: np.ndarray) -> list[str]:
        """Land cover ("bareland" / "grass" / "unsure") under points ``[K, 2]`` of the before image.

        Points within a small margin of the grass level are "unsure" (the rendered boundary may fall either side).
        """
        if self._lc_fine is None:
            self._lc_fine = landcover_field(self.scene.landcover, GRID)
        ij = np.clip((points * GRID).astype(int), 0, GRID - 1)
        v = self._lc_fine[ij[:, 1], ij[:, 0]] - self.scene.grass_level
        return ["grass" if d > 0.12 else "bareland" if d < -0.12 else "unsure" for d in v]

    # ------------------------------------------------------------------ roads
    def _edge_point(self, edge: int, t: float) -> np.ndarray:
        """A point just outside the tile on edge 0 top, 1 right, 2 bottom, 3 left at position ``t`` along it."""
        return np.array([(t, -0.12), (1.12, t), (t, 1.12), (-0.12, t)][edge])

    def road_polylines(self, shape: str) -> list[np.ndarray]:
        """Centre lines of a new road network of the given shape (edge to edge, so it is "across the scene")."""
        rng = self.rng
        if shape in ("straight", "t-shaped", "crossroad"):
            horizontal = rng.random() < 0.5
            a, b = rng.uniform(0.2, 0.8), None
            b = float(np.clip(a + rng.uniform(-0.15, 0.15), 0.15, 0.85))
            main = np.array([[-0.12, a], [1.12, b]]) if horizontal else np.array([[a, -0.12], [b, 1.12]])
            lines = [main]
            if shape == "t-shaped":
                lines.append(self._branch(main))
            elif shape == "crossroad":
                c = rng.uniform(0.25, 0.75)
                d = float(np.clip(c + rng.uniform(-0.12, 0.12), 0.15, 0.85))
                lines.append(np.array([[c, -0.12], [d, 1.12]]) if horizontal else np.array([[-0.12, c], [1.12, d]]))
            return lines
        # curved: enter on one edge, leave on another, bend through a control point inside the tile
        e0 = int(rng.integers(4))
        e1 = (e0 + int(rng.choice([1, 2, 3]))) % 4
        p0, p2 = self._edge_point(e0, rng.uniform(0.15, 0.85)), self._edge_point(e1, rng.uniform(0.15, 0.85))
        p1 = rng.uniform(0.2, 0.8, size=2)
        mid = (p0 + p2) / 2
        if np.linalg.norm(p1 - mid) < 0.2:  # make the bend visible
            p1 = mid + (p1 - mid + 1e-3) / (np.linalg.norm(p1 - mid) + 1e-3) * 0.3
        return [quadratic_bezier(p0, p1, p2)]

    def _branch(self, main: np.ndarray) -> np.ndarray:
        """A straight road leaving ``main`` at a right angle from a point in its middle part to the tile edge."""
        rng = self.rng
        pts, tangents = polyline_resample(main, 0.02)
        inside = np.flatnonzero((pts.min(axis=1) > 0.3) & (pts.max(axis=1) < 0.7))
        i = int(rng.choice(inside)) if len(inside) else len(pts) // 2
        p, t = pts[i], tangents[i]
        n = np.array([-t[1], t[0]]) * (1 if rng.random() < 0.5 else -1)
        return np.stack([p, p + n * 1.6])

    def add_road(self, points: np.ndarray, state: State, width: float | None = None) -> Road:
        w = float(self.rng.uniform(0.05, 0.065)) if width is None else width
        road = Road(points=points, width=w, state=state)
        self.scene.roads.append(road)
        self.occ.mark_polyline(points, w * 0.7 + 0.01, OCC_ROAD)
        pts, _ = polyline_resample(points, 0.01)
        self._road_pts = np.concatenate([self._road_pts, pts])
        self._road_clear = np.concatenate([self._road_clear, np.full(len(pts), w * 0.7 + 0.006)])
        return road

    def clear_of_roads(self, corners: np.ndarray) -> bool:
        """Whether a footprint ``[4, 2]`` (its corners, edge midpoints and centre) keeps off every road's curb."""
        if not len(self._road_pts):
            return True
        probe = np.concatenate([corners, (corners + np.roll(corners, 1, axis=0)) / 2, corners.mean(0, keepdims=True)])
        d = np.hypot(probe[:, None, 0] - self._road_pts[None, :, 0], probe[:, None, 1] - self._road_pts[None, :, 1])
        return bool((d > self._road_clear[None, :]).all())  # [9, m] distances

    # ------------------------------------------------------------------ buildings
    def house_dims(self, kind: str) -> tuple[float, float, float]:
        """Half-length, half-width and shadow length of a new building of ``kind``."""
        rng = self.rng
        if kind == "large":
            hl, hw, h = rng.uniform(0.09, 0.15), rng.uniform(0.06, 0.085), rng.uniform(0.03, 0.045)
        else:  # houses / villas: 13-18 m x 9-13 m, i.e. >= 6 px long at 64 px
            hl, hw, h = rng.uniform(0.05, 0.07), rng.uniform(0.036, 0.05), rng.uniform(0.018, 0.026)
        return float(max(hl, hw)), float(min(hl, hw)), float(h * self.shadow_len)

    def try_building(
        self,
        cx: float,
        cy: float,
        kind: str,
        angle: float,
        roof: int,
        state: State,
        *,
        avoid: int = OCC_HARD | OCC_TREE,
        inner: float | None = INNER,
        pad: float = 0.012,
        dims: tuple[float, float, float] | None = None,
    ) -> Building | None:
        """Place a building if its footprint is free (and inside the tile when ``inner`` is set)."""
        hl, hw, h = self.house_dims(kind) if dims is None else dims
        b = Building(cx, cy, hl, hw, angle, kind, roof, h, state)
        corners = b.corners()
        if inner is not None and not _inside_tile(corners, inner):
            return None
        if not self.occ.free(_box(corners, pad), avoid):
            return None
        if not avoid & OCC_ROAD and not self.clear_of_roads(corners):
            return None
        self.occ.mark(_box(corners, 0.004), OCC_BUILDING)
        self.scene.buildings.append(b)
        return b

    def cluster(
        self,
        center: tuple[float, float],
        k: int,
        kind: str,
        state: State,
        *,
        avoid: int = OCC_HARD | OCC_TREE,
        inner: float | None = INNER,
    ) -> list[Building]:
        """Up to ``k`` buildings on a jittered grid around ``center`` (a subdivision: shared orientation)."""
        rng = self.rng
        angle = float(rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.08))
        hl, hw, _ = self.house_dims(kind)
        gap = rng.uniform(0.025, 0.05)
        sx, sy = 2 * hl + gap, 2 * hw + gap * 1.6
        nx = ny = int(math.ceil(math.sqrt(k))) + 1
        gx, gy = np.meshgrid(np.arange(nx) - (nx - 1) / 2, np.arange(ny) - (ny - 1) / 2)
        local = np.stack([gx.ravel() * sx, gy.ravel() * sy], axis=1)  # [nx*ny, 2] in the cluster frame
        ca, sa = math.cos(angle), math.sin(angle)
        world = local @ np.array([[ca, sa], [-sa, ca]]) + np.asarray(center)  # rotate, then move
        world += rng.normal(0, 0.006, size=world.shape)
        order = np.argsort(np.linalg.norm(world - np.asarray(center), axis=1) + rng.uniform(0, 0.03, len(world)))
        roofs = [int(rng.integers(C.N_ROOF_SLOTS)) for _ in range(2)]
        placed: list[Building] = []
        for i in order:
            if len(placed) == k:
                break
            dims = self.house_dims(kind)
            b = self.try_building(
                float(world[i, 0]),
                float(world[i, 1]),
                kind,
                angle + rng.normal(0, 0.03),
                roofs[int(rng.random() < 0.3)],
                state,
                avoid=avoid,
                inner=inner,
                dims=dims,
            )
            if b is not None:
                placed.append(b)
        return placed

    def along_road(
        self, road: Road, k: int, state: State, *, both_sides: bool, kind: str = "house", inner: float | None = INNER
    ) -> list[Building]:
        """Up to ``k`` houses facing ``road`` in a contiguous stretch, one or both sides, with driveways."""
        rng = self.rng
        hl, hw, _ = self.house_dims(kind)
        spacing = 2 * hl + rng.uniform(0.025, 0.05)
        pts, tangents = polyline_resample(road.points, spacing)
        sides = [1, -1] if both_sides else [int(rng.choice([1, -1]))]
        setback = road.width * 0.7 + rng.uniform(0.02, 0.035)
        candidates: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        for i, (p, t) in enumerate(zip(pts, tangents)):
            n = np.array([-t[1], t[0]])
            for s in sides:
                candidates.append((i, s, p, n * s))
        start = int(rng.integers(len(pts))) if len(pts) else 0
        order = sorted(range(len(candidates)), key=lambda j: (abs(candidates[j][0] - start), j))  # contiguous stretch
        roof = int(rng.integers(C.N_ROOF_SLOTS))
        placed: list[Building] = []
        for j in order:
            if len(placed) == k:
                break
            _, _, p, n = candidates[j]
            dims = self.house_dims(kind)
            c = p + n * (setback + dims[1])
            angle = math.atan2(n[0], -n[1])  # long axis parallel to the road
            # Road bits of the coarse grid would reject every house close to a diagonal road: check the exact
            # distance to the road centre lines instead (try_building does when OCC_ROAD is not avoided).
            b = self.try_building(
                float(c[0]),
                float(c[1]),
                kind,
                angle,
                roof,
                state,
                inner=inner,
                dims=dims,
                avoid=(OCC_HARD | OCC_TREE) & ~OCC_ROAD,
            )
            if b is not None:
                placed.append(b)
                drive_end = p + n * (road.width * 0.5)
                self.scene.ground.append(
                    Patch(np.stack([c, drive_end]), C.DRIVEWAY, state, line_width=b.half_wid * 0.55)
                )
        return placed

    def lawns(self, buildings: list[Building], state: State) -> None:
        """Lawn rectangles around houses (the garden parcel of a suburban lot)."""
        for b in buildings:
            if b.kind != "house":
                continue
            poly = rect_corners(b.cx, b.cy, b.half_len + 0.022, b.half_wid + 0.02, b.angle)
            self.scene.ground.insert(0, Patch(poly, C.LAWN, state))

    # ------------------------------------------------------------------ vegetation and water
    def woods(
        self,
        center: tuple[float, float],
        radius: float,
        state_of: Callable[[float, float], State] | None = None,
        avoid: int = OCC_HARD,
    ) -> tuple[np.ndarray, list[Tree]]:
        """A patch of woods: an irregular floor polygon densely filled with trees (all ``static`` by default)."""
        rng = self.rng
        poly = blob_polygon(rng, center[0], center[1], radius, radius * rng.uniform(0.6, 1.0))
        lo, hi = poly.min(axis=0), poly.max(axis=0)
        spacing = rng.uniform(0.028, 0.038)
        gx, gy = np.meshgrid(np.arange(lo[0], hi[0], spacing), np.arange(lo[1], hi[1], spacing * 0.87))
        gx = gx + (np.arange(gx.shape[0])[:, None] % 2) * spacing / 2  # hexagonal packing
        pts = np.stack([gx.ravel(), gy.ravel()], axis=1) + rng.normal(0, spacing * 0.18, (gx.size, 2))
        pts = pts[inside_polygon(pts, poly)]
        pts = pts[rng.random(len(pts)) < rng.uniform(0.7, 0.95)]
        radii = rng.uniform(0.45, 0.7, len(pts)) * spacing * 1.2
        ok = self._free_points(pts, radii * 0.5, avoid)
        pts, radii = pts[ok], radii[ok]
        trees = [
            Tree(x, y, r, "static" if state_of is None else state_of(x, y))
            for (x, y), r in zip(pts.tolist(), radii.tolist())
        ]
        static = np.array([t.state == "static" for t in trees], bool)
        self._mark_points(pts[static], radii[static] * 0.6, OCC_TREE)
        self.scene.trees.extend(trees)
        return poly, trees

    def _free_points(self, pts: np.ndarray, half: np.ndarray, avoid: int) -> np.ndarray:
        """Which points ``[n, 2]`` have the corners and centre of their box (half size ``half`` ``[n]``) free of
        ``avoid``: a vectorised, slightly looser :meth:`Occupancy.free` for small objects (trees). Bool ``[n]``."""
        ok = np.ones(len(pts), bool)
        for dx, dy in ((0, 0), (-1, -1), (-1, 1), (1, -1), (1, 1)):
            cells = np.clip(((pts + np.stack([dx * half, dy * half], axis=1)) * GRID).astype(int), 0, GRID - 1)
            ok &= (self.occ.grid[cells[:, 1], cells[:, 0]] & avoid) == 0
        return ok

    def _mark_points(self, pts: np.ndarray, half: np.ndarray, bits: int) -> None:
        """Vectorised :meth:`Occupancy.mark` of the box corners and centres of small objects ``[n, 2]``."""
        for dx, dy in ((0, 0), (-1, -1), (-1, 1), (1, -1), (1, 1)):
            cells = np.clip(((pts + np.stack([dx * half, dy * half], axis=1)) * GRID).astype(int), 0, GRID - 1)
            np.bitwise_or.at(self.occ.grid, (cells[:, 1], cells[:, 0]), np.uint8(bits))

    def scattered_trees(
        self,
        n: int,
        state: State = "static",
        box: tuple[float, float, float, float] | None = None,
        avoid: int = OCC_HARD,
    ) -> list[Tree]:
        """Up to ``n`` single trees at random free places in ``box`` (default: the tile and a little beyond)."""
        rng = self.rng
        x0, y0, x1, y1 = (-0.03, -0.03, 1.03, 1.03) if box is None else box
        pts = np.stack([rng.uniform(x0, x1, 2 * n), rng.uniform(y0, y1, 2 * n)], axis=1)  # [2n, 2] candidates
        radii = rng.uniform(0.014, 0.03, 2 * n)
        ok = self._free_points(pts, radii, avoid)
        pts, radii = pts[ok], radii[ok]
        pts, radii = pts[:n], radii[:n]
        out = [Tree(x, y, r, state) for (x, y), r in zip(pts.tolist(), radii.tolist())]
        self._mark_points(pts, radii * 0.6, OCC_TREE)
        self.scene.trees.extend(out)
        return out

    def pond(self, center: tuple[float, float], radius: float, state: State, inner: float | None) -> np.ndarray | None:
        rng = self.rng
        poly = blob_polygon(rng, center[0], center[1], radius, radius * rng.uniform(0.55, 0.9), wobble=0.12)
        shore = center + (poly - center) * 1.12
        if inner is not None and not _inside_tile(shore, inner):
            return None
        if not self.occ.free(_box(shore, 0.01), OCC_HARD | OCC_TREE):
            return None
        self.occ.mark_polygon(shore, OCC_WATER)
        self.scene.ground.append(Patch(shore, C.SHORE, state))
        self.scene.ground.append(Patch(poly, C.WATER, state))
        return poly

    def parking_lot(self, center: tuple[float, float], state: State) -> bool:
        """A large flat-roofed building with a parking lot beside it (commercial plot)."""
        rng = self.rng
        angle = float(rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.05))
        hl, hw = rng.uniform(0.1, 0.16), rng.uniform(0.06, 0.09)
        v = np.array([-math.sin(angle), math.cos(angle)])
        c = np.asarray(center)
        lot_hw = rng.uniform(0.05, 0.08)
        lot_c = c + v * (hw + lot_hw + 0.015)
        lot_corners = rect_corners(float(lot_c[0]), float(lot_c[1]), hl, lot_hw, angle)
        b_corners = rect_corners(float(c[0]), float(c[1]), hl, hw, angle)
        both = np.concatenate([lot_corners, b_corners])
        if not self.occ.free(_box(both, 0.01), OCC_HARD | OCC_TREE):
            return False
        dims = (float(hl), float(hw), float(rng.uniform(0.03, 0.045) * self.shadow_len))
        self.try_building(
            float(c[0]), float(c[1]), "large", angle, int(rng.integers(C.N_ROOF_SLOTS)), state, inner=None, dims=dims
        )
        cars: list[tuple[float, float, int]] = []
        stall = 0.024
        for row in (-1, 1):
            for along in np.arange(-hl + stall, hl - stall / 2, stall):
                if rng.random() < rng.uniform(0.3, 0.7):
                    cars.append((float(along), float(row * lot_hw * 0.55), int(rng.integers(C.N_CAR_COLORS))))
        self.scene.lots.append(ParkingLot(float(lot_c[0]), float(lot_c[1]), hl, lot_hw, angle, cars, state))
        self.occ.mark(_box(lot_corners, 0.004), OCC_PARKING)
        return True

    # ------------------------------------------------------------------ events
    def building_event(self, placed: list[Building], action: str, **extra: Any) -> dict[str, Any]:
        centers = np.array([[b.cx, b.cy] for b in placed])
        loc, centroid, extent = objects_location(centers)
        kinds = {b.kind for b in placed}
        surface = None
        if action == "appear" and "surface" not in extra:
            surface = _common_surface(self.surface_at(centers))
        event: dict[str, Any] = {
            "type": "building",
            "action": action,
            "count": len(placed),
            "kind": "large" if kinds == {"large"} else "house",
            "location": loc,
            "centroid": list(centroid),
            "extent": list(extent),
            "surface": surface,
            "along_road": False,
            "both_sides": False,
            "new_road": False,
        }
        event.update(extra)
        return event


def _target(rng: np.random.Generator, k: int) -> tuple[float, float]:
    """A cluster centre: any of the nine cells for small groups, nearer the middle for big ones (they need room)."""
    lo, hi = (0.12, 0.88) if k <= 2 else (0.18, 0.82) if k <= 5 else (0.26, 0.74)
    return float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))


def _road_event(roads: list[Road], shape: str, **extra: Any) -> dict[str, Any]:
    pts = np.concatenate([polyline_resample(r.points, 0.02)[0] for r in roads])
    pts = pts[(pts >= 0).all(axis=1) & (pts <= 1).all(axis=1)]  # the visible part
    loc, centroid, extent = objects_location(pts)
    # A road running out of the tile on two opposite sides goes "across the scene". Its grid cell is kept only when
    # the whole road stays within a third of the tile across its direction (a road "at the top").
    across = bool(max(extent) > 0.8)
    if across and min(extent) > 0.34:
        loc = "scene"
    event = {
        "type": "road",
        "action": "appear",
        "count": len(roads),
        "shape": shape,
        "location": loc,
        "centroid": list(centroid),
        "extent": list(extent),
        "across": across,
    }
    event.update(extra)
    return event


def _tree_event(trees: list[Tree], forest: bool) -> dict[str, Any]:
    pts = np.array([[t.cx, t.cy] for t in trees])
    pts = np.clip(pts, 0, 1)
    loc, centroid, extent = objects_location(pts)
    return {
        "type": "vegetation",
        "action": "disappear",
        "count": len(trees),
        "forest": forest,
        "location": loc,
        "centroid": list(centroid),
        "extent": list(extent),
    }


def _common_surface(labels: list[str]) -> str | None:
    """The surface shared by all points ("bareland" / "grass"), or None when they differ or one is unsure."""
    kinds = set(labels)
    return kinds.pop() if len(kinds) == 1 and "unsure" not in kinds else None


def _recipe_road(p: Planner, recipe: str) -> None:
    """``road``, ``road_build`` and ``road_clear``: a new road network, with houses along it or cut through woods."""
    rng, sc = p.rng, p.scene
    shape = _pick(rng, ROAD_SHAPES)
    if recipe == "road_clear" and shape == "branch":
        shape = "straight"  # woods cut by a road; an old road would have to go through them too
    if shape == "branch":  # a new road joining an existing one
        old = p.add_road(p.road_polylines("straight")[0], "static")
        new_lines = [p._branch(old.points)]
    else:
        new_lines = p.road_polylines(shape)
    width = float(rng.uniform(0.05, 0.065))
    new_roads = [p.add_road(line, "after", width) for line in new_lines]
    if recipe == "road_clear":
        removed = _woods_across(p, new_roads)
        sc.events.append(_road_event(new_roads, shape, through="trees", surface=None))
        sc.events.append(_tree_event(removed, forest=True))
        return
    on = np.concatenate([polyline_resample(r.points, 0.05)[0] for r in new_roads]).clip(0, 1)  # [m, 2]
    sc.events.append(_road_event(new_roads, shape, surface=_common_surface(p.surface_at(on))))
    if recipe == "road_build":
        k = _count_for(rng, (0.0, 0.15, 0.35, 0.5))
        both = bool(rng.random() < 0.5) and k >= 2
        placed = p.along_road(new_roads[0], k, "after", both_sides=both)
        if len(new_roads) > 1 and len(placed) < k:
            placed += p.along_road(new_roads[1], k - len(placed), "after", both_sides=both)
        if not placed:
            raise PlacementError("no room along the new road")
        p.lawns(placed, "after")
        sides = {_side_of(new_roads[0], b) for b in placed}
        sc.events.append(
            p.building_event(placed, "appear", along_road=True, both_sides=len(sides) == 2, new_road=True, surface=None)
        )


def _woods_across(p: Planner, new_roads: list[Road]) -> list[Tree]:
    """Woods around a point of the new road; the trees on its corridor are cut down (returned)."""
    rng = p.rng
    pts, _ = polyline_resample(new_roads[0].points, 0.02)
    pts = pts[(pts > 0.3).all(axis=1) & (pts < 0.7).all(axis=1)]
    if not len(pts):
        raise PlacementError("road misses the middle of the tile")
    c = pts[int(rng.integers(len(pts)))]
    corridor = max(r.width for r in new_roads) * 0.7 + 0.02
    road_pts = np.concatenate([polyline_resample(r.points, 0.01)[0] for r in new_roads])  # [m, 2]

    def state_of(x: float, y: float) -> State:
        near = np.min(np.hypot(road_pts[:, 0] - x, road_pts[:, 1] - y)) < corridor
        return "before" if near else "static"

    # The woods grow over the future road corridor (they ignore the road's occupancy).
    poly, trees = p.woods(
        (float(c[0]), float(c[1])),
        float(rng.uniform(0.2, 0.3)),
        state_of=state_of,
        avoid=OCC_HARD & ~(OCC_RESERVED | OCC_ROAD),
    )
    p.scene.ground.insert(0, Patch(poly, C.FOREST_FLOOR, "static"))
    removed = [t for t in trees if t.state == "before" and 0 <= t.cx <= 1 and 0 <= t.cy <= 1]
    if len(removed) < 3:
        raise PlacementError("too few trees on the road corridor")
    return removed


def _recipe_build(p: Planner, recipe: str) -> None:
    """``build``: houses (or one or two large buildings) appear along an existing road or in a cluster."""
    rng, sc = p.rng, p.scene
    kind = "large" if rng.random() < 0.12 else "house"
    k = _count_for(rng, (0.22, 0.2, 0.3, 0.28)) if kind == "house" else int(rng.integers(1, 3))
    if sc.roads and kind == "house" and rng.random() < 0.5:
        road = sc.roads[int(rng.integers(len(sc.roads)))]
        both = bool(rng.random() < 0.4) and k >= 2
        placed = p.along_road(road, k, "after", both_sides=both)
        if placed:
            if rng.random() < 0.6:
                p.lawns(placed, "after")
            sides = {_side_of(road, b) for b in placed}
            sc.events.append(p.building_event(placed, "appear", along_road=True, both_sides=len(sides) == 2))
            return
    for _ in range(4):
        placed = p.cluster(_target(rng, k), k, kind, "after")
        if placed:
            break
    else:
        raise PlacementError("no room for the new buildings")
    event = p.building_event(placed, "appear")
    if rng.random() < 0.5:
        p.lawns(placed, "after")
    elif event["surface"] == "grass" or rng.random() < 0.5:
        _lots(p, placed, C.SOIL, "after")
    sc.events.append(event)


def _recipe_demolish(p: Planner, recipe: str) -> None:
    """``demolish``: buildings along a road or in a cluster disappear, leaving bare soil."""
    rng, sc = p.rng, p.scene
    k = _count_for(rng, (0.35, 0.3, 0.25, 0.1), many_max=8)
    if sc.roads and rng.random() < 0.5:
        road = sc.roads[int(rng.integers(len(sc.roads)))]
        placed = p.along_road(road, k, "before", both_sides=bool(rng.random() < 0.4))
    else:
        placed = p.cluster(_target(rng, k), k, "house" if rng.random() < 0.85 else "large", "before")
    if not placed:
        raise PlacementError("no room for the demolished buildings")
    p.lawns(placed, "static")
    _lots(p, placed, C.SOIL, "after", grow=0.012)
    sc.events.append(p.building_event(placed, "disappear"))


def _recipe_clear(p: Planner, recipe: str) -> None:
    """``clear`` and ``clear_build``: woods or a grove are cut down, and possibly replaced by houses."""
    rng, sc = p.rng, p.scene
    k = _count_for(rng, (0.2, 0.25, 0.35, 0.2)) if recipe == "clear_build" else 0
    forest = recipe == "clear_build" or rng.random() < 0.6
    if forest:  # a patch of woods, cleared to bare soil
        radius = float(rng.uniform(0.13, 0.2)) if k < 6 else float(rng.uniform(0.2, 0.26))
    else:  # a grove of a few trees, leaving soil where they stood
        radius = float(rng.uniform(0.07, 0.11))
    for _ in range(6):
        cx, cy = _target(rng, 3 if radius < 0.17 else 6)
        core = radius * 0.6
        if p.occ.free((cx - core, cy - core, cx + core, cy + core), OCC_HARD | OCC_TREE):
            break
    else:
        raise PlacementError("no room for the woods")
    poly, trees = p.woods((cx, cy), radius, state_of=lambda x, y: "before", avoid=OCC_HARD | OCC_TREE)
    trees = [t for t in trees if 0 <= t.cx <= 1 and 0 <= t.cy <= 1]
    if forest:
        sc.ground.append(Patch(poly, C.FOREST_FLOOR, "before"))
        sc.ground.append(Patch(poly, C.SOIL, "after"))
    else:
        for t in trees:
            sc.ground.append(Patch(blob_polygon(rng, t.cx, t.cy, t.r * 1.1, t.r * 0.9, n=10), C.SOIL, "after"))
    p.occ.mark_polygon(poly, OCC_RESERVED)
    if len(trees) < 3:
        raise PlacementError("too few trees to clear")
    sc.events.append(_tree_event(trees, forest=forest))
    if recipe == "clear_build":
        placed = p.cluster((cx, cy), k, "house", "after", avoid=OCC_HARD & ~OCC_RESERVED)
        if not placed:
            raise PlacementError("no room in the clearing")
        if rng.random() < 0.5:
            p.lawns(placed, "after")
        sc.events.append(p.building_event(placed, "appear", surface="trees"))


def _recipe_water(p: Planner, recipe: str) -> None:
    """``water``: a pond (or a lake) is dug on open land."""
    rng = p.rng
    lake = rng.random() < 0.4
    for _ in range(6):
        radius = float(rng.uniform(0.14, 0.21) if lake else rng.uniform(0.07, 0.11))
        poly = p.pond(_target(rng, 6 if lake else 2), radius, "after", inner=0.02)
        if poly is not None:
            break
    else:
        raise PlacementError("no room for the pond")
    loc, centroid, extent = objects_location(poly)
    p.scene.events.append(
        {
            "type": "water",
            "action": "appear",
            "count": 1,
            "kind": "lake" if lake else "pond",
            "location": loc,
            "centroid": list(centroid),
            "extent": list(extent),
            "surface": _common_surface(p.surface_at(poly.clip(0, 1))),
        }
    )


_RECIPE_FUNCTIONS: dict[str, Callable[[Planner, str], None]] = {
    "build": _recipe_build,
    "road_build": _recipe_road,
    "road": _recipe_road,
    "demolish": _recipe_demolish,
    "clear": _recipe_clear,
    "clear_build": _recipe_clear,
    "water": _recipe_water,
    "road_clear": _recipe_road,
}


def _apply_recipe(p: Planner, recipe: str) -> None:
    """Place the changed objects of ``recipe`` and append the resulting events (raises PlacementError)."""
    if recipe not in _RECIPE_FUNCTIONS:
        raise ValueError(f"unknown recipe {recipe!r}")
    _RECIPE_FUNCTIONS[recipe](p, recipe)


def _side_of(road: Road, b: Building) -> int:
    """Which side (+1 / -1) of the road centre line a building stands on."""
    pts, tangents = polyline_resample(road.points, 0.01)
    i = int(np.argmin(np.hypot(pts[:, 0] - b.cx, pts[:, 1] - b.cy)))
    d = np.array([b.cx, b.cy]) - pts[i]
    return 1 if tangents[i, 0] * d[1] - tangents[i, 1] * d[0] > 0 else -1


def _lots(p: Planner, placed: list[Building], cls: int, state: State, grow: float = 0.018) -> None:
    """Ground patches (building lots, demolition sites) around buildings."""
    for b in placed:
        poly = rect_corners(b.cx, b.cy, b.half_len + grow, b.half_wid + grow, b.angle)
        p.scene.ground.append(Patch(poly, cls, state))


def _static_fill(p: Planner) -> None:
    """Unchanged context: roads' houses, subdivisions, commercial plots, woods, ponds and scattered trees."""
    rng, sc = p.rng, p.scene
    for road in [r for r in sc.roads if r.state == "static"]:
        if rng.random() < 0.5:
            houses = p.along_road(
                road, int(rng.integers(2, 12)), "static", both_sides=bool(rng.random() < 0.5), inner=None
            )
            p.lawns(houses, "static")
    if rng.random() < 0.25:
        houses = p.cluster(
            (float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9))),
            int(rng.integers(2, 8)),
            "house",
            "static",
            inner=None,
        )
        p.lawns(houses, "static")
    if rng.random() < 0.15:
        for _ in range(3):
            if p.parking_lot((float(rng.uniform(0.15, 0.85)), float(rng.uniform(0.15, 0.85))), "static"):
                break
    if rng.random() < 0.35:
        c = (float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.0, 1.0)))
        r = float(rng.uniform(0.12, 0.3))
        poly, _ = p.woods(c, r)
        sc.ground.insert(0, Patch(poly, C.FOREST_FLOOR, "static"))
    if rng.random() < 0.06:
        p.pond(
            (float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9))),
            float(rng.uniform(0.05, 0.1)),
            "static",
            inner=None,
        )
    p.scattered_trees(int(rng.integers(3, 40)))


def plan_scene(rng: np.random.Generator, changed: bool) -> Scene:
    """Lay out one pair. Unchanged pairs get only static objects; changed pairs get one recipe's events.

    Raises :class:`PlacementError` when a recipe does not fit; :func:`plan_pair` retries with a fresh stream.
    """
    p = Planner(rng)
    sc = p.scene
    recipe = _pick(rng, RECIPES) if changed else "none"
    sc.recipe = recipe
    if recipe not in ("road", "road_build", "road_clear"):
        r = rng.random()
        if r < 0.45:
            p.add_road(p.road_polylines("straight" if rng.random() < 0.6 else "curved")[0], "static")
        elif r < 0.6:
            for line in p.road_polylines(str(rng.choice(["t-shaped", "crossroad"]))):
                p.add_road(line, "static")
    if changed:
        _apply_recipe(p, recipe)
    _static_fill(p)
    return sc


def plan_pair(seed: int, index: int, changed: bool, max_attempts: int = 20) -> Scene:
    """The scene of pair ``index`` of a set generated with ``seed`` (a pure function of its arguments)."""
    for attempt in range(max_attempts):
        rng = np.random.default_rng([seed, index, attempt, 0x5C])
        try:
            return plan_scene(rng, changed)
        except PlacementError:
            continue
    raise RuntimeError(f"SynthCC could not lay out pair {index} (seed {seed}) in {max_attempts} attempts")
