"""``report.html`` of a scene run: self-contained (images inlined as PNG data URIs, no external assets) — both scenes
side by side with the changed tiles outlined, a table of the changed tiles with before/after thumbnails, captions and
probabilities (columns only for what the model predicts), and the run's settings."""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
from PIL import Image

THUMB_SIDE = 128
# why tiles were skipped (tiles.jsonl's "skipped"), as the summary line and the report say it
SKIP_REASONS = {"nodata": "without data in a date", "min_valid": "below --min-valid {min_valid:g}"}


def describe_skips(by_reason: Mapping[str, int], min_valid: float) -> str:
    """``"2 skipped (1 without data in a date, 1 below --min-valid 0.5)"``; ``"0 skipped"`` when none was."""
    total = sum(by_reason.values())
    if not total:
        return "0 skipped"
    parts = [f"{n} {SKIP_REASONS.get(k, k).format(min_valid=min_valid)}" for k, n in by_reason.items()]
    return f"{total} skipped ({', '.join(parts)})"


def _data_uri(rgb: np.ndarray, side: int | None = None) -> str:
    img = Image.fromarray(rgb)
    if side is not None:
        img = img.resize((side, side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render_scene_report(
    settings: Any,
    crs: Any,
    results: list[Any],
    overviews: list[tuple[str, np.ndarray, float]],
    thumbnails: dict[str, tuple[np.ndarray, np.ndarray]],
    window: tuple[int, int, int, int],
) -> str:
    """The page: ``overviews`` are (label, RGB on BEFORE's grid, screen pixels per source pixel) per date,
    ``thumbnails`` the (before, after) RGB of the changed tiles to show by ``"row_col"``, in the order to show them;
    tiles are outlined where they lie inside ``window`` (the overlap: row_off, col_off, height, width)."""
    changed = [r for r in results if r.skipped is None and r.changed]
    r0, c0, h0, w0 = window
    panels, rows = [], []
    for label, image, scale in overviews:
        boxes = []
        for r in changed:
            y, x = max(r.y, r0), max(r.x, c0)
            h, w = min(r.y + r.size, r0 + h0) - y, min(r.x + r.size, c0 + w0) - x
            boxes.append(f'<rect x="{x * scale:.1f}" y="{y * scale:.1f}" width="{w * scale:.1f}" '
                         f'height="{h * scale:.1f}" class="changed"><title>tile {r.row},{r.col}</title></rect>')
        h, w = image.shape[:2]
        panels.append(
            f"<figure><figcaption>{html.escape(label)}</figcaption>"
            f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}"><image href="{_data_uri(image)}" '
            f'width="{w}" height="{h}"/>{"".join(boxes)}</svg></figure>'
        )
    by_key = {f"{r.row}_{r.col}": r for r in changed}
    shown = [by_key[key] for key in thumbnails]  # in the order the caller chose
    # a column for each thing the model predicts: no empty caption or P(change) column
    with_caption = any(r.caption is not None for r in shown)
    with_prob = any(r.change_probability is not None for r in shown)
    for r in shown:
        before, after = thumbnails[f"{r.row}_{r.col}"]
        cells = [f"<td>{r.row}, {r.col}</td>", f'<td><img alt="before" src="{_data_uri(before, THUMB_SIDE)}"></td>',
                 f'<td><img alt="after" src="{_data_uri(after, THUMB_SIDE)}"></td>']  # fmt: skip
        if with_caption:
            cells.append(f"<td>{html.escape(r.caption or '')}</td>")
        if with_prob:
            cells.append(f"<td>{r.change_probability:.3f}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    counted = len([r for r in results if r.skipped is None])
    skips = dict(sorted(Counter(r.skipped for r in results if r.skipped is not None).items()))
    settings_rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in asdict(settings).items()
    )
    columns = ["tile (row, col)", "before", "after"] + ["caption"] * with_caption + ["P(change)"] * with_prob
    header = "<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"
    table = f"<table class='tiles'>{header}{''.join(rows)}</table>" if rows else "<p>No tile was found changed.</p>"
    if len(shown) < len(changed):
        table = (f"<p>The {len(shown)} most probable of the {len(changed)} changed tiles; changes.geojson lists them "
                 f"all.</p>{table}")  # fmt: skip
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>changecap scene report</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }} figure {{ display: inline-block; margin: 0 1em 1em 0; }}
rect.changed {{ fill: none; stroke: #e6194b; stroke-width: 2; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: middle; }}
</style></head><body>
<h1>Scene change report</h1>
<p>{len(results)} tiles of {settings.tile} px (overlap {settings.overlap}); {counted} captioned,
{html.escape(describe_skips(skips, settings.min_valid))}, <b>{len(changed)} changed</b> (outlined).</p>
{"".join(panels)}
<h2>Changed tiles</h2>
{table}
<h2>Settings</h2>
<table>{settings_rows}<tr><th>CRS</th><td>{html.escape(str(crs))}</td></tr></table>
</body></html>
"""
