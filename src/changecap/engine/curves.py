"""Training curves: ``curves.svg`` in a run folder, drawn from its ``metrics.jsonl`` (no plotting library).

Two panels, both against the epoch (1 = the first):

* **losses**: per epoch, the mean of each loss over that epoch's ``train`` lines, each line weighted by the updates
  it covers (a line is the mean of its logging window). The total ``loss`` (the weighted sum the optimiser
  minimises) and each named loss term the caller lists (:class:`~changecap.engine.trainer.Trainer` passes the terms
  its objective returned); statistics, learning rates and throughputs are left out. A pretraining run's ``epoch``
  lines already hold the epoch means of its terms.
* **validation**: every ``val`` line (one per validation round, after its epoch) — the caption metrics BLEU-4,
  METEOR, ROUGE-L, CIDEr-D and S*m where present, the change-detection F1 and IoU, the change accuracy — × 100, with
  the epoch whose model became ``best/`` marked. A pretraining run's ``eval`` lines (its held-out figures) are drawn
  as they are (not the counts of images, texts or pixels held out).

Only figures that are finite numbers are drawn; a run without validation gets the losses panel alone. The file is
rewritten after every epoch, so an interrupted run keeps the curves of the epochs it finished.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from changecap.data.files import atomic_write_text
from changecap.engine.run_log import METRICS_FILE

CURVES_FILE = "curves.svg"

#: validation figures drawn (``metrics.jsonl`` name → label), in this order, when a run logs them
VAL_CURVES: dict[str, str] = {
    "Bleu_4": "BLEU-4",
    "METEOR": "METEOR",
    "ROUGE_L": "ROUGE-L",
    "CIDEr": "CIDEr-D",
    "S_m": "S*m",
    "cd_F1": "CD F1",
    "cd_IoU": "CD IoU",
    "change_acc": "change acc.",
}
#: keys of a pretraining run's ``epoch`` lines that are not losses
_NOT_LOSSES = frozenset({"seconds"})
#: keys of a pretraining run's ``eval`` lines that count what was held out rather than score it
_COUNTS = frozenset({"images", "texts", "pixels", "captions_tokens"})
#: line colours, distinguishable in colour and in grey
_COLOURS = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#57606a", "#e16f24", "#1b7c83", "#bf3989")


@dataclass
class Curves:
    """Per-epoch series ``name → [(epoch, value)]`` (epochs counted from 1) of one run."""

    losses: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    validation: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    best_epoch: int | None = None  # the epoch of the last validation that improved the selection metric
    validation_label: str = "validation (× 100)"

    @property
    def empty(self) -> bool:
        return not self.losses and not self.validation


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The JSON objects of a ``metrics.jsonl``, in order; lines cut by a crash (not JSON) are skipped."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def epoch_curves(records: Iterable[Mapping[str, Any]], losses: Sequence[str] = ()) -> Curves:
    """``metrics.jsonl`` records → :class:`Curves`. ``losses``: the loss terms to draw beside ``loss``."""
    wanted = ["loss", *[name for name in losses if name != "loss"]]
    sums: dict[str, dict[int, list[float]]] = {name: {} for name in wanted}  # name → epoch → [Σ w·v, Σ w]
    epoch_means: dict[str, dict[int, float]] = {}  # pretraining: the epoch lines' own means
    validation: dict[str, dict[int, float]] = {}
    best_epoch = None
    previous_step = 0
    pretraining = False
    for r in records:
        kind, epoch, step = r.get("kind"), r.get("epoch"), r.get("step")
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            continue
        x = epoch + 1
        if kind == "train":
            covered = step - previous_step if isinstance(step, int) and step > previous_step else 1
            previous_step = step if isinstance(step, int) else previous_step
            for name in wanted:
                value = _number(r.get(name))
                if value is not None:
                    total = sums[name].setdefault(x, [0.0, 0.0])
                    total[0] += covered * value
                    total[1] += covered
        elif kind == "epoch":  # a pretraining run: its terms' epoch means
            pretraining = True
            for name, raw in r.items():
                value = _number(raw)
                if value is not None and name not in ("step", "epoch") and name not in _NOT_LOSSES:
                    epoch_means.setdefault(name, {})[x] = value
        elif kind in ("val", "eval"):
            pretraining = pretraining or kind == "eval"
            held_out = (k for k in r if k not in ("kind", "step", "epoch") and k not in _COUNTS)
            names = VAL_CURVES if kind == "val" else {k: k for k in held_out}
            for name, label in names.items():
                value = _number(r.get(name))
                if value is not None:
                    validation.setdefault(label, {})[x] = 100 * value if kind == "val" else value
            if r.get("best") is True:
                best_epoch = x
    curves = Curves(best_epoch=best_epoch)
    if pretraining:
        curves.validation_label = "held-out"
        ordered = ["loss", *sorted(n for n in epoch_means if n != "loss")]
        curves.losses = {n: sorted(epoch_means[n].items()) for n in ordered if n in epoch_means}
    else:
        curves.losses = {n: sorted((x, s / w) for x, (s, w) in sums[n].items()) for n in wanted if sums[n]}
    curves.validation = {label: sorted(points.items()) for label, points in validation.items()}
    return curves


# ---------------------------------------------------------------------------------------------------- drawing
def _ticks(lo: float, hi: float, count: int = 5, outward: bool = True) -> list[float]:
    """About ``count`` round values: from the round value at or below ``lo`` to the one at or above ``hi``
    (``outward``), or those inside [lo, hi]."""
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = (math.floor if outward else math.ceil)(lo / step + (1e-9 if outward else -1e-9)) * step
    last = (math.ceil if outward else math.floor)(hi / step - (1e-9 if outward else -1e-9)) * step
    return [first + i * step for i in range(int(round((last - first) / step)) + 1)]


def _label(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _panel(title: str, series: Mapping[str, Sequence[tuple[int, float]]], epochs: int, top: float,
           best_epoch: int | None, width: int, height: int) -> list[str]:  # fmt: skip
    """One panel's SVG elements: axes, ticks, a polyline with markers per series and its legend entry."""
    left, right, legend_w = 56, 16, 150
    plot_w, plot_h = width - left - right - legend_w, height - 56
    y0 = top + 26  # the plot's top edge, under the title
    values = [v for points in series.values() for _, v in points]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    ticks = _ticks(lo, hi)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])

    def px(epoch: float) -> float:
        return left + (epoch - 1) / max(epochs - 1, 1) * plot_w if epochs > 1 else left + plot_w / 2

    def py(value: float) -> float:
        return y0 + (hi - value) / (hi - lo) * plot_h

    out = [f'<text x="{left}" y="{top + 16}" font-weight="bold">{html.escape(title)}</text>',
           f'<rect x="{left}" y="{y0}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#d0d7de"/>']  # fmt: skip
    for t in ticks:
        out.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + plot_w}" y2="{py(t):.1f}" stroke="#eaeef2"/>')
        out.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end" fill="#57606a">{_label(t)}</text>')
    shown = _ticks(1, epochs, 8, outward=False) if epochs > 1 else [1.0]
    for e in (t for t in shown if abs(t - round(t)) < 1e-9):
        out.append(f'<text x="{px(e):.1f}" y="{y0 + plot_h + 16}" text-anchor="middle" fill="#57606a">'
                   f"{int(round(e))}</text>")  # fmt: skip
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{y0 + plot_h + 32}" text-anchor="middle" '
               'fill="#57606a">epoch</text>')  # fmt: skip
    if best_epoch is not None:
        x = px(best_epoch)
        out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + plot_h}" stroke="#57606a" '
                   'stroke-dasharray="4 3"/>')  # fmt: skip
        near_right = x > left + plot_w - 30  # the label goes left of the line there, clear of the legend
        out.append(f'<text x="{x - 3 if near_right else x + 3:.1f}" y="{y0 + 11}" fill="#57606a" font-size="11" '
                   f'text-anchor="{"end" if near_right else "start"}">best</text>')  # fmt: skip
    for i, (name, points) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        coords = " ".join(f"{px(e):.1f},{py(v):.1f}" for e, v in points)
        out.append(f'<g class="series" data-name="{html.escape(name)}">')
        if len(points) > 1:
            out.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        out += [f'<circle cx="{px(e):.1f}" cy="{py(v):.1f}" r="2.6" fill="{colour}"/>' for e, v in points]
        out.append("</g>")
        ly = y0 + 8 + 18 * i
        lx = left + plot_w + 14
        out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 18}" y2="{ly}" stroke="{colour}" stroke-width="2.5"/>')
        last = points[-1][1]
        out.append(f'<text x="{lx + 24}" y="{ly + 4}">{html.escape(name)} <tspan fill="#57606a">{_label(last)}'
                   "</tspan></text>")  # fmt: skip
    return out


