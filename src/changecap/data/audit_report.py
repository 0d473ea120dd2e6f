"""The self-contained HTML page of ``changecap data audit``: counts per check and every flagged pair.

Each flagged pair's thumbnails (before, after and, where there is one, the mask: grey = road, white = building; for
``second-cc``, white where the two semantic maps differ) are embedded once as base64 PNG in a CSS class and shown
beside every finding of that pair, so a pair flagged by several checks does not repeat its pixels. The page loads
nothing from anywhere (no script, no font, no link).
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from changecap.data.audit import CHECKS, AuditReport, Finding
from changecap.data.audit_images import MaskSource, pair_thumbnails
from changecap.data.files import atomic_write_text
from changecap.errors import DataError

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
td.n { text-align: right; } td.imgs { white-space: nowrap; }
.other { font-size: 0.8em; color: #666; margin-top: 4px; }
.error { color: #b00020; } .warning { color: #a15c00; } .info { color: #555; }
.skip { color: #777; font-style: italic; }
.t { display: inline-block; background-size: cover; border: 1px solid #999; margin-right: 3px; }
.note { color: #666; font-size: 0.9em; }
ol.caps { margin: 0.2em 0; padding-left: 1.6em; font-size: 0.9em; }
"""


def _png_b64(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _thumb_styles(
    report: AuditReport, keys: list[tuple[str, str]], size: int, progress: bool | None
) -> tuple[dict[tuple[str, str], list[tuple[str, str]]], str]:
    """Each pair's thumbnails as CSS classes: ``({pair key: [(class, label)]}, the CSS rules)``."""
    classes: dict[tuple[str, str], list[tuple[str, str]]] = {}
    rules: list[str] = []
    bar = tqdm(keys, desc="thumbnails", unit="pair", disable=(None if progress is None else not progress))
    for n, key in enumerate(bar):
        rec = report.records.get(key)
        if rec is None:
            continue
        imgs = pair_thumbnails(rec.before_path, rec.after_path, MaskSource.of(rec), size)
        names: list[tuple[str, str]] = []
        for label, img in zip(("before", "after", "mask"), imgs):
            if img is None:
                continue
            cls = f"p{n}{label[0]}"
            rules.append(f".{cls} {{ background-image: url(data:image/png;base64,{_png_b64(img)}); }}")
            names.append((cls, label))
        classes[key] = names
    return classes, "\n".join(rules)


def _figures(thumbs: list[tuple[str, str]], size: int) -> str:
    return "".join(
        f'<span class="t {cls}" style="width:{size}px;height:{size}px" title="{label}"></span>' for cls, label in thumbs
    )


def _finding_row(
    f: Finding,
    thumbs: list[tuple[str, str]],
    other: list[tuple[str, str]],
    size: int,
    captions: list[str],
    show_images: bool,
) -> str:
    figs = _figures(thumbs, size)
    if other:
        where = f"{f.extra.get('other_split')}/{f.extra.get('other_name')}"
        figs += f'<div class="other">{html.escape(where)}</div>{_figures(other, size)}'
    caps = "".join(f"<li>{html.escape(c) if c else '<i>(empty)</i>'}</li>" for c in captions)
    caps_html = f'<ol class="caps" start="0">{caps}</ol>' if caps else ""
    cell = f'<td class="imgs">{figs}</td>' if show_images else ""
    return (
        f"<tr><td>{html.escape(f.split)}/{html.escape(f.name)}</td>{cell}"
        f"<td>{html.escape(f.detail)}{caps_html}</td></tr>"
    )


def render_html(report: AuditReport, thumb_size: int = 96, progress: bool | None = None) -> str:
    """The report page as one HTML string."""
    by_check: dict[str, list[Finding]] = defaultdict(list)
    for f in report.findings:
        by_check[f.check].append(f)
    keys = list(dict.fromkeys((f.split, f.name) for f in report.findings))
    for f in report.findings:  # show the other member of a duplicate too
        other = (f.extra.get("other_split"), f.extra.get("other_name"))
        if other[0] is not None and other not in keys:
            keys.append(other)  # type: ignore[arg-type]
    images = report.pairs_with_images > 0 or report.pairs_with_masks > 0
    classes, css = _thumb_styles(report, keys, thumb_size, progress) if images else ({}, "")
    counts = report.counts
    rows = []
    for c in CHECKS:
        status = (
            f'<span class="skip">skipped: {html.escape(report.skipped[c.name])}</span>'
            if c.name in report.skipped
            else f"{counts[c.name]}"
        )
        link = f'<a href="#{c.name}">{c.name}</a>' if by_check.get(c.name) else c.name
        rows.append(
            f'<tr><td>{link}</td><td>{c.group}</td><td class="{c.severity}">{c.severity}</td>'
            f'<td class="n">{status}</td><td>{html.escape(c.description)}</td></tr>'
        )
    shown = ["before", "after"] * (report.pairs_with_images > 0) + ["mask"] * (report.pairs_with_masks > 0)
    image_head = f"<th>{' · '.join(shown)}</th>" if images else ""
    sections = []
    for c in CHECKS:
        found = by_check.get(c.name)
        if not found:
            continue
        body = []
        for f in found:
            rec = report.records.get((f.split, f.name))
            other = (f.extra.get("other_split"), f.extra.get("other_name"))
            body.append(
                _finding_row(
                    f,
                    classes.get((f.split, f.name), []),
                    classes.get(other, []),  # type: ignore[arg-type]
                    thumb_size,
                    rec.captions if rec else [],
                    images,
                )
            )
        sections.append(
            f'<h2 id="{c.name}" class="{c.severity}">{c.name} ({len(found)})</h2>'
            f'<p class="note">{html.escape(c.description)}</p>'
            f"<table><tr><th>pair</th>{image_head}<th>detail and captions</th></tr>{''.join(body)}</table>"
        )
    notes = "".join(
        f"<p class='note'>Not reported under {html.escape(k)}: {v['count']} pair(s), {html.escape(v['reason'])}.</p>"
        for k, v in report.notes.items()
    )
    no_images = (
        ""
        if images
        else "<p class='skip'>No image or mask files: the image checks were skipped and no thumbnails are shown.</p>"
    )
    total = sum(report.pairs.values())
    splits = ", ".join(f"{html.escape(s)} {n}" for s, n in report.pairs.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>changecap data audit — {html.escape(report.root)}</title>
<style>{_CSS}
{css}
</style></head><body>
<h1>changecap data audit</h1>
<p>Dataset <code>{html.escape(report.root)}</code> ({html.escape(report.format)}): {total} pairs ({splits}); with
images {report.pairs_with_images}, with masks {report.pairs_with_masks}. {len(report.findings)} finding(s) on
{report.flagged_pairs} pair(s).</p>
{no_images}
<table><tr><th>check</th><th>group</th><th>severity</th><th>findings</th><th>what it means</th></tr>
{"".join(rows)}</table>
{notes}
{"".join(sections)}
</body></html>
"""


def write_html(
    report: AuditReport, path: str | os.PathLike[str], thumb_size: int = 96, progress: bool | None = None
) -> Path:
    """Write the report page to ``path`` (atomically) and return it."""
    out = Path(path)
    text = render_html(report, thumb_size, progress)
    try:
        atomic_write_text(out, text)
    except OSError as e:
        raise DataError(out, f"cannot write the HTML report ({e.strerror or e})") from None
    return out
