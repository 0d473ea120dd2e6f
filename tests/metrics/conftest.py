"""Fixtures of the metrics tests: Java / jar availability, one long-lived METEOR JVM per test session (and one
pycocoevalcap reference JVM), and pycocoevalcap reference scorers."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from changecap.metrics.meteor import MeteorScorer, meteor_availability
from changecap.metrics.ptb import ptb_availability


def require_meteor_jar() -> None:
    """Skip (with the reason) when the METEOR 1.5 jar cannot run here."""
    ok, reason = meteor_availability()
    if not ok:
        pytest.skip(f"METEOR 1.5 unavailable: {reason}")


def require_ptb_jar() -> None:
    """Skip (with the reason) when the CoreNLP PTB tokenizer jar cannot run here."""
    ok, reason = ptb_availability()
    if not ok:
        pytest.skip(f"PTB tokenizer jar unavailable: {reason}")


@pytest.fixture(scope="session")
def meteor_scorer() -> Iterator[MeteorScorer]:
    """Our METEOR JVM, started once and shared by every test that needs it."""
    require_meteor_jar()
    with MeteorScorer() as scorer:
        yield scorer


@pytest.fixture(scope="session")
def coco_meteor() -> Iterator[Any]:
    """pycocoevalcap's own Meteor wrapper (reference for parity), started once."""
    require_meteor_jar()
    meteor_mod = pytest.importorskip("pycocoevalcap.meteor.meteor")
    ref = meteor_mod.Meteor()
    yield ref
    del ref


def as_coco(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Our list layout → pycocoevalcap's ``(gts, res)`` dicts."""
    return {i: list(r) for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)}


def coco_bleu(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[list[float], list[list[float]]]:
    from pycocoevalcap.bleu.bleu import Bleu

    gts, res = as_coco(hyps, refs)
    with contextlib.redirect_stdout(io.StringIO()):  # BleuScorer prints its totals
        return Bleu(4).compute_score(gts, res)


def coco_rouge(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = as_coco(hyps, refs)
    score, scores = Rouge().compute_score(gts, res)
    return float(score), [float(s) for s in scores]


def coco_cider(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    from pycocoevalcap.cider.cider import Cider

    gts, res = as_coco(hyps, refs)
    score, scores = Cider().compute_score(gts, res)
    return float(score), [float(s) for s in scores]


@pytest.fixture(scope="session")
def pycocoevalcap_available() -> None:
    pytest.importorskip("pycocoevalcap.bleu.bleu", reason="pycocoevalcap==1.2 (dev extra) is the parity reference")