def curves_svg(curves: Curves, title: str = "", width: int = 680, panel_height: int = 230) -> str:
    """The curves as one standalone SVG document (losses above, validation below)."""
    panels = [(("training loss", curves.losses), None)] if curves.losses else []
    if curves.validation:
        panels.append(((curves.validation_label, curves.validation), curves.best_epoch))
    epochs = max([e for _, s in (p for p, _ in panels) for points in s.values() for e, _ in points] or [1])
    head = 22 if title else 0
    height = head + panel_height * len(panels) + 4
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="changecap-curves" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12" fill="#1f2328">']  # fmt: skip
    out.append(f'<rect width="{width}" height="{height}" fill="#ffffff"/>')
    if title:
        out.append(f'<text x="8" y="16" font-size="13">{html.escape(title)}</text>')
    if not panels:
        out.append('<text x="8" y="40" fill="#57606a">no epoch finished yet</text>')
    for i, ((name, series), best) in enumerate(panels):
        out += _panel(name, series, epochs, head + i * panel_height, best, width, panel_height)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_curves(run_dir: str | os.PathLike[str], losses: Sequence[str] = (), title: str | None = None) -> Path | None:
    """Draw ``<run_dir>/metrics.jsonl`` into ``<run_dir>/curves.svg`` (atomically); None when there is no log."""
    folder = Path(run_dir)
    log = folder / METRICS_FILE
    if not log.is_file():
        return None
    curves = epoch_curves(read_metrics(log), losses)
    return atomic_write_text(folder / CURVES_FILE, curves_svg(curves, folder.name if title is None else title))
