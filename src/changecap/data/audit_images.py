"""Pixel-side measures of ``changecap data audit``: thumbnails, a perceptual hash, a nuisance-robust difference.

One pass reads each pair once (:func:`scan_pair`, picklable so that a process pool can run it) and keeps only a few
numbers per pair: two 64-bit hashes, a digest of the pixels, 16 px copies of both dates (1.5 KB), a difference
score and the mask's statistics. Masks are read at full resolution (a pixel count must not depend on a thumbnail).

**Difference score** (:func:`aligned_difference`). Two dates of the same ground differ by illumination, colour
balance, contrast and a few pixels of misregistration even when nothing changed; a change is *local*. So both
images are brought to a square thumbnail and blurred with a [1, 2, 1] kernel (a sub-pixel misregistration then
costs little), the after image is mapped onto the before one by a per-channel affine fit (gain and offset, least
squares) at the integer shift, within a few pixels, with the smallest mean residual, and the score is the largest
mean absolute residual over the blocks of an 8×8 grid, in grey levels (0–255). :func:`difference_score` computes it
at up to 128 px (``FINE``), after a 64 px pass that settles the pairs far above the threshold. A copy of the before
image with its brightness, colour or registration changed scores 0–4 grey levels; a changed SynthCC pair (the
smallest change: a few houses at 128 px) scores 7 or more, a real LEVIR-CC pair tens.

**Perceptual hash** (:func:`phash`). The classic DCT hash: the 64 px thumbnail in grey at 32×32, its 2-D DCT-II,
the 8×8 lowest frequencies, one bit per coefficient above their median (DC excluded from the median). Re-encoding,
brightness and small shifts move a few bits (up to about 14 of 64 for a copy with colour changes, noise and a
3 px shift); it is used to *find candidates* (both dates within ``max_bits``). A candidate whose 16 px copies
differ by more than ``PRESCREEN_FACTOR`` times the duplicate threshold (:func:`tiny_residual`) is ruled out; the
others are read again and confirmed by :func:`same_scene_difference`, so hash collisions between look-alike scenes
are not reported.

**Masks** come through one path, :class:`MaskSource` and :func:`~changecap.data.semantic_maps.read_change_mask`: a
mask file (class ids 0 / 1 road / 2 building; LEVIR-CD and WHU-CD labels read as building) or, for ``second-cc``, the
pair's two semantic maps, whose difference is the mask (1 = changed, no class). The scan and the report's
thumbnails read both alike.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from changecap.data.audit_text import ChangeExtent
from changecap.data.image_io import read_rgb
from changecap.data.semantic_maps import read_change_mask
from changecap.errors import DataError

if TYPE_CHECKING:
    from changecap.data.annotations import PairRecord

THUMB = 64  # side of the thumbnails the hashes and the first difference pass are computed on
FINE = 128  # largest side the difference scores are computed at
GRID = 8  # the difference score's blocks: an 8×8 grid over the thumbnail
REFINE_FACTOR = 6.0  # a 64 px score this many times above the threshold is final (no 128 px pass)
TINY = 16  # side of the copies kept per pair to pre-screen duplicate candidates
PRESCREEN_FACTOR = 3.0  # a 16 px residual this many times above the duplicate threshold rules a candidate out
HASH_GRID = 32
HASH_LOW = 8  # 8×8 lowest DCT frequencies → 64 bits
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)
    return np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)).astype(np.float32)  # [n, n]


_DCT = _dct_matrix(HASH_GRID)


def thumbnail(img: np.ndarray, size: int) -> np.ndarray:
    """Area-average (box) resize of ``uint8 [H, W, C]`` or ``[H, W]`` to ``size × size``."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((size, size), Image.Resampling.BOX))


