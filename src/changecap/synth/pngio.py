"""A minimal, fast PNG encoder for 8-bit grey and RGB arrays.

Pillow's encoder tries several row filters and spends most of a SynthCC pair's time there; writing the ``Up``
filter for every row with numpy and deflating at level 1 with the run-length strategy is about three times as fast
and compresses noisy aerial tiles as well (measured in ``benchmarks/bench_synth.py``). The output is a standard PNG
that any reader decodes, and it is byte-identical for identical input (zlib is deterministic), which the
determinism tests rely on.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILTER_UP = 2


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _deflate(data: bytes | memoryview, level: int) -> bytes:
    # Z_RLE only looks for runs (distance-1 matches): ~40 % faster than the default strategy on Up-filtered noisy
    # tiles and even a little smaller, since long-distance matches are rare in them; far better on the sparse masks.
    c = zlib.compressobj(level, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    return c.compress(data) + c.flush()


def encode_png(image: np.ndarray, level: int = 1) -> bytes:
    """Encode ``uint8 [H, W]`` (grey) or ``uint8 [H, W, 3]`` (RGB) as PNG bytes."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"expected uint8 [H, W] or [H, W, 3], got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    color_type = 0 if image.ndim == 2 else 2
    rows = np.ascontiguousarray(image).reshape(h, -1)  # [H, W * channels]
    filtered = np.empty((h, rows.shape[1] + 1), np.uint8)  # filter byte + Up-filtered row
    filtered[:, 0] = _FILTER_UP
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # wraps modulo 256 as PNG requires
    header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return b"".join(
        [
            _SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", _deflate(memoryview(filtered).cast("B"), level)),  # no copy of the filtered rows
            _chunk(b"IEND", b""),
        ]
    )


def write_png(path: str | os.PathLike[str], image: np.ndarray, level: int = 1) -> None:
    with open(path, "wb") as f:
        f.write(encode_png(image, level))
