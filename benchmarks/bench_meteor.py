"""METEOR 1.5 on a LEVIR-CC-size split: wall time before and after, side by side in one run, scores compared.

Workload: the real LEVIR-CC test split from ``../shared/data/levir-cc-tokens`` (1,929 pairs × 5 references), with
two hypothesis sets (seeded):

* ``model-like``: what a trained captioner answers — "there is no difference" on every unchanged pair, and on a
  changed pair a reference of another changed pair;
* ``shuffled``: every hypothesis a reference of another, random pair (the unchanged pairs get five different
  no-change sentences: fewer repeated requests).

Ways of scoring, each in a JVM of its own, one after the other:

* ``before``: what changecap did until now (and what coco-caption does): start the JVM when scoring begins, send
  every pair's SCORE line, then EVAL. Wall time from the start of the JVM to the score.
* ``after, cold``: the same moment of start, identical requests sent once (``MeteorScorer.statistics``).
* ``after, background``: the JVM started by ``meteor_session`` when evaluation begins, ``--overlap`` seconds
  before the captions are ready (the time the model takes to caption the split; the sleep stands in for it), then
  scored. Wall time from "captions ready" to the score — the time METEOR adds to an evaluation.
* ``JVM load``: the start alone (first answer of a one-pair request).

Every way must give the same corpus score and item scores (checked; a mismatch is an error).

Usage: ``python benchmarks/bench_meteor.py [--repeat 3] [--overlap 15]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from bench_caption_metrics import LEVIR, levir_references, shuffled_hypotheses

from changecap.data.text import is_no_change
from changecap.metrics.caption_eval import meteor_session
from changecap.metrics.meteor import MeteorScorer, meteor_availability

Scores = tuple[float, list[float]]


def load_test_split() -> list[list[str]]:
    return levir_references((LEVIR / "test.txt").read_text().split())


def hypotheses(refs: list[list[str]], kind: str, rng: random.Random) -> list[str]:
    if kind == "shuffled":
        return shuffled_hypotheses(refs, rng)
    changed = [i for i, rs in enumerate(refs) if not all(is_no_change(r) for r in rs)]
    out = []
    for i, rs in enumerate(refs):
        if all(is_no_change(r) for r in rs):
            out.append("there is no difference")
        else:
            j = rng.choice([c for c in changed if c != i] or [i])
            out.append(refs[j][rng.randrange(5)])
    return out


def before(hyps: list[str], refs: list[list[str]]) -> tuple[float, Scores]:
    t0 = time.perf_counter()
    with MeteorScorer() as scorer:
        scores = scorer.evaluate(scorer.statistics(hyps, refs, dedup=False))
    return time.perf_counter() - t0, scores


def after_cold(hyps: list[str], refs: list[list[str]]) -> tuple[float, Scores]:
    t0 = time.perf_counter()
    with MeteorScorer() as scorer:
        scores = scorer.score(hyps, refs)
    return time.perf_counter() - t0, scores


def after_background(hyps: list[str], refs: list[list[str]], overlap: float) -> tuple[float, Scores]:
    with meteor_session("java") as scorer:
        assert isinstance(scorer, MeteorScorer)
        time.sleep(overlap)  # the model captions the split meanwhile
        t0 = time.perf_counter()
        scores = scorer.score(hyps, refs)
        return time.perf_counter() - t0, scores


def jvm_load() -> tuple[float, Scores]:
    t0 = time.perf_counter()
    with MeteorScorer() as scorer:
        scores = scorer.score(["a"], [["a"]])
    return time.perf_counter() - t0, scores


def timed(fn: Callable[[], tuple[float, Scores]], repeat: int) -> tuple[list[float], Scores]:
    times, scores = [], None
    for _ in range(repeat):
        t, s = fn()
        times.append(t)
        if scores is not None and s != scores:
            raise SystemExit("METEOR scores differ between repetitions")
        scores = s
    assert scores is not None
    return times, scores


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each way (median and min reported)")
    ap.add_argument("--overlap", type=float, default=15.0, help="seconds the JVM loads before captions are ready")
    args = ap.parse_args()
    ok, reason = meteor_availability()
    if not ok:
        print(f"skipped: METEOR unavailable ({reason})")
        return 0
    if not (LEVIR / "test.txt").exists():
        print(f"skipped: the LEVIR-CC captions are not at {LEVIR} (../shared/data beside the repository)")
        return 0
    refs = load_test_split()
    load_times, _ = timed(jvm_load, args.repeat)
    print(
        f"JVM load (first answer): median {statistics.median(load_times):.2f} s, min {min(load_times):.2f} s",
        flush=True,
    )
    print(f"\nLEVIR-CC test, {len(refs)} pairs × 5 references; wall seconds, median (min) of {args.repeat}")
    print("| hypotheses | distinct requests | before | after, cold | after, background | ratio before / background |")
    print("|---|---|---|---|---|---|")
    for kind in ("model-like", "shuffled"):
        hyps = hypotheses(refs, kind, random.Random(0))
        distinct = len({(h, tuple(r)) for h, r in zip(hyps, refs)})
        t_before, s_before = timed(lambda h=hyps: before(h, refs), args.repeat)
        t_cold, s_cold = timed(lambda h=hyps: after_cold(h, refs), args.repeat)
        t_bg, s_bg = timed(lambda h=hyps: after_background(h, refs, args.overlap), args.repeat)
        if not (s_before == s_cold == s_bg):
            raise SystemExit(f"{kind}: METEOR scores differ between the ways of scoring")

        def cell(ts: list[float]) -> str:
            return f"{statistics.median(ts):.2f} ({min(ts):.2f})"

        ratio = statistics.median(t_before) / statistics.median(t_bg)
        print(
            f"| {kind} | {distinct} | {cell(t_before)} | {cell(t_cold)} | {cell(t_bg)} | {ratio:.1f}× |"
            f"  METEOR {s_before[0]:.6f}, identical in every way",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
