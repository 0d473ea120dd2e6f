"""Scene captions of single SynthCC images: what one date shows, true to what was rendered in it.

The facts of an image (:func:`scene_facts`) come from the scene's objects that are in that image (``visible`` at
its date) and inside its own pixel window (the after image is misregistered by a few pixels), measured on its
land-cover map where an area matters; never from the change recipe. The rules:

* **buildings**: houses and large buildings whose centre lies inside the image are counted. Houses closer than
  :data:`GROUP_GAP` to one another form a group (at most two groups are described apart, more are described as one);
  a group stands "along the road" when every house in it is within a driveway's reach of a named road's centre line.
* **roads**: a road is named when at least :data:`MIN_ROAD_LENGTH` of its centre line lies in the image. One road is
  straight or curved (a straight road crossing the whole image also gets its direction, "from left to right");
  two roads meeting at an end form a t-shaped road, two crossing roads a crossroad, located at their junction.
* **woods, water bodies, parking lots**: named when at least :data:`MIN_AREA_SHARE` of the image shows them (pixels
  of their land-cover class inside their outline); a water body is a lake from :data:`LAKE_AREA` of the tile, a small
  pond below :data:`SMALL_POND_AREA`. A single large building with a parking lot beside it is named with its lot.
* **optional extras** (some captions leave them out): disturbed soil ("cleared land") from :data:`MIN_SOIL_SHARE` of
  the image, scattered trees (outside woods, centre inside the image) from :data:`MIN_SCATTERED_TREES`, and the
  dominant open ground ("bare land", "grassland", or both) when bare land and grass cover at least
  :data:`MIN_GROUND_SHARE` of the image.

Buildings, roads, woods, water and parking lots are named in every caption, so a caption mentions e.g. water exactly
when the image shows a water body; locations use the 3x3 grid and phrases of the pair captions (``captions.py``).
Counts are exact number words up to ten ("six houses") or the pair captions' count words ("several", "many").
Five distinct paraphrases per image vary the sentence pattern, the order of the phrases and the synonyms, drawn from
the image's own random stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from changecap.data.text import tokenize
from changecap.synth import classes as C
from changecap.synth import landcover as L
from changecap.synth.captions import BUILDING_NOUNS, COUNT_WORDS, LOCATION_PHRASES, PhraseWriter, count_class
from changecap.synth.geometry import (
    SPREAD_EXTENT,
    grid_location,
    inside_polygon,
    objects_location,
    polyline_resample,
    rect_corners,
)
from changecap.synth.scene import Building, Road, Scene, visible

N_SCENE_CAPTIONS = 5
MAX_SCENE_WORDS = 40  # tokens (commas included); LEVIR-CC's longest caption has 39 words
MIN_AREA_SHARE = 0.005  # of the image's pixels: smaller slivers of woods, water or a parking lot are not named
MIN_ROAD_LENGTH = 0.15  # of the tile's width: centre line of a road inside the image
MIN_SOIL_SHARE = 0.01
MIN_SCATTERED_TREES = 3
MIN_GROUND_SHARE = 0.25  # bare land + grass share of the image needed to describe the open ground
DOMINANT_GROUND = 0.65  # grass (or bare land) share of the open ground that makes it "grassland" ("bare land")
GROUP_GAP = 0.22  # houses closer than this (centre to centre, tile widths) belong to one group
ALONG_ROAD_REACH = 0.05  # widest gap between a house and the curb still "along the road" (driveways: 0.02-0.035)
LAKE_AREA = 0.03  # water polygon area (tile = 1) from which a water body is a lake (about 490 m²)
SMALL_POND_AREA = 0.01
RESIDENTIAL_HOUSES = 3  # houses from which the scene is "a residential area"
_ROAD_STEP = 0.02  # centre-line sampling step for the visible length and extent of a road
NUMBER_WORDS: tuple[str, ...] = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

GROUND_NOUNS: dict[str, tuple[str, ...]] = {  # the open ground as the subject of a caption ("bare land with ...")
    "bareland": ("bare land", "an area of bare land", "a piece of bare land", "an area of empty land"),
    "grass": ("grassland", "an area of grassland", "a meadow"),
    "mixed": ("grass and bare land", "an area of grass and bare land"),
}
ROAD_NOUNS: dict[str, tuple[tuple[str, bool], ...]] = {  # (phrase, plural)
    "straight": (("a road", False), ("a straight road", False)),
    "curved": (("a curved road", False), ("a winding road", False)),
    "t-shaped": (("a t-shaped road", False), ("a road with a branch", False)),
    "crossroad": (("a crossroad", False), ("two crossing roads", True)),
}
DIRECTION_PHRASES: dict[str, tuple[str, ...]] = {
    "horizontal": ("running from left to right", "from left to right"),
    "vertical": ("running from top to bottom", "from top to bottom"),
}
ACROSS_PHRASES: tuple[str, ...] = ("across the scene", "through the scene")
WOODS_NOUNS: tuple[tuple[str, bool], ...] = (("woods", True), ("a forest", False), ("dense trees", True))
WATER_NOUNS: dict[str, tuple[str, ...]] = {
    "small pond": ("a small pond", "a pond"),
    "pond": ("a pond",),
    "lake": ("a lake", "a large pond"),
}
PARKING_NOUNS: tuple[str, ...] = ("a parking lot", "a parking area")
SOIL_NOUNS: tuple[str, ...] = ("cleared land", "bare soil", "an area of cleared land")
TREE_NOUNS: dict[str, tuple[str, ...]] = {
    "few": ("a few trees", "some trees", "scattered trees"),
    "many": ("many trees", "scattered trees", "lots of trees"),
}


@dataclass(frozen=True)
class Group:
    """Objects of one kind counted together: how many and where (a ``geometry.LOCATIONS`` name)."""

    count: int
    location: str
    along_road: bool = False


@dataclass(frozen=True)
class RoadNetwork:
    """The roads named in an image: ``shape`` straight / curved / t-shaped / crossroad / roads (unrelated)."""

    shape: str
    count: int
    location: str
    direction: str | None = None  # "horizontal" / "vertical": a straight road running across the whole image


@dataclass(frozen=True)
class Area:
    """An area object (woods, a water body, a parking lot, disturbed soil) and the share of the image it covers."""

    kind: str
    location: str
    share: float
    cars: bool = False


@dataclass(frozen=True)
class SceneFacts:
    """Everything the scene captions of one image may say."""

    houses: tuple[Group, ...]
    large: Group | None
    large_with_parking: bool  # a single large building with its parking lot beside it (the lot is not in parking)
    roads: RoadNetwork | None
    woods: tuple[Area, ...]
    water: tuple[Area, ...]
    parking: tuple[Area, ...]
    soil: Area | None
    trees: int  # scattered trees (outside woods) with their centre in the image
    ground: str | None  # "bareland" / "grass" / "mixed", or None when open ground covers little of the image
    pixels: tuple[int, ...] = ()  # pixels of each land-cover class in the image

    def object_counts(self) -> dict[str, int]:
        """Counts written beside the captions (``scene_captions.json``)."""
        return {
            "houses": sum(g.count for g in self.houses),
            "large_buildings": self.large.count if self.large else 0,
            "roads": self.roads.count if self.roads else 0,
            "woods": len(self.woods),
            "water_bodies": len(self.water),
            "parking_lots": len(self.parking) + int(self.large_with_parking),
            "scattered_trees": self.trees,
        }


# ---------------------------------------------------------------------------------------------------------- facts
class _View:
    """One image of a pair: its land-cover map and where its pixel window lies on the unit square."""

    def __init__(self, landcover: np.ndarray, shift: tuple[int, int]) -> None:
        self.lc = landcover
        self.size = landcover.shape[0]
        self.offset = np.asarray(shift, np.float64) / self.size  # unit-square position of the window's corner

    def local(self, points: np.ndarray) -> np.ndarray:
        """Unit-square points ``[n, 2]`` -> this image's own unit coordinates (0..1 inside the image)."""
        return np.asarray(points, np.float64) - self.offset

    @staticmethod
    def inside(local: np.ndarray) -> np.ndarray:
        return ((local >= 0) & (local < 1)).all(axis=1)

    def region(self, polygon: np.ndarray, cls: int) -> tuple[int, str]:
        """Pixels of land-cover class ``cls`` inside ``polygon`` and their location (see :func:`_pixels_location`).

        The polygon is rasterised like the renderer draws it (same pixel convention: the window shift is an integer
        number of pixels), only over its bounding box.
        """
        s = self.size
        px = self.local(polygon) * s  # [n, 2]
        x0, y0 = np.clip(np.floor(px.min(axis=0)).astype(int) - 1, 0, s)
        x1, y1 = np.clip(np.ceil(px.max(axis=0)).astype(int) + 2, 0, s)
        if x1 <= x0 or y1 <= y0:
            return 0, ""
        mask = Image.new("L", (int(x1 - x0), int(y1 - y0)), 0)
        ImageDraw.Draw(mask).polygon((px - [x0, y0]).ravel().tolist(), fill=1)
        sel = (np.asarray(mask) > 0) & (self.lc[y0:y1, x0:x1] == cls)  # [h, w]
        return _pixels_location(sel, int(x0), int(y0), s)

    def min_pixels(self, share: float) -> float:
        return share * self.size * self.size


