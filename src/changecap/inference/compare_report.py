"""A self-contained HTML report of ``changecap compare``: tables and the intervals drawn as inline SVG.

Per metric, one figure shows each system's score with its bootstrap 95 % interval and one shows each difference
(b − a) with its interval against a dashed zero line; a difference whose interval excludes 0 is drawn green
(b better) or red (b worse). No script, style sheet, font or image is loaded from elsewhere.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from changecap.data.files import atomic_write_text
from changecap.metrics.significance import Comparison

_GOOD, _BAD, _NEUTRAL = "#1a7f37", "#cf222e", "#57606a"
_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#1f2328;max-width:1200px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:right}
th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}.note{color:#57606a;font-size:90%}
.figs{display:flex;flex-wrap:wrap;gap:8px 32px}h3{margin-bottom:2px}
"""


def _esc(x: object) -> str:
    return html.escape(str(x))


def _p(p: float, permutations: int) -> str:
    floor = 1 / (permutations + 1)
    return f"&le;{floor:.4f}" if p <= floor * (1 + 1e-9) else f"{p:.4f}"


def interval_svg(rows: list[tuple[str, float, float, float]], zero: bool, width: int = 560) -> str:
    """Horizontal interval plot: one row per ``(label, value, low, high)`` (already scaled, e.g. × 100).

    With ``zero`` the axis includes 0, draws it dashed and colours rows whose interval excludes it."""
    label_w, value_w, row_h, top = 130, 190, 24, 8
    lo = min(r[2] for r in rows)
    hi = max(r[3] for r in rows)
    if zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    pad = (hi - lo) * 0.06 or 1.0
    lo, hi = lo - pad, hi + pad
    plot_w = width - label_w - value_w

    def x(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * plot_w

    height = top + row_h * len(rows) + 22
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="12" '
           f'font-family="sans-serif">']  # fmt: skip
    axis_y = top + row_h * len(rows)
    out.append(f'<line x1="{label_w}" y1="{axis_y}" x2="{label_w + plot_w}" y2="{axis_y}" stroke="#8c959f"/>')
    for v, anchor in ((lo + pad, "start"), (hi - pad, "end")):
        if zero and abs(x(v) - x(0)) < 30:
            continue  # the 0 label is drawn there
        out.append(f'<text x="{x(v):.1f}" y="{axis_y + 15}" text-anchor="{anchor}" fill="#57606a">{v:.2f}</text>')
    if zero:
        out.append(f'<line x1="{x(0):.1f}" y1="{top - 4}" x2="{x(0):.1f}" y2="{axis_y}" stroke="#8c959f" '
                   'stroke-dasharray="4 3"/>')  # fmt: skip
        out.append(f'<text x="{x(0):.1f}" y="{axis_y + 15}" text-anchor="middle" fill="#57606a">0</text>')
    for i, (label, value, low, high) in enumerate(rows):
        y = top + row_h * i + row_h / 2
        colour = _NEUTRAL
        if zero and low > 0:
            colour = _GOOD
        elif zero and high < 0:
            colour = _BAD
        out.append(f'<text x="{label_w - 8}" y="{y + 4:.1f}" text-anchor="end">{_esc(label)}</text>')
        out.append(f'<line x1="{x(low):.1f}" y1="{y:.1f}" x2="{x(high):.1f}" y2="{y:.1f}" stroke="{colour}" '
                   'stroke-width="2"/>')  # fmt: skip
        for end in (low, high):
            out.append(f'<line x1="{x(end):.1f}" y1="{y - 5:.1f}" x2="{x(end):.1f}" y2="{y + 5:.1f}" '
                       f'stroke="{colour}" stroke-width="2"/>')  # fmt: skip
        out.append(f'<circle cx="{x(value):.1f}" cy="{y:.1f}" r="4" fill="{colour}"/>')
        sign = "+" if zero else ""
        text = f"{value:{sign}.2f} [{low:{sign}.2f}, {high:{sign}.2f}]"
        out.append(f'<text x="{label_w + plot_w + 8}" y="{y + 4:.1f}">{text}</text>')
    out.append("</svg>")
    return "".join(out)


