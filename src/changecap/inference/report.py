"""A self-contained HTML report: metrics table, the training curves, and example pairs with predicted vs reference
captions, the predicted change mask or probability where the model has one, and where the model looked for each
word (models that declare ``attention_maps``: :mod:`changecap.inference.attention_view`)."""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from changecap.data.files import atomic_write_text
from changecap.errors import DataError
from changecap.inference.evaluate import ModelEvaluation
from changecap.metrics.caption_eval import CaptionEvalResult

METRIC_KEYS = ("Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "S_m")


def _jpeg_data_uri(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=85)  # heat maps: a fraction of a PNG's bytes
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _png_data_uri(img: np.ndarray, size: int = 192) -> str:
    pil = Image.fromarray(img)
    pil = pil.resize((size, size), Image.Resampling.NEAREST if img.ndim == 2 else Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{100 * v:.2f}"
    return html.escape(str(v))


def change_detection_html(scores: Any) -> str:
    """Precision / recall / F1 / IoU per class and overall accuracy of the predicted masks (×100), or nothing."""
    if scores is None:
        return ""
    rows = "".join(
        f"<tr><th>{name}</th>" + "".join(f"<td>{_fmt(float(v[c]))}</td>" for v in
                                         (scores.precision, scores.recall, scores.f1, scores.iou)) + "</tr>"
        for c, name in enumerate(("no change", "change"))
    )  # fmt: skip
    return (
        "<h2>Change detection (binary: class &gt; 0 = change, ×100)</h2><table><tr><th></th><th>precision</th>"
        f"<th>recall</th><th>F1</th><th>IoU</th></tr>{rows}</table><p class='note'>overall accuracy "
        f"{_fmt(scores.overall_accuracy)}, mean F1 {_fmt(scores.mean_f1)}, mean IoU {_fmt(scores.mean_iou)}</p>"
    )


def curves_html(path: str | os.PathLike[str] | None) -> str:
    """The run's ``curves.svg`` inlined under a heading, or nothing without one."""
    if path is None:
        return ""
    try:
        svg = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read the training curves ({e.__class__.__name__})") from None
    if "<svg" not in svg:
        raise DataError(path, "is not an SVG image (the training curves a run writes as curves.svg)")
    return f"<h2>Training curves</h2>\n<div class='curves'>{svg}</div>"


def attention_html(after: np.ndarray, result: Any) -> str:
    """One pair's word-by-word attention view (a :class:`~changecap.inference.predictor.CaptionResult` with
    ``attention``), or nothing."""
    from changecap.inference.attention_view import word_views

    if result.attention is None or not result.words():
        return ""
    views = word_views(after, result.attention, result.words(), result.attention_box, size=128)
    figs = "".join(
        f'<figure class="word"><img src="{_jpeg_data_uri(im)}" alt="attention for {html.escape(word)}">'
        f"<figcaption>{html.escape(word)} <span class='peak'>{100 * peak:.0f} %</span></figcaption></figure>"
        for word, peak, im in views
    )
    return (
        f'<details class="attention" open><summary>where the model looked while writing '
        f"“{html.escape(result.caption)}”</summary><div class='words'>{figs}</div>"
        "<p class='note'>the decoder's cross-attention per word over the after image (bright = most attended; "
        "each map scaled to its own range; % = the share of the most attended cell)</p></details>"
    )


def metrics_table_html(rows: Mapping[str, CaptionEvalResult], subset: str | None = None) -> str:
    """``{row name: CaptionEvalResult}`` → an HTML table (scores ×100).

    ``subset=None`` shows the scores over all pairs with the no-change / change accuracies; ``"changed"`` or
    ``"unchanged"`` shows that subset's scores (each subset scored as its own corpus).
    """
    extra = ("no-change acc", "change acc") if subset is None else ("pairs",)
    head = "".join(f"<th>{k}</th>" for k in (*METRIC_KEYS, *extra))
    body = []
    for name, res in rows.items():
        if subset is None:
            scores = res.scores
            tail = f"<td>{_fmt(res.nochange_acc)}</td><td>{_fmt(res.change_acc)}</td>"
        else:
            sub = res.subsets.get(subset)
            if sub is None:
                continue
            scores, tail = sub.scores, f"<td>{sub.n}</td>"
        cells = "".join(f"<td>{_fmt(scores.get(k))}</td>" for k in METRIC_KEYS)
        body.append(f"<tr><th>{html.escape(name)}</th>{cells}{tail}</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>"


def write_html_report(
    path: str | os.PathLike[str],
    *,
    evaluation: ModelEvaluation,
    baselines: Mapping[str, CaptionEvalResult] | None = None,
    data_root: str | os.PathLike[str],
    fmt: str,
    split: str = "test",
    num_examples: int = 12,
    baseline_predictions: Mapping[str, Mapping[str, str]] | None = None,
    curves: str | os.PathLike[str] | None = None,
    attention: bool | None = None,
) -> Path:
    """Write ``path`` (one HTML file, images embedded) and return it.

    Examples are the first ``num_examples`` pairs of the split, half changed and half unchanged when possible, so
    both kinds of output are shown. ``curves``: a run's ``curves.svg``, drawn in the report. ``attention`` (default:
    when the model declares ``attention_maps``): each example is captioned again with the model's own decoding and
    its word-by-word attention is drawn over the after image.
    """
    from changecap.data.datasets import open_dataset

    ds = open_dataset(data_root, fmt, split)
    captions = evaluation.capabilities.captions and evaluation.result is not None  # not for a change detector
    rows: dict[str, CaptionEvalResult] = {"model": evaluation.result} if captions else {}
    for name, res in (baselines or {}).items():
        rows[f"baseline: {name}"] = res

    changed = [i for i, r in enumerate(ds.records) if r.changed]
    unchanged = [i for i, r in enumerate(ds.records) if not r.changed]
    half = num_examples // 2
    picks = (changed[: num_examples - min(half, len(unchanged))] + unchanged[:half])[:num_examples]
    looked: dict[int, Any] = {}
    if captions and (evaluation.capabilities.attention_maps if attention is None else attention) and picks:
        from changecap.inference.predictor import ChangeCaptioner

        captioner = ChangeCaptioner.from_pretrained(evaluation.model_dir)
        pairs = [ds.load_pair(i) for i in picks]
        results = captioner([b for b, _ in pairs], [a for _, a in pairs], attention_maps=True)
        looked = dict(zip(picks, results, strict=True))
    cards = []
    for i in picks:
        rec = ds.records[i]
        before, after = ds.load_pair(i)
        imgs = [("before", before), ("after", after)]
        from changecap.data.semantic_maps import read_change_mask

        mask = read_change_mask(rec)  # a mask file, or second-cc's semantic maps; None without either
        if mask is not None:
            palette = np.array([[0, 0, 0], [255, 200, 0], [255, 255, 255]], dtype=np.uint8)
            imgs.append(("change mask", palette[np.clip(mask, 0, 2)]))
        predicted = evaluation.masks.get(rec.name)
        if predicted is not None:  # models with a change-detection head: the predicted mask beside the ground truth
            imgs.append(("predicted change", (predicted > 0).astype(np.uint8) * 255))
        pred = evaluation.predictions.get(rec.name, "")
        prob = evaluation.change_probability.get(rec.name)
        figs = "".join(
            f'<figure><img src="{_png_data_uri(im)}" alt="{label}"><figcaption>{label}</figcaption></figure>'
            for label, im in imgs
        )
        refs = "".join(f"<li>{html.escape(c)}</li>" for c in rec.captions)
        prob_txt = "" if prob is None else f' <span class="prob">P(change) = {prob:.2f}</span>'
        extra = ""
        for bname, bpreds in (baseline_predictions or {}).items():
            extra += f'<p class="baseline"><b>{html.escape(bname)}:</b> {html.escape(bpreds.get(rec.name, ""))}</p>'
        said = f'<p class="pred"><b>model:</b> {html.escape(pred)}{prob_txt}</p>' if captions else ""
        listed = f"<details open><summary>references</summary><ul>{refs}</ul></details>" if rec.captions else ""
        view = attention_html(after, looked[i]) if i in looked else ""
        cards.append(
            f'<div class="card"><h3>{html.escape(rec.name)} — {"changed" if rec.changed else "unchanged"}</h3>'
            f'<div class="imgs">{figs}</div>{said}{extra}{listed}{view}</div>'
        )
    caption_sections = f"""<h2>Metrics (rsicc protocol, ×100)</h2>
{metrics_table_html(rows)}
<p class="note">Scores on vocabulary-id strings (the protocol of published RSICC numbers). METEOR is n/a when Java or
the METEOR jar is unavailable. no-change acc = share of unchanged pairs described as unchanged; change acc = share of
changed pairs described as changed.</p>
<h3>Changed pairs only</h3>
{metrics_table_html(rows, subset="changed")}
<p class="note">The changed pairs scored as a corpus of their own: what a model says about real changes. Their CIDEr-D
uses the subset's own idf and does not compare with the all-pairs CIDEr-D.</p>"""
    pairs = len(evaluation.predictions) if captions else len(evaluation.masks)
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>changecap report — {html.escape(split)} split</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; margin: 1em 0; }}
.imgs {{ display: flex; gap: 8px; }} figure {{ margin: 0; text-align: center; }}
figcaption {{ font-size: 0.8em; color: #666; }} .pred {{ font-size: 1.1em; }} .prob {{ color: #666; }}
.baseline {{ color: #555; margin: 0.2em 0; }} .note {{ color: #666; font-size: 0.9em; }}
.words {{ display: flex; flex-wrap: wrap; gap: 6px; }} .word img {{ width: 128px; height: 128px; }}
.peak {{ color: #888; font-size: 0.9em; }} summary {{ cursor: pointer; color: #444; }}
</style></head><body>
<h1>changecap report</h1>
<p>Model: <code>{html.escape(str(evaluation.model_dir))}</code> — data: <code>{html.escape(str(data_root))}</code>
({html.escape(fmt)}, {html.escape(split)} split, {pairs} pairs).</p>
{caption_sections if captions else ""}
{change_detection_html(evaluation.change_detection)}
{curves_html(curves)}
<h2>Examples</h2>
{"".join(cards)}
</body></html>
"""
    out = Path(path)
    atomic_write_text(out, doc)
    return out
