"""Per-date semantic maps of the ``second-cc`` format (SECOND land-cover classes) and change masks derived from them.

SECOND-CC ships, for every pair, one semantic map per date (``{split}/sem/A/<name>``, ``{split}/sem/B/<name>``)
coloured with the SECOND palette. SECOND annotates land cover only where the scene changed; everything else is
white (class 0, "unchanged"). Class ids, in SECOND's order:

===  ==========================  ===============
id   class                       colour (R, G, B)
===  ==========================  ===============
0    unchanged / not annotated   255, 255, 255
1    water                       0, 0, 255
2    ground (non-vegetated)      128, 128, 128
3    low vegetation              0, 128, 0
4    tree                        0, 255, 0
5    building                    128, 0, 0
6    playground (sports field)   255, 0, 0
===  ==========================  ===============

Maps are read as colour images (RGB, RGBA with the alpha ignored, or palette) and decoded through that table; a
single-band (grey) map is read as class ids 0–6 directly, for copies that store indices. Any other colour or value
raises a one-line :class:`~changecap.errors.DataError` naming the file and the first offending values.

The **change mask** of a pair is where the two maps differ (``1`` changed, ``0`` not). SECOND's 30 change types
are ordered pairs of different classes, so "the maps differ" and "a pixel is annotated" mark the same pixels on the
release; a copy whose maps annotate unchanged land too still gets the right mask.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from changecap.data.image_io import image_size, load_image, read_mask
from changecap.errors import DataError

SECOND_CLASSES: tuple[str, ...] = (
    "unchanged",
    "water",
    "ground",
    "low vegetation",
    "tree",
    "building",
    "playground",
)
SECOND_PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 255, 255),
    (0, 0, 255),
    (128, 128, 128),
    (0, 128, 0),
    (0, 255, 0),
    (128, 0, 0),
    (255, 0, 0),
)
_PACKED = {(r << 16) | (g << 8) | b: k for k, (r, g, b) in enumerate(SECOND_PALETTE)}


def _open_map(p: Path) -> np.ndarray:
    """Decoded pixels ``[H, W]`` (single band) or ``[H, W, 3]`` (colour)."""
    if not p.is_file():
        raise DataError(p, "semantic map not found" if not p.exists() else "semantic map is not a file")
    with load_image(p) as img:  # pixel bound, EXIF orientation as for the images of the pair
        if img.mode in ("P", "PA", "RGBA", "RGBX", "RGBa", "LA", "CMYK", "YCbCr"):
            img = img.convert("RGB")  # colour maps: the colours name the classes
        elif img.mode == "1":
            img = img.convert("L")
        arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] != 3:
        raise DataError(p, f"semantic map with {arr.shape[2]} bands; expected an RGB map or a single-band class map")
    return arr


def decode_semantic_map(arr: np.ndarray, path: str | os.PathLike[str] | None = None) -> np.ndarray:
    """SECOND-coloured ``[H, W, 3]`` or class-id ``[H, W]`` pixels → ``uint8 [H, W]`` class ids (table above)."""
    if arr.ndim == 2:
        values = np.unique(arr)
        bad = [int(v) for v in values if not 0 <= int(v) < len(SECOND_CLASSES)]
        if bad:
            shown = ", ".join(str(v) for v in bad[:5]) + (", ..." if len(bad) > 5 else "")
            raise DataError(path, f"invalid class id(s) {shown} in a single-band semantic map; expected 0 to 6")
        return arr.astype(np.uint8)
    rgb = arr.astype(np.uint32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]  # [H, W]
    colours, inverse = np.unique(packed, return_inverse=True)
    bad_colours = [int(c) for c in colours if int(c) not in _PACKED]
    if bad_colours:
        shown = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255})" for c in bad_colours[:3])
        more = ", ..." if len(bad_colours) > 3 else ""
        raise DataError(path, f"colour(s) {shown}{more} are not SECOND classes (see the second-cc class table)")
    lut = np.array([_PACKED[int(c)] for c in colours], dtype=np.uint8)
    return lut[inverse.reshape(packed.shape)]  # [H, W]


def read_semantic_map(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one date's semantic map as ``uint8 [H, W]`` SECOND class ids (0 unchanged … 6 playground)."""
    p = Path(path)
    return decode_semantic_map(_open_map(p), p)


def semantic_map_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` from the header only (``data check`` without ``--deep``)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "semantic map not found" if not p.exists() else "semantic map is not a file")
    return image_size(p)  # upright, as read_semantic_map returns the map


def read_semantic_pair(before: str | os.PathLike[str], after: str | os.PathLike[str]) -> np.ndarray:
    """Both dates' class maps as ``uint8 [2, H, W]``; a DataError when their sizes differ."""
    a, b = read_semantic_map(before), read_semantic_map(after)
    if a.shape != b.shape:
        raise DataError(
            after, f"semantic map size {b.shape[1]}×{b.shape[0]} differs from {before} ({a.shape[1]}×{a.shape[0]})"
        )
    return np.stack([a, b])  # [2, H, W]


def change_from_semantic(maps: np.ndarray) -> np.ndarray:
    """``uint8 [2, H, W]`` class maps → ``uint8 [H, W]`` change mask: 1 where the two dates' classes differ."""
    return (maps[0] != maps[1]).astype(np.uint8)


def read_change_mask(record: Any, binary: bool = False) -> np.ndarray | None:
    """A pair's change mask as ``uint8 [H, W]`` class ids, or None when it has none.

    ``record`` is a :class:`~changecap.data.annotations.PairRecord`: its mask file (0 / 1 / 2 classes, 0 / 1 with
    ``binary``) or, for ``second-cc``, the change derived from its two semantic maps (always 0 / 1).
    """
    if record.mask_path is not None:
        return read_mask(record.mask_path, binary=binary)
    paths = getattr(record, "semantic_paths", None)
    if paths is not None:
        return change_from_semantic(read_semantic_pair(*paths))
    return None
