"""Packed datasets: a dataset's images decoded once into memory-mapped uint8 arrays (``changecap data pack``).

A data loader worker spends most of its time decoding PNGs and resizing them (``benchmarks/bench_loader.py``). A
pack holds every pair of the chosen splits already decoded and, with a ``size``, already resized, so a worker only
copies a row out of a memory-mapped file, normalises and collates. A pack is a folder:

``pack.json``
    ``{"version": 1, "format": "levir-cc", "size": 224 | null, "resize_mode": "clip" | null, "resample": "bicubic",
    "splits": {"train": {"pairs": N, "height": H, "width": W, "masks": true, "records": [{"name": ...,
    "changed": ..., "captions": [...], "mask": true}, ...]}, ...}}``. ``size`` null: the images at their native
    size (one size per split), and no ``resize_mode``.
``<split>_images.npy``
    ``uint8 [N, 2, H, W, 3]``: the before and after image of every pair, in the records' order.
``<split>_masks.npy``
    ``uint8 [N, H, W]``: change classes 0 / 1 / 2 (as ``read_mask`` gives them), only for splits with masks;
    zeros for a pair without one (its record says ``"mask": false``).

A dataset opened with ``packed=`` (``data.packed`` in a training config) reads its pixels from the pack and its
captions and flags from its own annotations as always: the pack's records only tie each pair's name to its row.
Samples are identical to those of the image files (tested), resize and normalisation included: a pack at native
size is resized by the dataset as the files are; a pack made with ``size`` stores what the dataset's geometry gives
and is read only at that size and resize mode. A pack is a snapshot of the images: pack again after they change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from changecap.errors import DataError

PACK_FILE = "pack.json"
PACK_VERSION = 1


def images_file(split: str) -> str:
    return f"{split}_images.npy"


def masks_file(split: str) -> str:
    return f"{split}_masks.npy"


def read_pack_meta(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``pack.json`` of a pack folder, checked for the fields the reader needs (one-line DataError otherwise)."""
    path = Path(folder) / PACK_FILE
    if not Path(folder).is_dir():
        raise DataError(folder, "packed dataset folder not found (make one with: changecap data pack)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(folder, f"not a packed dataset: no {PACK_FILE} (make one with: changecap data pack)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"cannot read the pack description ({' '.join(str(e).split())})") from None
    if not isinstance(meta, dict) or meta.get("version") != PACK_VERSION:
        version = meta.get("version") if isinstance(meta, dict) else None
        raise DataError(path, f"is {version!r}, expected {PACK_VERSION}: pack the dataset again", field="version")
    for key, kind in (("format", str), ("splits", dict)):
        if not isinstance(meta.get(key), kind):
            raise DataError(path, f"expected a {kind.__name__}", field=key)
    size = meta.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise DataError(path, f"expected a positive integer or null, got {size!r}", field="size")
    if size is not None and meta.get("resize_mode") not in ("resize", "clip"):
        raise DataError(path, f"expected 'resize' or 'clip', got {meta.get('resize_mode')!r}", field="resize_mode")
    return meta


class PackedSplit:
    """One split of a pack: its pair names and its pixels, memory-mapped on first use.

    The arrays open lazily and are left out when the object is pickled (a DataLoader worker gets a copy of the
    dataset: it opens its own mapping instead of receiving gigabytes of pixels).
    """

    def __init__(self, folder: str | os.PathLike[str], split: str, meta: dict[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        meta = read_pack_meta(folder) if meta is None else meta
        where = self.folder / PACK_FILE
        entry = meta["splits"].get(split)
        if not isinstance(entry, dict):
            packed = ", ".join(meta["splits"]) or "none"
            raise DataError(where, f"the pack holds no {split} split (it has {packed})", field="splits")
        records = entry.get("records")
        if not isinstance(records, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str)
                                                    for r in records):  # fmt: skip
            raise DataError(where, "expected a list of records with names", field=f"splits.{split}.records")
        self.split = split
        self.format: str = meta["format"]
        self.size: int | None = meta.get("size")
        self.resize_mode: str | None = meta.get("resize_mode")
        self.records: list[dict[str, Any]] = records
        self.has_masks = bool(entry.get("masks"))
        self.row_of: dict[str, int] = {r["name"]: i for i, r in enumerate(records)}
        self._images: np.ndarray | None = None
        self._masks: np.ndarray | None = None
        self._check_files()

    def _open(self, name: str, shape: tuple[int | None, ...]) -> np.ndarray:
        """Map ``name`` and check it is uint8 of ``shape`` (``None``: any length on that axis)."""
        path = self.folder / name
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise DataError(path, "missing from the pack; pack the dataset again") from None
        except (OSError, ValueError) as e:
            raise DataError(path, f"cannot read the packed array ({' '.join(str(e).split())})") from None
        fits = arr.ndim == len(shape) and all(want is None or got == want for got, want in zip(arr.shape, shape))
        if arr.dtype != np.uint8 or not fits:
            wanted = ["*" if n is None else n for n in shape]
            raise DataError(path, f"holds {arr.dtype} {list(arr.shape)}, not uint8 {wanted}; pack the dataset again")
        return arr

    def _check_files(self) -> None:
        """Shapes checked once, in the process that opens the pack (a worker's copy maps the files again)."""
        n = len(self.records)
        self._images = self._open(images_file(self.split), (n, 2, None, None, 3))
        if self.has_masks:
            self._masks = self._open(masks_file(self.split), (n, *self._images.shape[2:4]))

    @property
    def images(self) -> np.ndarray:
        """``uint8 [N, 2, H, W, 3]``, memory-mapped."""
        if self._images is None:
            self._images = np.load(self.folder / images_file(self.split), mmap_mode="r", allow_pickle=False)
        return self._images

    @property
    def masks(self) -> np.ndarray | None:
        """``uint8 [N, H, W]`` class ids, memory-mapped (None: the split has no masks)."""
        if self.has_masks and self._masks is None:
            self._masks = np.load(self.folder / masks_file(self.split), mmap_mode="r", allow_pickle=False)
        return self._masks

    def pair(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Row ``row``'s before and after images ``uint8 [H, W, 3]`` and its mask ``uint8 [H, W]`` (None without
        one), copied out of the mapping."""
        both = np.array(self.images[row])  # [2, H, W, 3]
        masks = self.masks
        mask = np.array(masks[row]) if masks is not None and self.records[row].get("mask", True) else None
        return both[0], both[1], mask

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_images"] = state["_masks"] = None  # reopened by the receiving process
        return state
