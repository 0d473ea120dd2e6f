"""Rasterise a SynthCC :class:`~changecap.synth.scene.Scene` into before/after RGB images and the change mask.

Rendering is two passes per image, both vectorised:

1. **Classes**: every object is drawn as a class id (``classes.py``) into a ``uint8`` canvas with PIL ImageDraw
   (polygons, polylines, ellipses, all in C), plus a second canvas of cast shadows.
2. **Colour**: one lookup per channel on the class index (shadowed pixels are separate classes) turns classes into
   RGB, modulated by noise fields shared by both images (colour drift and grain).

The canvas is the tile plus a margin on each side; the before image is the centred crop and the after image a crop
shifted by the misregistration, so that both show the same ground with real (not wrapped) content at the borders.
Texture fields are drawn once per pair and shared by both images: unchanged ground is pixel-identical before the
nuisance (illumination, season, haze, noise, shift) is applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from changecap.synth import classes as C
from changecap.synth.geometry import hip_roof_facets, rect_corners, shadow_polygon
from changecap.synth.scene import Building, ParkingLot, Scene, landcover_field, visible

MAX_SHIFT_256 = 3  # misregistration of the after image: up to 3 px at 256 px, scaled with the size

# Base colours (RGB 0-255) of the ground classes, tuned by eye against LEVIR-CC tiles (Texas suburbs, 0.5 m/px).
# BARE, GRASS and SOIL are replaced per scene from _SOILS / _GRASSES (see scene_palette).
_BASE: dict[int, tuple[float, float, float]] = {
    C.BARE: (178, 163, 136),
    C.GRASS: (118, 126, 80),
    C.SOIL: (158, 138, 110),
    C.LAWN: (92, 122, 62),
    C.FOREST_FLOOR: (82, 92, 60),
    C.SHORE: (150, 140, 112),
    C.WATER: (46, 68, 74),
    C.CURB: (192, 190, 182),
    C.ROAD: (146, 145, 140),
    C.PARKING: (98, 98, 100),
    C.PAINT: (225, 225, 218),
    C.DRIVEWAY: (196, 192, 182),
    C.TREE: (50, 66, 40),
    C.TREE_LIGHT: (72, 90, 52),
}
_SOILS: tuple[tuple[float, float, float], ...] = (
    (186, 172, 144),
    (172, 164, 146),
    (164, 146, 116),
    (194, 184, 160),
    (156, 144, 126),
)
_GRASSES: tuple[tuple[float, float, float], ...] = ((120, 128, 84), (138, 138, 96), (100, 122, 70), (92, 104, 66))
_CARS: tuple[tuple[float, float, float], ...] = (
    (215, 215, 212),
    (40, 40, 46),
    (150, 42, 40),
    (52, 72, 122),
    (165, 168, 172),
)
# Roof colours; a scene picks N_ROOF_SLOTS of them (Scene.roof_colors).
ROOF_COLORS: tuple[tuple[float, float, float], ...] = (
    (132, 130, 128),
    (108, 108, 112),
    (142, 122, 102),
    (152, 102, 82),
    (174, 164, 146),
    (116, 120, 128),
    (94, 94, 98),
    (162, 144, 122),
    (124, 128, 122),
    (180, 178, 174),
    (170, 112, 88),
    (204, 202, 196),
)
# Texture strength per class: low-frequency colour drift (dcol, RGB) and grain (relative brightness).
_DRIFT: dict[int, tuple[float, float, float]] = {
    C.BARE: (24, 22, 18),
    C.GRASS: (16, 18, 12),
    C.SOIL: (14, 12, 10),
    C.LAWN: (10, 14, 8),
    C.FOREST_FLOOR: (10, 12, 8),
    C.WATER: (6, 8, 8),
    C.SHORE: (10, 10, 8),
}
_GRAIN: dict[int, float] = {
    C.BARE: 0.08,
    C.GRASS: 0.1,
    C.SOIL: 0.14,
    C.LAWN: 0.05,
    C.FOREST_FLOOR: 0.12,
    C.SHORE: 0.05,
    C.WATER: 0.02,
    C.CURB: 0.03,
    C.ROAD: 0.04,
    C.PARKING: 0.04,
    C.PAINT: 0.02,
    C.DRIVEWAY: 0.03,
    C.TREE: 0.22,
    C.TREE_LIGHT: 0.2,
}
_ROOF_GRAIN = 0.04
_SHADOW_RGB = np.array([0.50, 0.53, 0.62], np.float32)  # shadows are darker and bluer (sky light)


@dataclass(frozen=True)
class Frame:
    """Pixel frame of a tile of ``size`` px rendered on a canvas with ``margin`` px on each side."""

    size: int
    margin: int

    @property
    def canvas(self) -> int:
        return self.size + 2 * self.margin

    def px(self, points: np.ndarray) -> list[float]:
        """Unit-square points ``[n, 2]`` → flat pixel coordinate list for ImageDraw."""
        return (points * self.size + self.margin).ravel().tolist()

    def length(self, units: float) -> float:
        return units * self.size


def frame_for(size: int) -> Frame:
    return Frame(size=size, margin=max_shift(size) + 2)


def max_shift(size: int) -> int:
    """Largest misregistration in pixels at this size (3 px at 256, at least 1 px)."""
    return max(1, round(MAX_SHIFT_256 * size / 256))


@dataclass
class Fields:
    """Noise fields shared by both images of a pair (canvas-sized float32 arrays)."""

    ground: np.ndarray  # [N, N] uint8 ground class from the land-cover field: GRASS where > scene.grass_level
    drift: np.ndarray  # [N, N] low-frequency colour drift in about [-1, 1]
    grain: np.ndarray  # [N, N] high-frequency texture in about [-1, 1]
    haze: np.ndarray  # [N, N] smooth field in [0, 1] (haze density)


def _octave(rng: np.random.Generator, cells_per_unit: float, frame: Frame) -> np.ndarray:
    """One noise octave ``[N, N]``: random values on a grid of ``cells_per_unit`` per 128 m, upsampled to the canvas
    (so the texture has the same ground scale at every tile size)."""
    n = frame.canvas
    g = max(2, int(math.ceil(cells_per_unit * n / frame.size)) + 1)
    if g >= n:  # finer than a pixel: plain per-pixel noise
        return rng.standard_normal((n, n), dtype=np.float32)
    small = rng.standard_normal((g, g), dtype=np.float32)
    # Bicubic for the smooth octaves; bilinear (twice as fast) is indistinguishable for the fine grain.
    resample = Image.Resampling.BICUBIC if cells_per_unit < 30 else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(small, mode="F").resize((n, n), resample))


def ground_classes(scene: Scene, frame: Frame) -> np.ndarray:
    """The canvas's ground classes ``[N, N]`` uint8 (no random draw): GRASS where the land-cover field is above the
    scene's grass level, BARE elsewhere."""
    landcover = landcover_field(scene.landcover, frame.canvas, offset=-frame.margin / frame.size, scale=1 / frame.size)
    return np.where(landcover > scene.grass_level, C.GRASS, C.BARE).astype(np.uint8)


