"""``changecap data pack``: write a dataset's images as a pack (layout and reading in ``changecap.data.packed``).

Every pair is read through :class:`~changecap.data.datasets.ChangeCaptionDataset` (the decoders, the size checks and,
with ``size``, the geometry training uses), so what a pack holds is what the dataset would compute. The pack is
built in a temporary folder beside ``out`` and renamed into place when complete: an interrupted pack leaves no half
pack behind, and an existing pack at ``out`` is replaced only by a complete one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from changecap.data.annotations import SPLITS, Layout, check_format
from changecap.data.datasets import ChangeCaptionDataset
from changecap.data.files import check_output_dir, make_temp_dir, replace_folder
from changecap.data.packed import PACK_FILE, PACK_VERSION, images_file, masks_file
from changecap.data.vocab import Vocabulary
from changecap.errors import ConfigError, DataError


@dataclass
class PackSummary:
    """What :func:`write_pack` wrote."""

    out: Path
    pairs: dict[str, int] = field(default_factory=dict)  # split → pairs
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict)  # split → (height, width)
    bytes: int = 0

    def format_text(self) -> str:
        parts = ", ".join(f"{s} {n} ({h}×{w} px)" for (s, n), (h, w) in zip(self.pairs.items(), self.shapes.values()))
        return f"packed {sum(self.pairs.values())} pairs ({parts}) into {self.out}: {self.bytes / 2**30:.2f} GiB"


def _check_out(out: Path) -> Path:
    """``out`` must be new, empty, or a pack (which is replaced); checked before any image is read."""
    path = check_output_dir(out, "--out")
    if path.is_dir() and any(path.iterdir()) and not (path / PACK_FILE).is_file():
        raise DataError(path, "holds files and is not a pack; choose a new or empty folder", field="--out")
    return path


def write_pack(
    root: str | os.PathLike[str],
    format: str,  # noqa: A002 - mirrors the CLI's --format
    out: str | os.PathLike[str],
    *,
    size: int | None = None,
    resize_mode: str = "resize",
    splits: Iterable[str] | None = None,
    layout: Layout | None = None,
    progress: bool | None = None,
) -> PackSummary:
    """Decode every pair of ``splits`` (default: every split with pairs) of the dataset at ``root`` into a pack at
    ``out``. ``size``: store the images fitted to ``size`` px with ``resize_mode`` (``resize``: a square,
    ``clip``: shorter side and centre crop), as the dataset reads them with ``image_size`` and ``resize_mode``;
    ``None`` keeps the native size, which every image of a split must then share (``resize_mode`` is then unused).
    """
    fmt = check_format(format)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise ConfigError("--size", f"must be a positive number of pixels, got {size!r}")
    if resize_mode not in ("resize", "clip"):
        raise ConfigError("--resize-mode", f"expected 'resize' or 'clip', got {resize_mode!r}")
    chosen = tuple(splits) if splits is not None else SPLITS
    for split in chosen:
        if split not in SPLITS:
            raise ConfigError("--splits", f"unknown split {split!r}; expected some of {', '.join(SPLITS)}")
    target = _check_out(Path(out))
    mode = resize_mode if size is not None else "resize"  # native size: no geometry at all
    placeholder = Vocabulary.build([], threshold=0)  # pixels only: no caption is encoded
    sets = {}
    for split in chosen:
        ds = ChangeCaptionDataset(
            root, fmt, split, placeholder, image_size=size, resize_mode=mode, layout=layout  # type: ignore[arg-type]
        )
        if ds.records:
            sets[split] = ds
    if not sets:
        raise DataError(root, f"has no pairs in the split(s) {', '.join(chosen)}")
    for ds in sets.values():
        if not ds.has_images:
            raise DataError(root, "has no images to pack (a caption-only dataset)")

    summary = PackSummary(out=target)
    meta: dict[str, Any] = {
        "version": PACK_VERSION,
        "format": fmt,
        "size": size,
        "resize_mode": resize_mode if size is not None else None,
        "resample": next(iter(sets.values())).resample,
        "source": str(Path(root).resolve()),
        "splits": {},
    }
    total = sum(len(ds.records) for ds in sets.values())
    tmp = make_temp_dir(target)
    try:
        shown = None if progress is None else not progress  # None: a bar on a terminal only
        with tqdm(total=total, unit="pair", desc="pack", disable=shown) as bar:
            for split, ds in sets.items():
                meta["splits"][split] = _write_split(ds, tmp, bar)
                h, w = meta["splits"][split]["height"], meta["splits"][split]["width"]
                summary.pairs[split], summary.shapes[split] = len(ds.records), (h, w)
        (tmp / PACK_FILE).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        summary.bytes = sum(p.stat().st_size for p in tmp.iterdir())
        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never half a pack (Ctrl-C and SIGTERM included)
        raise
    return summary


def _write_split(ds: ChangeCaptionDataset, folder: Path, bar: tqdm) -> dict[str, Any]:
    """One split's arrays (written row by row through a memory map) and its entry of ``pack.json``."""
    n = len(ds.records)
    with_masks = any(rec.mask_path is not None for rec in ds.records)
    first = ds.pixels(0)
    h, w = first[0].shape[:2]
    images = np.lib.format.open_memmap(folder / images_file(ds.split), mode="w+", dtype=np.uint8, shape=(n, 2, h, w, 3))
    masks = (
        np.lib.format.open_memmap(folder / masks_file(ds.split), mode="w+", dtype=np.uint8, shape=(n, h, w))
        if with_masks
        else None
    )
    records = []
    for i, rec in enumerate(ds.records):
        before, after, mask = first if i == 0 else ds.pixels(i)
        if before.shape[:2] != (h, w):
            raise DataError(
                rec.before_path,
                f"is {before.shape[1]}×{before.shape[0]} px but the {ds.split} split's first image is {w}×{h}; "
                "pack images of different sizes with --size",
                field="--size",
            )
        images[i, 0], images[i, 1] = before, after  # [H, W, 3] each
        if masks is not None and mask is not None:
            masks[i] = mask  # [H, W]
        records.append({"name": rec.name, "changed": rec.changed, "captions": rec.captions,
                        "mask": mask is not None})  # fmt: skip
        bar.update(1)
    images.flush()
    del images
    if masks is not None:
        masks.flush()
        del masks
    return {"pairs": n, "height": h, "width": w, "masks": with_masks, "records": records}
