"""Sample figure of a SynthCC folder: before | after | change mask, with the first reference caption underneath.

Samples are chosen from ``synthcc_meta.json`` to show one pair of each change recipe (and one unchanged pair), the
first of each in file order, so the figure of a given folder is always the same.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from changecap.data.files import atomic_write
from changecap.data.image_io import load_image
from changecap.errors import ConfigError, DataError
from changecap.synth.generate import ANNOTATION_FILE, META_FILE
from changecap.synth.scene import RECIPES

_GAP = 4
_PAD = 10
_BG = (255, 255, 255)
_TEXT = (20, 20, 20)
_MUTED = (90, 90, 90)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except (TypeError, OSError):  # pragma: no cover - very old Pillow / no FreeType
        return ImageFont.load_default()


def choose_samples(records: list[dict[str, Any]], meta: dict[str, Any] | None, n: int) -> list[dict[str, Any]]:
    """Up to ``n`` records: one per change recipe (in ``RECIPES`` order), then an unchanged pair, then more pairs."""
    by_name = {r["filename"]: r for r in records}
    chosen: list[dict[str, Any]] = []
    if meta is not None:
        items = meta.get("items", [])
        for recipe in RECIPES:
            hit = next((it for it in items if it.get("recipe") == recipe), None)
            if hit is not None and hit["filename"] in by_name and len(chosen) < n - 1:
                chosen.append(by_name[hit["filename"]])
    unchanged = next((r for r in records if not r.get("changeflag")), None)
    if unchanged is not None and len(chosen) < n:
        chosen.append(unchanged)
    for r in records:
        if len(chosen) >= n:
            break
        if r not in chosen and r.get("changeflag"):
            chosen.append(r)
    return chosen[:n]


def render_figure(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    samples: int = 8,
    columns: int = 2,
    tile: int = 128,
) -> Path:
    """Draw the sample grid of the SynthCC folder ``root`` into the PNG ``out`` and return its path."""
    if samples < 1:
        raise ConfigError("samples", f"must be >= 1, got {samples}")
    if columns < 1:
        raise ConfigError("columns", f"must be >= 1, got {columns}")
    if not 32 <= tile <= 512:
        raise ConfigError("tile", f"must be between 32 and 512 pixels, got {tile}")
    root = Path(root)
    ann = root / ANNOTATION_FILE
    if not ann.exists():
        raise DataError(ann, "not found (generate the set first with 'changecap synth --out DIR')")
    records = json.loads(ann.read_text(encoding="utf-8"))["images"]
    meta = json.loads((root / META_FILE).read_text(encoding="utf-8")) if (root / META_FILE).exists() else None
    chosen = choose_samples(records, meta, samples)

    font, small = _font(13), _font(11)
    cell_w = 3 * tile + 2 * _GAP
    chars = max(20, int(cell_w / 6.6))  # ~6.6 px per character of the 13 px default font
    wrapped = [textwrap.wrap(" ".join(r["sentences"][0]["tokens"]), chars)[:3] for r in chosen]
    text_h = 16 * max(len(w) for w in wrapped) + 6
    header_h = 20
    rows = (len(chosen) + columns - 1) // columns
    width = _PAD + columns * (cell_w + _PAD)
    height = _PAD + header_h + rows * (tile + text_h + _PAD)
    canvas = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(canvas)
    for c in range(columns):
        x0 = _PAD + c * (cell_w + _PAD)
        for j, label in enumerate(("before (A)", "after (B)", "change mask")):
            draw.text((x0 + j * (tile + _GAP) + 2, _PAD), label, fill=_MUTED, font=small)
    for i, (rec, lines) in enumerate(zip(chosen, wrapped)):
        x0 = _PAD + (i % columns) * (cell_w + _PAD)
        y0 = _PAD + header_h + (i // columns) * (tile + text_h + _PAD)
        folder = root / "images" / rec["filepath"]
        for j, sub in enumerate(("A", "B", "label")):
            im = load_image(folder / sub / rec["filename"]).convert("RGB")
            resample = Image.Resampling.NEAREST if sub == "label" else Image.Resampling.LANCZOS
            canvas.paste(im.resize((tile, tile), resample), (x0 + j * (tile + _GAP), y0))
        for k, line in enumerate(lines):
            draw.text((x0, y0 + tile + 4 + 16 * k), line, fill=_TEXT, font=font)
    out = Path(out)
    with atomic_write(out, binary=True) as f:
        canvas.save(f, format="PNG", optimize=True)
    return out