def comparison_html(c: Comparison) -> str:
    """The whole report as one HTML string."""
    where = f"{_esc(c.split)} split of {_esc(c.data)}, " if c.split else ""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>changecap compare</title>",
        f"<style>{_CSS}</style></head><body><h1>System comparison</h1>",
        f"<p>{where}{c.n} pairs, protocol {_esc(c.protocol)} ({_esc(c.tokenizer)}); paired bootstrap with "
        f"{c.resamples} resamples (95 % percentile intervals), paired approximate randomisation with "
        f"{c.permutations} permutations, seed {c.seed}. Scores × 100.</p>",
        "<h2>Systems</h2><table><tr><th>metric</th>",
    ]
    parts += [f"<th>{_esc(s.label)}<br><span class='note'>{s.runs} run{'s' if s.runs > 1 else ''}</span></th>"
              for s in c.systems]  # fmt: skip
    parts.append("</tr>")
    for m in c.metrics:
        cells = []
        for s in c.systems:
            lo, hi = s.ci95[m]
            sd = s.sd[m]
            text = f"{100 * s.scores[m]:.2f}" + (f" ± {100 * sd:.2f}" if sd is not None else "")
            cells.append(f"<td>{text}<br><span class='note'>[{100 * lo:.2f}, {100 * hi:.2f}]</span></td>")
        parts.append(f"<tr><th>{_esc(m)}</th>{''.join(cells)}</tr>")
    parts.append("</table><p class='note'>score (± sd over runs when a system has several) [bootstrap 95 % CI]</p>")

    parts.append("<h2>Differences</h2>")
    for p in c.pairs:
        seeds = any(v.get("wins") is not None for v in p.metrics.values())
        parts.append(f"<h3>{_esc(p.b)} − {_esc(p.a)}</h3><table><tr><th>metric</th><th>{_esc(p.a)}</th>"
                     f"<th>{_esc(p.b)}</th><th>difference</th><th>95 % CI</th><th>p</th>"
                     + ("<th>wins b / a / ties</th>" if seeds else "") + "</tr>")  # fmt: skip
        for m in c.metrics:
            v = p.metrics[m]
            lo, hi = v["ci95"]
            w = v.get("wins")
            counts = "" if w is None else " / ".join(str(w[key]) for key in ("b", "a", "ties"))
            wins = f"<td>{counts}</td>" if seeds else ""
            parts.append(
                f"<tr><th>{_esc(m)}</th><td>{100 * v['a']:.2f}</td><td>{100 * v['b']:.2f}</td>"
                f"<td>{100 * v['difference']:+.2f}</td><td>[{100 * lo:+.2f}, {100 * hi:+.2f}]</td>"
                f"<td>{_p(v['p_value'], c.permutations)}</td>{wins}</tr>"
            )
        parts.append("</table>")

    parts.append("<h2>Intervals per metric</h2>")
    for m in c.metrics:
        system_rows = [(s.label, 100 * s.scores[m], 100 * s.ci95[m][0], 100 * s.ci95[m][1]) for s in c.systems]
        diff_rows = [
            (f"{p.b} − {p.a}", 100 * p.metrics[m]["difference"], 100 * p.metrics[m]["ci95"][0],
             100 * p.metrics[m]["ci95"][1])
            for p in c.pairs
        ]  # fmt: skip
        parts.append(f"<h3>{_esc(m)}</h3><div class='figs'>")
        parts.append(f"<div><div class='note'>scores</div>{interval_svg(system_rows, False)}</div>")
        parts.append(f"<div><div class='note'>differences</div>{interval_svg(diff_rows, True)}</div></div>")
    if c.labels:
        parts.append("<h2>Metric notes</h2><ul>")
        parts += [f"<li>{_esc(m)}: {_esc(label)}</li>" for m, label in c.labels.items()]
        parts.append("</ul>")
    parts.append("<h2>Notes</h2><ul>")
    parts += [f"<li>{_esc(n)}</li>" for n in c.notes]
    parts.append("</ul><h2>Inputs</h2><ul>")
    for s in c.systems:
        parts += [f"<li>{_esc(s.label)}: {_esc(f)}</li>" for f in s.files if f]
    parts.append("</ul></body></html>")
    return "\n".join(parts)


def write_comparison_html(c: Comparison, path: str | os.PathLike[str]) -> Path:
    """Write the report atomically (:func:`~changecap.data.files.atomic_write_text`); returns its path."""
    return atomic_write_text(path, comparison_html(c))
