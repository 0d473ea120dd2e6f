"""Word attention drawn over the after image: one heat map per word of a caption (the HTML report and ``serve``).

A word's map (:attr:`~changecap.inference.predictor.CaptionResult.attention`, a g × g grid summing to 1) is
stretched over the part of the after image the model read (``attention_box``) with bilinear interpolation, scaled
from its own smallest to its largest cell (so each word shows where *its* attention peaks, and an even spread shows
nothing; the share of the peak cell is printed beside it) and blended over the dimmed image in a dark-to-bright
colour ramp. The web page draws the same maps in the
browser from the API's numbers, with the same ramp (:data:`HEAT_STOPS`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: the colour ramp, low → high attention: (position in [0, 1], RGB)
HEAT_STOPS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.0, (12, 7, 48)),
    (0.3, (98, 21, 110)),
    (0.55, (196, 58, 76)),
    (0.8, (246, 140, 24)),
    (1.0, (250, 240, 150)),
)
#: how much of the colour covers the image where the attention peaks (and where it is 0)
PEAK_ALPHA, FLOOR_ALPHA = 0.75, 0.1


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) → uint8 RGB colours of the ramp, shape ``values.shape + (3,)``."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    positions = np.array([p for p, _ in HEAT_STOPS], dtype=np.float32)
    colours = np.array([c for _, c in HEAT_STOPS], dtype=np.float32)  # [stops, 3]
    out = np.stack([np.interp(v, positions, colours[:, c]) for c in range(3)], axis=-1)  # [..., 3]
    return np.round(out).astype(np.uint8)


def attention_overlay(after: np.ndarray, grid: np.ndarray, box: tuple[int, int, int, int] | None = None,
                      size: int = 192) -> np.ndarray:  # fmt: skip
    """One word's heat map over the after image: ``after`` uint8 [H, W, 3], ``grid`` [g, g] → uint8
    [size, size, 3] showing the ``box`` (left, top, right, bottom) the grid covers (default: the whole image)."""
    h, w = after.shape[:2]
    left, top, right, bottom = box or (0, 0, w, h)
    view = Image.fromarray(np.ascontiguousarray(after[top:bottom, left:right])).resize((size, size), Image.BICUBIC)
    g = np.asarray(grid, dtype=np.float32)
    spread = float(g.max() - g.min())
    g = (g - g.min()) / spread if spread > 1e-6 else np.zeros_like(g)  # [g, g] in [0, 1]
    heat = Image.fromarray(g, mode="F").resize((size, size), Image.BILINEAR)
    v = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)  # [size, size]
    alpha = (FLOOR_ALPHA + (PEAK_ALPHA - FLOOR_ALPHA) * v)[..., None]  # [size, size, 1]
    base = np.asarray(view, dtype=np.float32) * 0.7  # dimmed, so the colours read on bright scenes
    out = base * (1 - alpha) + heat_colours(v).astype(np.float32) * alpha
    return np.round(out).astype(np.uint8)


def word_views(
    after: np.ndarray, attention: np.ndarray, words: list[str], box: tuple[int, int, int, int] | None = None,
    size: int = 192,
) -> list[tuple[str, float, np.ndarray]]:
    """Per word: ``(word, share of its peak grid cell, its heat map over the after image)``."""
    if len(words) != len(attention):
        raise ValueError(f"{len(attention)} attention maps for {len(words)} words")
    return [(word, float(grid.max()), attention_overlay(after, grid, box, size))
            for word, grid in zip(words, attention, strict=True)]  # fmt: skip