def phash(thumb: np.ndarray) -> int:
    """64-bit DCT perceptual hash of an RGB thumbnail (see the module docstring)."""
    grey = thumb.astype(np.float32) @ _LUMA  # [S, S]
    g = np.asarray(Image.fromarray(grey).resize((HASH_GRID, HASH_GRID), Image.Resampling.BOX), np.float32)
    coeffs = (_DCT @ g @ _DCT.T)[:HASH_LOW, :HASH_LOW].ravel()  # [64] lowest frequencies
    bits = coeffs > np.median(coeffs[1:])
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def popcount(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each ``uint64``."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    b = x.view(np.uint8).reshape(*x.shape, 8)  # [..., 8] bytes
    return _BYTE_BITS[b].sum(-1, dtype=np.uint8)


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def blur121(img: np.ndarray) -> np.ndarray:
    """The [1, 2, 1] x [1, 2, 1] / 16 blur of ``[S, S, C]`` (edges replicated), as float32."""
    x = np.pad(img.astype(np.float32), ((1, 1), (1, 1), (0, 0)), mode="edge")
    h = x[:, :-2] + 2 * x[:, 1:-1] + x[:, 2:]  # [S + 2, S, C]
    return (h[:-2] + 2 * h[1:-1] + h[2:]) / 16.0  # [S, S, C]


def aligned_difference(a: np.ndarray, b: np.ndarray, max_shift: int = 2, block: int = 8) -> tuple[float, float]:
    """Mean and largest block-mean absolute residual of ``b`` mapped onto ``a`` (gain/offset per channel, best shift).

    ``a`` and ``b`` are ``uint8 [S, S, 3]``; residuals are in grey levels. ``max_shift`` is in pixels of ``S``. Both
    images are blurred with a [1, 2, 1] kernel first, which makes a sub-pixel misregistration cost little while an
    object of a few pixels still stands out.
    """
    s = max_shift
    size = a.shape[0]
    n = size - 2 * s
    x = blur121(a).transpose(2, 0, 1)[:, s : size - s, s : size - s]  # [3, n, n] fixed centre of the before image
    xc = x - x.mean((1, 2), keepdims=True)
    var = (xc * xc).mean((1, 2), keepdims=True)[:, None]  # [3, 1, 1, 1]
    bc = np.ascontiguousarray(blur121(b).transpose(2, 0, 1))  # [3, S, S]
    windows = np.lib.stride_tricks.sliding_window_view(bc, (n, n), axis=(1, 2))  # [3, k, k, n, n]
    y = windows.reshape(3, -1, n, n)  # [3, k*k, n, n] every shift of the after image (a copy)
    ym = y.mean((2, 3), keepdims=True)  # [3, k*k, 1, 1]
    y -= ym
    gain = np.clip((xc[:, None] * y).mean((2, 3), keepdims=True) / np.maximum(var, 1e-6), 0.0, None)  # [3, k*k, 1, 1]
    resid = np.abs(xc[:, None] * gain - y).mean(0)  # [k*k, n, n]
    means = resid.mean((1, 2))  # [k*k]
    best = resid[int(np.argmin(means))]  # [n, n]
    starts = np.arange(0, n, block)
    sums = np.add.reduceat(np.add.reduceat(best, starts, axis=0), starts, axis=1)  # [nb, nb] block sums
    sides = np.diff(np.append(starts, n)).astype(np.float32)  # [nb] block sides (the last may be shorter)
    return float(means.min()), float((sums / np.outer(sides, sides)).max())


def _geometry(size: int) -> tuple[int, int]:
    """Shift search radius and block side at a thumbnail side: 3 px and 16 px at 128 px, scaled, at least 1 / 4."""
    return max(1, round(3 * size / FINE)), max(4, size // GRID)


def _fine_size(img: np.ndarray) -> int:
    return min(FINE, max(img.shape[0], img.shape[1]))


def difference_score(a: np.ndarray, b: np.ndarray, threshold: float) -> float:
    """Largest block residual of two full-size ``uint8 [H, W, 3]`` dates (the module docstring's score).

    The 64 px pass decides alone when it lies ``REFINE_FACTOR`` times above ``threshold``; otherwise the score is
    computed again at ``FINE`` px (or the native size when smaller), where misregistration costs less.
    """
    size = _fine_size(a)
    if size > THUMB:
        shift, block = _geometry(THUMB)
        coarse = aligned_difference(thumbnail(a, THUMB), thumbnail(b, THUMB), shift, block)[1]
        if coarse >= REFINE_FACTOR * threshold:
            return coarse
    shift, block = _geometry(size)
    return aligned_difference(thumbnail(a, size), thumbnail(b, size), shift, block)[1]


def tiny_residual(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute residual of ``b`` mapped onto ``a`` by a per-channel gain and offset, without a shift search.

    On the 16 px copies a misregistration of a few pixels is a fraction of a pixel, so this is a cheap first test
    of a duplicate candidate.
    """
    x, y = a.astype(np.float32), b.astype(np.float32)
    xc, yc = x - x.mean((0, 1)), y - y.mean((0, 1))
    gain = np.clip((xc * yc).mean((0, 1)) / np.maximum((xc * xc).mean((0, 1)), 1e-6), 0.0, None)  # [3]
    return float(np.abs(xc * gain - yc).mean())


def same_scene_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean residual (grey levels) of two images of possibly different sizes, aligned as in the difference score."""
    size = min(_fine_size(a), _fine_size(b))
    shift, block = _geometry(size)
    return aligned_difference(thumbnail(a, size), thumbnail(b, size), shift, block)[0]


@dataclass(frozen=True)
class MaskSource:
    """Where a pair's change mask is read from, as plain strings (cheap to send to a worker process).

    Either a mask file (``mask_path``: class ids, 1 road and 2 building) or two semantic maps (``semantic_paths``,
    ``second-cc``): the mask is where they differ, 1 = changed, with no class. The field names are
    :class:`~changecap.data.annotations.PairRecord`'s, so that :func:`~changecap.data.semantic_maps.read_change_mask`
    reads a source as it reads a record.
    """

    mask_path: str | None = None
    semantic_paths: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if (self.mask_path is None) == (self.semantic_paths is None):
            raise ValueError("a MaskSource is a mask file or two semantic maps, exactly one of them")

    @classmethod
    def of(cls, rec: PairRecord) -> MaskSource | None:
        """The record's mask file, else its semantic maps, else None."""
        if rec.mask_path is not None:
            return cls(mask_path=str(rec.mask_path))
        if rec.semantic_paths is not None:
            return cls(semantic_paths=(str(rec.semantic_paths[0]), str(rec.semantic_paths[1])))
        return None

    @property
    def derived(self) -> bool:
        """True for a mask derived from semantic maps (values 0 / 1, no class)."""
        return self.mask_path is None

    @property
    def files(self) -> tuple[str, ...]:
        return (self.mask_path,) if self.mask_path is not None else tuple(self.semantic_paths or ())

    @property
    def where(self) -> str:
        """The file a message about the mask names: the mask file, or the before date's semantic map."""
        return self.files[0]

    def read(self) -> np.ndarray:
        """``uint8 [H, W]``: class ids of a mask file, 0 / 1 of a derived mask; a DataError names the bad file."""
        mask = read_change_mask(self)
        assert mask is not None  # __post_init__: a file or two maps is set
        return mask


def as_mask_source(mask: MaskSource | str | os.PathLike[str] | None) -> MaskSource | None:
    """A path means a mask file."""
    return mask if isinstance(mask, MaskSource) or mask is None else MaskSource(mask_path=os.fspath(mask))


@dataclass
class PairScan:
    """What one read of a pair leaves for the checks (no full-size pixels)."""

    width: int = 0
    height: int = 0
    digest: str = ""  # both dates' decoded pixels (exact duplicates)
    hash_a: int = 0
    hash_b: int = 0
    tiny_a: np.ndarray | None = None  # uint8 [TINY, TINY, 3]
    tiny_b: np.ndarray | None = None
    difference: float | None = None  # largest block residual (grey levels); only when asked for
    mask_pixels: int | None = None  # changed pixels (any class)
    mask_classes: dict[int, int] | None = None  # class id → pixels (1 road, 2 building); None for a derived mask
    mask_extent: ChangeExtent | None = None
    error: str | None = None  # the pair could not be read (a one-line DataError message)


def _extent(changed: np.ndarray) -> ChangeExtent | None:
    rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
    if rows.size == 0:
        return None
    h, w = changed.shape
    return ChangeExtent(rows[0] / h, (rows[-1] + 1) / h, cols[0] / w, (cols[-1] + 1) / w)


def read_pair(before: str | os.PathLike[str], after: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Both dates as ``uint8 [H, W, 3]``; a DataError when they differ in size."""
    a, b = read_rgb(before), read_rgb(after)
    if a.shape != b.shape:
        raise DataError(
            after, f"size {b.shape[1]}×{b.shape[0]} differs from the before image ({a.shape[1]}×{a.shape[0]})"
        )
    return a, b


def scan_pair(
    before: str | os.PathLike[str] | None,
    after: str | os.PathLike[str] | None,
    mask: MaskSource | str | os.PathLike[str] | None,
    difference_threshold: float | None = None,
) -> PairScan:
    """Read one pair (images when given, mask when given) and compute its measures; never raises a DataError.

    ``mask`` is a :class:`MaskSource` or a mask file's path. ``difference_threshold`` set: also compute
    :func:`difference_score` (only pairs captioned as changed need it).
    """
    out = PairScan()
    try:
        if before is not None and after is not None:
            a, b = read_pair(before, after)
            out.height, out.width = a.shape[:2]
            out.digest = hashlib.blake2b(a.tobytes() + b.tobytes(), digest_size=16).hexdigest()
            ta, tb = thumbnail(a, THUMB), thumbnail(b, THUMB)
            out.hash_a, out.hash_b = phash(ta), phash(tb)
            out.tiny_a, out.tiny_b = thumbnail(ta, TINY), thumbnail(tb, TINY)
            if difference_threshold is not None:
                out.difference = difference_score(a, b, difference_threshold)
        source = as_mask_source(mask)
        if source is not None:
            m = source.read()
            if out.height and m.shape != (out.height, out.width):
                what = "semantic map size" if source.derived else "mask size"
                raise DataError(source.where, f"{what} {m.shape[1]}×{m.shape[0]} differs from the images")
            counts = np.bincount(m.ravel(), minlength=3)
            out.mask_classes = None if source.derived else {c: int(counts[c]) for c in (1, 2) if counts[c]}
            out.mask_pixels = int(counts[1:].sum())
            out.mask_extent = _extent(m > 0)
    except DataError as e:
        out.error = str(e)
    return out


def near_duplicates(
    hash_a: np.ndarray,
    hash_b: np.ndarray,
    max_bits: int,
    chunk: int = 256,
) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, whose before hashes and after hashes both differ in at most ``max_bits``."""
    n = len(hash_a)
    out: list[tuple[int, int]] = []
    cols = np.arange(n)
    for start in range(0, n, chunk):
        da = popcount(hash_a[start : start + chunk, None] ^ hash_a[None, :])  # [c, n]
        db = popcount(hash_b[start : start + chunk, None] ^ hash_b[None, :])  # [c, n]
        hit = (da <= max_bits) & (db <= max_bits)
        hit &= cols[None, :] > (start + np.arange(hit.shape[0]))[:, None]  # upper triangle only
        for r, c in zip(*np.nonzero(hit)):
            out.append((start + int(r), int(c)))
    return out


def pair_thumbnails(
    before: Path | None, after: Path | None, mask: MaskSource | str | os.PathLike[str] | None, size: int
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Display thumbnails of a flagged pair for the HTML report (None for what is missing or unreadable).

    The mask is grey for road and white for building (class ids × 127), white where a derived mask is changed.
    """

    def rgb(p: Path | None) -> np.ndarray | None:
        try:
            return None if p is None else thumbnail(read_rgb(p), size)
        except DataError:
            return None

    m: np.ndarray | None = None
    source = as_mask_source(mask)
    if source is not None:
        try:
            shade = 255 if source.derived else 127  # derived: 0 / 1; classes: 0 / 1 / 2
            m = np.asarray(Image.fromarray(source.read() * shade).resize((size, size), Image.Resampling.NEAREST))
        except DataError:
            m = None
    return rgb(before), rgb(after), m
