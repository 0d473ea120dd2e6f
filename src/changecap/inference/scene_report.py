"""``report.html`` of a scene run: self-contained (images inlined as PNG data URIs, no external assets) — both scenes
side by side with the changed tiles outlined, a table of the changed tiles with before/after thumbnails, captions and
probabilities, and the run's settings."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from changecap.data.files import atomic_write_text

THUMB_SIDE = 128


def _data_uri(rgb: np.ndarray, side: int | None = None) -> str:
    img = Image.fromarray(rgb)
    if side is not None:
        img = img.resize((side, side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_scene_report(
    settings: Any,
    crs: Any,
    results: list[Any],
    overviews: list[tuple[str, np.ndarray, float]],
    thumbnails: dict[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
) -> Path:
    """The page: ``overviews`` are (label, RGB on BEFORE's grid, screen pixels per source pixel) per date,
    ``thumbnails`` the (before, after) RGB of the changed tiles to show by ``"row_col"``, in the order to show them."""
    changed = [r for r in results if r.skipped is None and r.changed]
    panels, rows = [], []
    for label, image, scale in overviews:
        boxes = "".join(
            f'<rect x="{r.x * scale:.1f}" y="{r.y * scale:.1f}" width="{r.size * scale:.1f}" '
            f'height="{r.size * scale:.1f}" class="changed"><title>tile {r.row},{r.col}</title></rect>'
            for r in changed
        )
        h, w = image.shape[:2]
        panels.append(
            f"<figure><figcaption>{html.escape(label)}</figcaption>"
            f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}"><image href="{_data_uri(image)}" '
            f'width="{w}" height="{h}"/>{boxes}</svg></figure>'
        )
    by_key = {f"{r.row}_{r.col}": r for r in changed}
    shown = [by_key[key] for key in thumbnails]  # in the order the caller chose
    for r in shown:
        before, after = thumbnails[f"{r.row}_{r.col}"]
        prob = "n/a" if r.change_probability is None else f"{r.change_probability:.3f}"
        rows.append(
            f'<tr><td>{r.row}, {r.col}</td><td><img alt="before" src="{_data_uri(before, THUMB_SIDE)}"></td>'
            f'<td><img alt="after" src="{_data_uri(after, THUMB_SIDE)}"></td>'
            f"<td>{html.escape(r.caption or '')}</td><td>{prob}</td></tr>"
        )
    counted = len([r for r in results if r.skipped is None])
    settings_rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in asdict(settings).items()
    )
    header = "<tr><th>tile (row, col)</th><th>before</th><th>after</th><th>caption</th><th>P(change)</th></tr>"
    table = f"<table class='tiles'>{header}{''.join(rows)}</table>" if rows else "<p>No tile was found changed.</p>"
    if len(shown) < len(changed):
        table = (f"<p>The {len(shown)} most probable of the {len(changed)} changed tiles; changes.geojson lists them "
                 f"all.</p>{table}")  # fmt: skip
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>changecap scene report</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }} figure {{ display: inline-block; margin: 0 1em 1em 0; }}
rect.changed {{ fill: none; stroke: #e6194b; stroke-width: 2; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: middle; }}
</style></head><body>
<h1>Scene change report</h1>
<p>{len(results)} tiles of {settings.tile} px (overlap {settings.overlap}); {counted} captioned,
{len(results) - counted} skipped (nodata), <b>{len(changed)} changed</b> (outlined).</p>
{"".join(panels)}
<h2>Changed tiles</h2>
{table}
<h2>Settings</h2>
<table>{settings_rows}<tr><th>CRS</th><td>{html.escape(str(crs))}</td></tr></table>
</body></html>
"""
    atomic_write_text(path, page)
    return path