def make_fields(scene: Scene, rng: np.random.Generator, frame: Frame) -> Fields:
    """The pair's shared fields on the canvas: ground classes, colour drift, grain and haze density."""
    ground = ground_classes(scene, frame)
    drift = 0.5 * _octave(rng, 5, frame) + 0.5 * _octave(rng, 18, frame)
    grain = 0.55 * _octave(rng, 40, frame) + 0.45 * _octave(rng, 110, frame)
    haze = _octave(rng, 2, frame)
    haze = (haze - haze.min()) / max(float(np.ptp(haze)), 1e-6)
    return Fields(ground=ground, drift=drift, grain=grain, haze=haze)


# ---------------------------------------------------------------------------------------------------------- palette
@dataclass
class Palette:
    """Per-class colour (``[N_CLASSES, 3]``), colour drift (``[N_CLASSES, 3]``) and grain (``[N_CLASSES]``)."""

    color: np.ndarray
    drift: np.ndarray
    grain: np.ndarray


def scene_palette(scene: Scene, rng: np.random.Generator) -> Palette:
    """The scene's colours: base colours with a per-scene jitter (soil type, vegetation, roof choice)."""
    color = np.zeros((C.N_CLASSES, 3), np.float32)
    for cls, rgb in _BASE.items():
        color[cls] = rgb
    for i, rgb in enumerate(_CARS):
        color[C.CAR0 + i] = rgb
    for slot, idx in enumerate(scene.roof_colors):
        base = np.array(ROOF_COLORS[idx], np.float32) * rng.uniform(0.92, 1.08)
        for shade, f in enumerate(C.ROOF_SHADES):
            color[C.roof_class(slot, shade)] = base * f
    # The ground varies most between scenes: sandy to greyish brown soils, olive to fresh green grass.
    color[C.BARE] = np.array(_SOILS[int(rng.integers(len(_SOILS)))], np.float32) * rng.uniform(0.92, 1.06)
    color[C.SOIL] = color[C.BARE] * np.array([0.8, 0.72, 0.64], np.float32)  # fresh earth: darker, redder
    color[C.GRASS] = np.array(_GRASSES[int(rng.integers(len(_GRASSES)))], np.float32) * rng.uniform(0.92, 1.08)
    color[: C.ROOF0] *= rng.uniform(0.97, 1.03, size=(C.ROOF0, 3)).astype(np.float32)
    drift = np.zeros((C.N_CLASSES, 3), np.float32)
    for cls, rgb in _DRIFT.items():
        drift[cls] = rgb
    grain = np.full(C.N_CLASSES, _ROOF_GRAIN, np.float32)
    for cls, g in _GRAIN.items():
        grain[cls] = g
    grain[C.CAR0 : C.CAR0 + C.N_CAR_COLORS] = 0.02
    return Palette(color=color, drift=drift, grain=grain)


