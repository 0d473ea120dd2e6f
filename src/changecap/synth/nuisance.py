"""Nuisance variation: everything that differs between the two dates but must NOT be described.

Every image of every pair (changed or not) gets its own illumination, colour balance, contrast, season, haze and
sensor noise, and the after image is shifted by a few pixels (misregistration) and lit from a slightly different
sun direction. A captioner therefore has to learn that these differences are not changes, as on LEVIR-CC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from changecap.synth.render import max_shift


@dataclass(frozen=True)
class Nuisance:
    gain: tuple[float, float, float]  # per-channel multiplicative colour balance x global brightness
    offset: float  # additive brightness
    contrast: float  # around mid-grey
    dryness: float  # 0 green season .. 0.35 dry season (vegetation colour)
    greenness: float  # extra green saturation of vegetation
    haze: float  # 0: clear; up to ~0.3 of the haze colour mixed in
    noise: float  # sensor noise standard deviation (0-255 scale)
    shift: tuple[int, int]  # (dx, dy) pixel offset of this image's crop (0, 0 for the before image)
    shadow_turn: float  # radians added to the scene's shadow direction
    shadow_scale: float  # shadow length factor (sun elevation)

    def scale(self) -> np.ndarray:
        """Per-channel factor of contrast (around mid-grey 110) and colour balance: ``out = rgb * scale + shift``."""
        return np.float32(self.contrast) * np.array(self.gain, np.float32)

    def shift_term(self) -> np.ndarray:
        return (110.0 - 110.0 * np.float32(self.contrast)) * np.array(self.gain, np.float32) + np.float32(self.offset)

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else round(v, 4)) for k, v in self.__dict__.items()}


def draw_nuisance(rng: np.random.Generator, size: int, after: bool) -> Nuisance:
    """Random nuisance of one image; ``after`` images are also misregistered and lit from another angle."""
    brightness = rng.uniform(0.82, 1.16)
    gain = tuple(float(brightness * g) for g in rng.uniform(0.95, 1.05, size=3))
    shift = (0, 0)
    if after:
        m = max_shift(size)
        while shift == (0, 0):
            shift = (int(rng.integers(-m, m + 1)), int(rng.integers(-m, m + 1)))
    return Nuisance(
        gain=(gain[0], gain[1], gain[2]),
        offset=float(rng.uniform(-8, 8)),
        contrast=float(rng.uniform(0.85, 1.15)),
        dryness=float(rng.uniform(0.0, 0.35)),
        greenness=float(rng.uniform(-0.06, 0.1)),
        haze=float(rng.uniform(0.04, 0.2)) if rng.random() < 0.35 else 0.0,
        noise=float(rng.uniform(0.8, 2.5)),
        shift=shift,
        shadow_turn=float(rng.normal(0, 0.12)) if after else 0.0,
        shadow_scale=float(rng.uniform(0.85, 1.15)),
    )


_HAZE_RGB = np.array([200, 204, 210], np.float32)
# Standard normal quantiles of 256 equiprobable bins: random bytes mapped through them are Gaussian noise at a
# fraction of the cost of ``standard_normal`` (sensor noise needs no finer tail).
_NORMAL_QUANTILES = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)], np.float32)


def blur_121(image: np.ndarray) -> np.ndarray:
    """Optical point spread: the [1, 2, 1] x [1, 2, 1] / 16 blur of a uint8 ``[H, W, C]`` image, edges replicated.

    Returned as uint16 ``[H, W, C]`` with values 0..255 (rounded). Integer shifts and adds on uint16 are about five
    times faster than Pillow's box blur of the same kernel.
    """
    x = image.astype(np.uint16)
    h = x * 2  # horizontal pass: 2 x centre + left + right (the border pixel counts as its own neighbour)
    h[:, 1:] += x[:, :-1]
    h[:, :-1] += x[:, 1:]
    h[:, 0] += x[:, 0]
    h[:, -1] += x[:, -1]
    v = h * 2  # vertical pass on the horizontal sums (max 16 * 255 fits in uint16)
    v[1:] += h[:-1]
    v[:-1] += h[1:]
    v[0] += h[0]
    v[-1] += h[-1]
    v += 8
    v >>= 4
    return v


def apply_photometric(rgb: np.ndarray, haze_field: np.ndarray, nz: Nuisance, rng: np.random.Generator) -> np.ndarray:
    """Finish an image: float RGB ``[S, S, 3]`` already multiplied by :meth:`Nuisance.scale` (``colorize`` folds
    it into the palette) → uint8 after the brightness offset, haze, optical blur and sensor noise. ``rgb`` is
    modified in place."""
    rgb += nz.shift_term() + 0.5  # + 0.5: round when truncating to uint8
    if nz.haze > 0:
        a = (nz.haze * (0.5 + 0.5 * haze_field))[..., None]  # [S, S, 1] patchy haze
        rgb *= 1 - a
        rgb += _HAZE_RGB * a
    np.clip(rgb, 0, 255, out=rgb)
    out = blur_121(rgb.astype(np.uint8)).view(np.int16)  # 0..255 has the same bits in uint16 and int16
    lut = np.round(_NORMAL_QUANTILES * nz.noise).astype(np.int16)
    out += np.take(lut, np.frombuffer(rng.bytes(out.size), np.uint8).reshape(out.shape))  # sensor noise
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def shadow_angle(base: float, nz: Nuisance) -> float:
    return math.fmod(base + nz.shadow_turn, 2 * math.pi)
