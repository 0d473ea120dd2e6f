"""curves.svg: per-epoch means of the logged losses (weighted by the updates each line covers), validation figures
× 100 with the best epoch marked, pretraining runs' epoch and held-out lines, a well-formed SVG."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from changecap.engine.curves import CURVES_FILE, curves_svg, epoch_curves, read_metrics, write_curves

SVG = "{http://www.w3.org/2000/svg}"

RECORDS = [
    # epoch 0: a window of 2 updates, then one of 1 (the epoch's last, shorter window)
    {"kind": "train", "step": 2, "epoch": 0, "loss": 4.0, "caption_ce": 3.0, "router_acc": 0.5, "lr_decoder": 1e-3},
    {"kind": "train", "step": 3, "epoch": 0, "loss": 1.0, "caption_ce": 0.0, "router_acc": 0.9, "lr_decoder": 1e-3},
    {"kind": "val", "step": 3, "epoch": 0, "Bleu_4": 0.25, "CIDEr": 0.5, "change_acc": None, "pairs": 8, "best": True},
    {"kind": "train", "step": 5, "epoch": 1, "loss": 2.0, "caption_ce": float("nan"), "lr_decoder": 1e-3},
    {"kind": "val", "step": 5, "epoch": 1, "Bleu_4": 0.2, "CIDEr": 0.75, "change_acc": 0.5, "pairs": 8, "best": False},
]


def series(svg: str) -> dict[str, list[tuple[float, float]]]:
    """name → the centres of its markers, read back from the SVG."""
    root = ET.fromstring(svg)
    out = {}
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "series":
            out[g.get("data-name")] = [(float(c.get("cx")), float(c.get("cy"))) for c in g.iter(f"{SVG}circle")]
    return out


def test_losses_are_epoch_means_weighted_by_the_updates_each_line_covers() -> None:
    curves = epoch_curves(RECORDS, losses=["caption_ce"])
    assert curves.losses["loss"] == [(1, pytest.approx((2 * 4.0 + 1 * 1.0) / 3)), (2, 2.0)]
    assert curves.losses["caption_ce"] == [(1, pytest.approx(2.0))]  # epoch 2's NaN is not drawn
    assert "router_acc" not in curves.losses and "lr_decoder" not in curves.losses  # not listed as a loss


def test_validation_figures_are_scaled_and_the_best_epoch_is_the_last_improvement() -> None:
    curves = epoch_curves(RECORDS)
    assert curves.validation["BLEU-4"] == [(1, 25.0), (2, 20.0)]
    assert curves.validation["CIDEr-D"] == [(1, 50.0), (2, 75.0)]
    assert curves.validation["change acc."] == [(2, 50.0)]  # null on epoch 1 (no change probability then)
    assert curves.best_epoch == 1 and "pairs" not in curves.validation


def test_the_svg_draws_every_series_with_one_marker_per_epoch() -> None:
    svg = curves_svg(epoch_curves(RECORDS, losses=["caption_ce"]), title="run")
    drawn = series(svg)
    assert set(drawn) == {"loss", "caption_ce", "BLEU-4", "CIDEr-D", "change acc."}
    assert [len(drawn[k]) for k in ("loss", "caption_ce", "BLEU-4")] == [2, 1, 2]
    (x1, y1), (x2, y2) = drawn["loss"]
    assert x1 < x2 and y1 < y2  # epoch 2 to the right; its lower loss lower on the page (larger y)
    assert "best" in svg and all(math.isfinite(v) for pts in drawn.values() for p in pts for v in p)


def test_a_run_without_validation_gets_the_losses_panel_and_no_run_nothing_drawn() -> None:
    only_train = epoch_curves(RECORDS[:2])
    assert only_train.validation == {} and set(series(curves_svg(only_train))) == {"loss"}
    nothing = curves_svg(epoch_curves([]))
    assert "no epoch finished yet" in nothing and series(nothing) == {}


def test_a_pretraining_run_draws_its_epoch_means_and_held_out_figures() -> None:
    records = [
        {"kind": "train", "step": 4, "epoch": 0, "loss": 9.0, "itc": 9.0, "lr": 1e-3},
        {"kind": "epoch", "step": 4, "epoch": 0, "loss": 3.0, "itc": 2.0, "itm": 1.0, "seconds": 12.5},
        {"kind": "epoch", "step": 8, "epoch": 1, "loss": 2.0, "itc": 1.5, "itm": 0.5, "seconds": 25.0},
        {"kind": "eval", "step": 8, "epoch": 1, "perplexity": 12.0, "recall@1": 0.4, "images": 2},
    ]
    curves = epoch_curves(records)
    assert curves.losses == {"loss": [(1, 3.0), (2, 2.0)], "itc": [(1, 2.0), (2, 1.5)], "itm": [(1, 1.0), (2, 0.5)]}
    assert curves.validation == {"perplexity": [(2, 12.0)], "recall@1": [(2, 0.4)]}  # not the count of images
    assert curves.validation_label == "held-out"


def test_write_curves_reads_the_log_skipping_a_torn_last_line(tmp_path: Path) -> None:
    assert write_curves(tmp_path) is None  # no metrics.jsonl: nothing to draw
    text = "".join(json.dumps(r) + "\n" for r in RECORDS) + '{"kind": "train", "st'
    (tmp_path / "metrics.jsonl").write_text(text)
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == len(RECORDS)
    path = write_curves(tmp_path, ["caption_ce"])
    assert path == tmp_path / CURVES_FILE
    assert set(series(path.read_text())) == {"loss", "caption_ce", "BLEU-4", "CIDEr-D", "change acc."}