def seasonal(palette: Palette, dryness: float, greenness: float) -> Palette:
    """Nuisance: the same vegetation in another season (browner when ``dryness`` > 0, greener with ``greenness``)."""
    color = palette.color.copy()
    veg = list(C.VEGETATION)
    brown = np.array([142, 130, 102], np.float32)
    color[veg] = color[veg] * (1 - dryness) + brown * dryness * (color[veg].mean(axis=1, keepdims=True) / 100)
    color[veg] *= np.array([1 - 0.5 * greenness, 1 + greenness, 1 - 0.5 * greenness], np.float32)
    return Palette(color=color, drift=palette.drift, grain=palette.grain)


# ---------------------------------------------------------------------------------------------------------- drawing
def draw_classes(
    scene: Scene, when: str, frame: Frame, fields: Fields, shadow_angle: float, shadow_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Class canvas ``[N, N]`` uint8 and shadow canvas ``[N, N]`` uint8 (0/1) of the before/after image."""
    n = frame.canvas
    canvas = Image.fromarray(fields.ground, mode="L")  # a copy: the shared ground stays untouched
    shadow = Image.new("L", (n, n), 0)
    d, ds = ImageDraw.Draw(canvas), ImageDraw.Draw(shadow)
    sun_dir = np.array([math.cos(shadow_angle), math.sin(shadow_angle)])  # direction shadows fall

    for patch in scene.ground:
        if not visible(patch.state, when):
            continue
        if patch.line_width > 0:
            d.line(frame.px(patch.polygon), fill=patch.cls, width=max(1, round(frame.length(patch.line_width))))
        else:
            d.polygon(frame.px(patch.polygon), fill=patch.cls)
    for lot in scene.lots:
        if not visible(lot.state, when):
            continue
        _draw_lot(d, lot, frame)
    for road in scene.roads:
        if visible(road.state, when):
            d.line(
                frame.px(road.points), fill=C.CURB, width=max(1, round(frame.length(road.width * 1.4))), joint="curve"
            )
    for road in scene.roads:
        if visible(road.state, when):
            d.line(frame.px(road.points), fill=C.ROAD, width=max(1, round(frame.length(road.width))), joint="curve")

    buildings = [b for b in scene.buildings if visible(b.state, when)]
    trees = [t for t in scene.trees if visible(t.state, when)]
    for b in buildings:
        off = sun_dir * b.height * shadow_scale
        ds.polygon(frame.px(shadow_polygon(b.corners(), off)), fill=1)
    # Tree boxes for all trees at once (the same float operations as one tree at a time, so the same pixels).
    tx, ty, tr = np.array([(t.cx, t.cy, t.r) for t in trees], np.float64).reshape(-1, 3).T  # [T] each
    shade_x, shade_y = tx + sun_dir[0] * tr * 0.9 * shadow_scale, ty + sun_dir[1] * tr * 0.9 * shadow_scale
    for box in _bboxes(frame, shade_x, shade_y, tr * 0.95):
        ds.ellipse(box, fill=1)
    for b in buildings:
        _draw_roof(d, b, frame, sun_dir)
    canopies = _bboxes(frame, tx, ty, tr)
    lights = _bboxes(frame, tx - sun_dir[0] * tr * 0.3, ty - sun_dir[1] * tr * 0.3, tr * 0.55)
    for canopy, light in zip(canopies, lights):
        d.ellipse(canopy, fill=C.TREE)
        d.ellipse(light, fill=C.TREE_LIGHT)
    return np.asarray(canvas), np.asarray(shadow)


def _bboxes(frame: Frame, cx: np.ndarray, cy: np.ndarray, r: np.ndarray) -> list[list[float]]:
    """Bounding boxes of circles (centres ``cx``, ``cy`` and radii ``r`` ``[T]`` in units, radius at least half a
    pixel) as ``[T][4]`` Python floats, computed for all circles at once."""
    x, y, rr = cx * frame.size + frame.margin, cy * frame.size + frame.margin, np.maximum(r * frame.size, 0.5)
    return np.stack([x - rr, y - rr, x + rr, y + rr], axis=1).tolist()  # [T, 4]


def _draw_roof(d: ImageDraw.ImageDraw, b: Building, frame: Frame, sun_dir: np.ndarray) -> None:
    if b.kind == "large":  # flat roof with a darker parapet rim
        d.polygon(frame.px(b.corners()), fill=C.roof_class(b.roof, 1))
        inset = min(0.006, b.half_wid * 0.2)
        inner = rect_corners(b.cx, b.cy, b.half_len - inset, b.half_wid - inset, b.angle)
        d.polygon(frame.px(inner), fill=C.roof_class(b.roof, 2))
        return
    for poly, normal in hip_roof_facets(b.cx, b.cy, b.half_len, b.half_wid, b.angle):
        facing = -float(normal @ sun_dir)  # 1: faces the sun
        shade = min(C.N_SHADES - 1, max(0, int((facing + 1) / 2 * C.N_SHADES)))
        d.polygon(frame.px(poly), fill=C.roof_class(b.roof, shade))


def _draw_lot(d: ImageDraw.ImageDraw, lot: ParkingLot, frame: Frame) -> None:
    d.polygon(frame.px(rect_corners(lot.cx, lot.cy, lot.half_len, lot.half_wid, lot.angle)), fill=C.PARKING)
    u = np.array([math.cos(lot.angle), math.sin(lot.angle)])
    v = np.array([-math.sin(lot.angle), math.cos(lot.angle)])
    c = np.array([lot.cx, lot.cy])
    stall = 0.024
    for along in np.arange(-lot.half_len + stall / 2, lot.half_len, stall):
        for row in (-1, 1):
            p0 = c + u * along + v * row * lot.half_wid * 0.15
            p1 = c + u * along + v * row * lot.half_wid * 0.95
            d.line(frame.px(np.stack([p0, p1])), fill=C.PAINT, width=1)
    for along, across, col in lot.cars:
        p = c + u * along + v * across
        car = rect_corners(float(p[0]), float(p[1]), 0.017, 0.0085, lot.angle + math.pi / 2)
        d.polygon(frame.px(car), fill=C.CAR0 + col)


SHADOW_BIT = 64  # class index + SHADOW_BIT = the same class in shadow (N_CLASSES <= 64)


def colorize(
    classes: np.ndarray,
    shadow: np.ndarray,
    drift: np.ndarray,
    grain: np.ndarray,
    palette: Palette,
    gain: np.ndarray | None = None,
) -> np.ndarray:
    """Classes ``[S, S]`` → float32 RGB ``[S, S, 3]`` (0-255 scale, not clipped), times a per-channel ``gain``.

    Shadowed pixels are looked up as their own classes (``class + SHADOW_BIT``) so that colour, drift, grain and
    shadow cost one index conversion and three 1-D ``np.take`` per channel on ``intp`` indices (about 3x faster than
    gathering ``[K, 3]`` rows or indexing with the uint8 image directly).
    """
    g3 = np.ones(3, np.float32) if gain is None else np.asarray(gain, np.float32)
    lut_color = np.zeros((2 * SHADOW_BIT, 3), np.float32)
    lut_drift = np.zeros((2 * SHADOW_BIT, 3), np.float32)
    lut_grain = np.zeros(2 * SHADOW_BIT, np.float32)
    k = C.N_CLASSES
    lut_color[:k], lut_color[SHADOW_BIT : SHADOW_BIT + k] = palette.color * g3, palette.color * g3 * _SHADOW_RGB
    lut_drift[:k], lut_drift[SHADOW_BIT : SHADOW_BIT + k] = palette.drift * g3, palette.drift * g3 * _SHADOW_RGB
    lut_grain[:k], lut_grain[SHADOW_BIT : SHADOW_BIT + k] = palette.grain, palette.grain
    idx = (classes + shadow * np.uint8(SHADOW_BIT)).astype(np.intp)  # [S, S]
    texture = 1 + np.take(lut_grain, idx) * grain  # [S, S]
    out = np.empty((*classes.shape, 3), np.float32)
    for c in range(3):
        out[..., c] = (np.take(lut_color[:, c], idx) + np.take(lut_drift[:, c], idx) * drift) * texture
    return out


# ---------------------------------------------------------------------------------------------------------- mask
def change_mask(scene: Scene, frame: Frame) -> np.ndarray:
    """LEVIR-MCI change mask ``[S, S]`` uint8 in the before image's frame: 255 building, 128 road, 0 otherwise.

    Building change = footprints of buildings present in only one image; road change = the new road surface (curb
    included) minus what was road before. Other changes (vegetation, water) are 0: LEVIR-MCI has only these two
    classes.
    """
    n, s, m = frame.canvas, frame.size, frame.margin
    new_road = Image.new("L", (n, n), 0)
    old_road = Image.new("L", (n, n), 0)
    build = Image.new("L", (n, n), 0)
    dn, do, db = ImageDraw.Draw(new_road), ImageDraw.Draw(old_road), ImageDraw.Draw(build)
    for road in scene.roads:
        target = dn if road.state == "after" else do if road.state == "static" else None
        if target is not None:
            target.line(
                frame.px(road.points), fill=1, width=max(1, round(frame.length(road.width * 1.4))), joint="curve"
            )
    for b in scene.buildings:
        if b.state != "static":
            db.polygon(frame.px(b.corners()), fill=1)
    road = (np.asarray(new_road) > 0) & (np.asarray(old_road) == 0)
    mask = np.where(np.asarray(build) > 0, 255, np.where(road, 128, 0)).astype(np.uint8)
    return mask[m : m + s, m : m + s]