def _pixels_location(sel: np.ndarray, x0: int, y0: int, size: int) -> tuple[int, str]:
    """Number of selected pixels of a window ``[h, w]`` at (x0, y0) of an image of ``size`` px and their location
    (``geometry.objects_location`` of the pixel centres, from the row and column sums)."""
    cols, rows = sel.sum(axis=0), sel.sum(axis=1)  # [w], [h]
    n = int(cols.sum())
    if n == 0:
        return 0, ""
    xs, ys = np.flatnonzero(cols), np.flatnonzero(rows)
    cx = float(cols[xs] @ (xs + x0 + 0.5)) / n / size
    cy = float(rows[ys] @ (ys + y0 + 0.5)) / n / size
    ex, ey = (xs[-1] - xs[0]) / size, (ys[-1] - ys[0]) / size
    return n, "scene" if ex > SPREAD_EXTENT and ey > SPREAD_EXTENT else grid_location(cx, cy)


def _polyline_distance(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Distance ``[k]`` of points ``[k, 2]`` to a polyline ``[n, 2]``."""
    a, ab = line[:-1], np.diff(line, axis=0)  # [s, 2]
    ap = points[:, None, :] - a[None]  # [k, s, 2]
    t = np.clip((ap * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)  # [k, s]
    d = ap - t[..., None] * ab  # [k, s, 2]
    return np.sqrt((d * d).sum(-1)).min(axis=1)


def _crossing(p: np.ndarray, q: np.ndarray) -> np.ndarray | None:
    """A point where polylines ``p`` and ``q`` cross, or None."""
    a, r = p[:-1], np.diff(p, axis=0)  # [s1, 2]
    c, s = q[:-1], np.diff(q, axis=0)  # [s2, 2]
    denom = r[:, None, 0] * s[None, :, 1] - r[:, None, 1] * s[None, :, 0]  # [s1, s2]
    ca = c[None] - a[:, None]  # [s1, s2, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (ca[..., 0] * s[None, :, 1] - ca[..., 1] * s[None, :, 0]) / denom
        u = (ca[..., 0] * r[:, None, 1] - ca[..., 1] * r[:, None, 0]) / denom
    hit = np.argwhere((denom != 0) & (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1))
    if not len(hit):
        return None
    i, j = hit[0]
    return a[i] + t[i, j] * r[i]


def _junction(a: Road, b: Road) -> tuple[str, np.ndarray | None]:
    """How two roads meet: ("t-shaped", end point on the other road), ("crossroad", crossing) or ("roads", None)."""
    for road, other in ((a, b), (b, a)):
        ends = road.points[[0, -1]]  # [2, 2]
        d = _polyline_distance(ends, other.points)
        if d.min() < other.width / 2:
            return "t-shaped", ends[int(np.argmin(d))]
    cross = _crossing(a.points, b.points)
    return ("crossroad", cross) if cross is not None else ("roads", None)


def _road_network(scene: Scene, when: str, view: _View) -> tuple[RoadNetwork | None, list[Road]]:
    """The named roads of the image (see the module docstring) and the list of them."""
    shown: list[Road] = []
    inside_pts: list[np.ndarray] = []
    for road in scene.roads:
        if not visible(road.state, when):
            continue
        local = view.local(polyline_resample(road.points, _ROAD_STEP)[0])
        inside = view.inside(local)
        if inside.sum() * _ROAD_STEP >= MIN_ROAD_LENGTH:
            shown.append(road)
            inside_pts.append(local[inside])
    if not shown:
        return None, []
    location, _, extent = objects_location(np.concatenate(inside_pts))
    across = max(extent) > 0.8  # runs out of the image on two opposite sides
    if across and min(extent) > 0.34:
        location = "scene"
    if len(shown) == 1:
        shape = "straight" if len(shown[0].points) == 2 else "curved"
        direction = None
        if shape == "straight" and across and min(extent) <= 0.34:
            direction = "horizontal" if extent[0] > extent[1] else "vertical"
        return RoadNetwork(shape, 1, location, direction), shown
    shape, meet = _junction(shown[0], shown[1]) if len(shown) == 2 else ("roads", None)
    if meet is not None:
        at = view.local(meet[None])
        if view.inside(at)[0]:
            location = grid_location(float(at[0, 0]), float(at[0, 1]))
    return RoadNetwork(shape, len(shown), location), shown


def _single_linkage(points: np.ndarray, gap: float) -> list[list[int]]:
    """Groups of point indices, points closer than ``gap`` chained together; largest group first."""
    n = len(points)
    label = list(range(n))

    def root(i: int) -> int:
        while label[i] != i:
            label[i] = label[label[i]]
            i = label[i]
        return i

    d = np.hypot(points[:, None, 0] - points[None, :, 0], points[:, None, 1] - points[None, :, 1])  # [n, n]
    for i, j in zip(*np.nonzero(np.triu(d < gap, k=1))):
        label[root(int(i))] = root(int(j))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: (-len(g), g[0]))


def _along_road(houses: list[Building], roads: list[Road]) -> np.ndarray:
    """Which houses ``[k]`` stand beside a named road (centre within curb + half width + setback slack)."""
    centres = np.array([[b.cx, b.cy] for b in houses])  # [k, 2]
    half = np.array([b.half_wid for b in houses])
    near = np.zeros(len(houses), bool)
    for road in roads:
        near |= _polyline_distance(centres, road.points) <= road.width * 0.7 + half + ALONG_ROAD_REACH
    return near


def _house_groups(houses: list[Building], local: np.ndarray, roads: list[Road]) -> list[Group]:
    if not houses:
        return []
    groups = _single_linkage(local, GROUP_GAP)
    if len(groups) > 2:  # several scattered groups: described as one
        groups = [list(range(len(houses)))]
    near = _along_road(houses, roads)
    return [Group(len(g), objects_location(local[g])[0], along_road=bool(near[g].all())) for g in groups]


def _lot_cars(scene: Scene, lot_index: int, view: _View) -> bool:
    """Whether a car of the lot stands inside the image."""
    lot = scene.lots[lot_index]
    if not lot.cars:
        return False
    u = np.array([np.cos(lot.angle), np.sin(lot.angle)])
    v = np.array([-np.sin(lot.angle), np.cos(lot.angle)])
    offsets = np.array([(a, c) for a, c, _ in lot.cars])  # [k, 2] along / across
    cars = np.array([lot.cx, lot.cy]) + offsets[:, :1] * u + offsets[:, 1:] * v
    return bool(view.inside(view.local(cars)).any())


def _lot_corners(scene: Scene, i: int) -> np.ndarray:
    lot = scene.lots[i]
    return rect_corners(lot.cx, lot.cy, lot.half_len, lot.half_wid, lot.angle)


def _polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    x1, y1 = np.append(x[1:], x[0]), np.append(y[1:], y[0])
    return float(abs(x @ y1 - y @ x1) / 2)


def scene_facts(scene: Scene, when: str, landcover: np.ndarray, shift: tuple[int, int]) -> SceneFacts:
    """Facts of the image of date ``when`` ("A" / "B") whose land-cover map is ``landcover`` ``uint8 [S, S]`` and
    whose window is shifted by ``shift`` (dx, dy) pixels on the pair's canvas (see the module docstring)."""
    view = _View(landcover, shift)
    roads, shown_roads = _road_network(scene, when, view)

    buildings = [b for b in scene.buildings if visible(b.state, when)]
    centres = view.local(np.array([[b.cx, b.cy] for b in buildings]).reshape(-1, 2))
    inside = view.inside(centres)
    house_idx = [i for i, b in enumerate(buildings) if inside[i] and b.kind == "house"]
    large_idx = [i for i, b in enumerate(buildings) if inside[i] and b.kind == "large"]
    houses = _house_groups([buildings[i] for i in house_idx], centres[house_idx], shown_roads)
    large = None
    if large_idx:
        large = Group(len(large_idx), objects_location(centres[large_idx])[0])

    need = view.min_pixels(MIN_AREA_SHARE)
    parking: list[Area] = []
    with_parking = False
    for i, lot in enumerate(scene.lots):
        if not visible(lot.state, when):
            continue
        n_px, loc = view.region(_lot_corners(scene, i), L.PARKING)
        if n_px < need:
            continue
        if len(large_idx) == 1 and not with_parking:
            b = buildings[large_idx[0]]
            if np.hypot(b.cx - lot.cx, b.cy - lot.cy) <= b.half_wid + lot.half_wid + 0.04:  # the lot beside it
                with_parking = True
                continue
        parking.append(Area("parking", loc, round(n_px / landcover.size, 4), cars=_lot_cars(scene, i, view)))

    woods: list[Area] = []
    water: list[Area] = []
    woods_polygons: list[np.ndarray] = []
    for patch in scene.ground:
        if not visible(patch.state, when) or patch.cls not in (C.FOREST_FLOOR, C.WATER):
            continue
        is_woods = patch.cls == C.FOREST_FLOOR
        if is_woods:
            woods_polygons.append(patch.polygon)
        n_px, loc = view.region(patch.polygon, L.TREES if is_woods else L.WATER)
        if n_px < need:
            continue
        share = round(n_px / landcover.size, 4)
        if is_woods:
            woods.append(Area("woods", loc, share))
        else:
            area = _polygon_area(patch.polygon)
            kind = "lake" if area >= LAKE_AREA else "small pond" if area < SMALL_POND_AREA else "pond"
            water.append(Area(kind, loc, share))

    soil = None
    counts = L.class_pixels(landcover)
    if counts[L.DISTURBED_SOIL] >= view.min_pixels(MIN_SOIL_SHARE):
        _, loc = _pixels_location(landcover == L.DISTURBED_SOIL, 0, 0, view.size)
        soil = Area("soil", loc, round(counts[L.DISTURBED_SOIL] / landcover.size, 4))

    tree_pts = np.array([[t.cx, t.cy] for t in scene.trees if visible(t.state, when)]).reshape(-1, 2)
    tree_pts = tree_pts[view.inside(view.local(tree_pts))]
    for poly in woods_polygons:
        tree_pts = tree_pts[~inside_polygon(tree_pts, poly)]  # trees of woods are not scattered trees

    ground = None
    open_ground = counts[L.BARE_LAND] + counts[L.GRASS]
    if open_ground >= MIN_GROUND_SHARE * landcover.size:
        grass = counts[L.GRASS] / open_ground
        ground = "grass" if grass >= DOMINANT_GROUND else "bareland" if grass <= 1 - DOMINANT_GROUND else "mixed"
    return SceneFacts(
        houses=tuple(houses),
        large=large,
        large_with_parking=with_parking,
        roads=roads,
        woods=tuple(woods),
        water=tuple(water),
        parking=tuple(parking),
        soil=soil,
        trees=len(tree_pts),
        ground=ground,
        pixels=tuple(counts),
    )


# ---------------------------------------------------------------------------------------------------------- text
def _count_phrase(w: PhraseWriter, count: int, nouns: Sequence[tuple[str, str]]) -> tuple[str, bool]:
    """Count word(s) and noun: "a house", "six villas", "several buildings"; and whether it is plural."""
    sing, plur = w.pick(nouns)
    if count == 1:
        return f"{w.pick(('a', 'a', 'one'))} {sing}", False
    if count <= len(NUMBER_WORDS) and w.maybe(0.75):
        return f"{NUMBER_WORDS[count - 1]} {plur}", True
    return f"{w.pick(COUNT_WORDS[count_class(count)])} {plur}", True


def _where(w: PhraseWriter, location: str, p: float, road: bool = False) -> str:
    """A location phrase (or "" with probability 1 - p); a road spread over the image runs "through the scene"."""
    if not w.maybe(p):
        return ""
    return w.pick(ACROSS_PHRASES if road and location == "scene" else LOCATION_PHRASES[location])


def _road_phrase(w: PhraseWriter, roads: RoadNetwork, p_where: float) -> tuple[str, bool]:
    """The road network without its location ("a road running from left to right") and its plurality."""
    if roads.shape == "roads":
        return f"{NUMBER_WORDS[roads.count - 1] if roads.count <= len(NUMBER_WORDS) else 'many'} roads", True
    noun, plural = w.pick(ROAD_NOUNS[roads.shape])
    direction = w.pick(DIRECTION_PHRASES[roads.direction]) if roads.direction and w.maybe(p_where) else ""
    return " ".join(p for p in (noun, direction) if p), plural


_Item = tuple[str, bool, str]  # (text, plural, role): role "road" names the roads, "ref" says "the road(s)"


def _phrases(w: PhraseWriter, f: SceneFacts, level: int) -> tuple[list[_Item], list[_Item]]:
    """Noun phrases that every caption carries, and the optional ones; ``level`` 1 and 2 name fewer locations."""
    p_where = (0.9, 0.5, 0.0)[level]
    must: list[_Item] = []
    road_named = False
    for g in f.houses:
        np_, plural = _count_phrase(w, g.count, BUILDING_NOUNS["house"])
        along, role = "", ""
        if g.along_road and f.roads is not None:
            prep = w.pick(("along", "beside", "by"))
            if f.roads.count == 1 and not road_named:  # "six houses along a curved road"
                along, role = f"{prep} {_road_phrase(w, f.roads, p_where)[0]}", "road"
                road_named = True
            else:
                the_road = "the road" if f.roads.count == 1 or f.roads.shape == "t-shaped" else "the roads"
                along, role = f"{prep} {the_road}", "ref"
        # two groups of houses are told apart by where they stand
        where = _where(w, g.location, 1.0 if len(f.houses) > 1 else p_where)
        must.append((" ".join(p for p in (np_, along, where) if p), plural, role))
    if f.large is not None:
        np_, plural = _count_phrase(w, f.large.count, BUILDING_NOUNS["large"])
        lot = f" with {w.pick(PARKING_NOUNS)}" if f.large_with_parking else ""
        must.append((f"{np_}{lot} {_where(w, f.large.location, p_where)}".strip(), plural, ""))
    if f.roads is not None and not road_named:
        text, plural = _road_phrase(w, f.roads, p_where)
        must.append((f"{text} {_where(w, f.roads.location, p_where, road=True)}".strip(), plural, "road"))
    for a in f.woods:
        noun, plural = w.pick(WOODS_NOUNS)
        must.append((f"{noun} {_where(w, a.location, p_where)}".strip(), plural, ""))
    for a in f.water:
        must.append((f"{w.pick(WATER_NOUNS[a.kind])} {_where(w, a.location, p_where)}".strip(), False, ""))
    for a in f.parking:
        cars = " with cars" if a.cars and w.maybe(0.4) else ""
        must.append((f"{w.pick(PARKING_NOUNS)}{cars} {_where(w, a.location, p_where)}".strip(), False, ""))
    extra: list[_Item] = []
    if f.soil is not None:
        extra.append((f"{w.pick(SOIL_NOUNS)} {_where(w, f.soil.location, p_where)}".strip(), False, ""))
    if f.trees >= MIN_SCATTERED_TREES:
        extra.append((w.pick(TREE_NOUNS["few" if f.trees <= 5 else "many"]), True, ""))
    return must, extra


def _roads_first(items: list[_Item]) -> list[_Item]:
    """Move the phrase that names the roads before the first phrase that refers to "the road(s)"."""
    roles = [role for _, _, role in items]
    if "ref" in roles and "road" in roles and roles.index("road") > roles.index("ref"):
        road = items[roles.index("road")]
        rest = [it for it in items if it is not road]
        at = [role for _, _, role in rest].index("ref")
        return [*rest[:at], road, *rest[at:]]
    return items


def _listing(items: list[_Item]) -> str:
    texts = [t for t, _, _ in items]
    if len(texts) == 1:
        return texts[0]
    return ", ".join(texts[:-1]) + " and " + texts[-1]


def _scene_sentence(w: PhraseWriter, f: SceneFacts, level: int) -> str:
    """One caption; from ``level`` 1 on in a compact form (no optional extras, no opener, fewer locations)."""
    must, extra = _phrases(w, f, level)
    compact = level > 0
    if not must:  # nothing built, no woods or water: the extras carry the caption
        items, compact = extra, False
    else:
        items = must + ([] if compact else [e for e in extra if w.maybe(0.5)])
    if len(items) > 1 and w.maybe(0.5):  # otherwise buildings, roads, woods, water, parking in this order
        items = [items[int(i)] for i in w.rng.permutation(len(items))]
    items = _roads_first(items)
    ground = w.pick(GROUND_NOUNS[f.ground]) if f.ground else ""
    if not items:
        return ground or w.pick(("an open area", "an empty area"))
    listing = _listing(items)
    pattern = 0 if not must and ground else int(w.rng.integers(4))  # scattered trees alone: name the ground too
    if pattern == 0 and not compact:
        openers = [ground] * 2 if ground else ["a scene", "an area"]
        if sum(g.count for g in f.houses) >= RESIDENTIAL_HOUSES:
            openers += ["a residential area"] * 2
        return f"{w.pick(openers)} with {listing}"
    if pattern == 1:
        return f"there {'are' if items[0][1] else 'is'} {listing}"
    if pattern == 2 and not compact:
        return f"the scene has {listing}"
    return listing


def _n_words(caption: str) -> int:
    return len(tokenize(caption))


def make_scene_captions(facts: SceneFacts, rng: np.random.Generator, n: int = N_SCENE_CAPTIONS) -> list[str]:
    """``n`` paraphrased scene captions (lower case, no final period) of one image's facts.

    Captions are made distinct where the templates allow it (up to 40 draws); when long ones do not leave five, later
    draws are compact (no optional extras, then only the locations that tell two groups of houses apart) to stay
    within :data:`MAX_SCENE_WORDS` tokens.
    """
    w = PhraseWriter(rng)
    out: list[str] = []
    drawn: list[str] = []
    for attempt in range(40):
        c = " ".join(_scene_sentence(w, facts, level=0 if attempt < 15 else 1 if attempt < 25 else 2).split())
        drawn.append(c)
        if _n_words(c) <= MAX_SCENE_WORDS and c not in out:
            out.append(c)
        if len(out) == n:
            return out
    if not out:  # a scene with very many named objects: keep the shortest draw
        out.append(min(drawn, key=_n_words))
    return [out[i % len(out)] for i in range(n)]


def scene_record(
    scene: Scene, when: str, landcover: np.ndarray, shift: tuple[int, int], rng: np.random.Generator
) -> dict[str, Any]:
    """Captions, object counts and land-cover pixel counts of one image (fields of a ``scene_captions.json``
    record, without its file name, split and date)."""
    facts = scene_facts(scene, when, landcover, shift)
    return {
        "sentences": make_scene_captions(facts, rng),
        "objects": facts.object_counts(),
        "landcover_pixels": list(facts.pixels),
    }
