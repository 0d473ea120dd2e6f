"""Speed of changecap's BLEU-1..4 + ROUGE-L + CIDEr-D against pycocoevalcap 1.2, side by side in one run.

Workloads (2,000 pairs × 5 references each):

* ``levir``: real LEVIR-CC references (test split, topped up from val) from ``../shared/data/levir-cc-tokens``
  when present; each hypothesis is a reference of another, randomly chosen pair (seeded) - a realistic mix where
  half of the pairs share the five no-change references;
* ``random``: synthetic captions (Zipf-like word draws, 3-14 words) with no repeated strings - the worst case for
  our memoisation.

Both implementations receive the same already-tokenised strings (no PTB step). Timings are the best of ``--repeat``
runs on one core (``time.process_time`` is not used: wall time is what users wait for). Also checks that the
numbers agree. With ``--meteor`` it also times METEOR 1.5 on the ``levir`` workload: our long-lived JVM
(statistics piped by a writer thread, then one EVAL line) against pycocoevalcap's ``Meteor`` (one SCORE line at a
time), JVM start-up reported separately.

Usage: ``python benchmarks/bench_caption_metrics.py [--repeat 3] [--meteor]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

from changecap.metrics.bleu import bleu
from changecap.metrics.cider import cider_d
from changecap.metrics.ngrams import NgramCache
from changecap.metrics.rouge import rouge_l

LEVIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "levir-cc-tokens"
NUM_PAIRS = 2000


def levir_references(names: list[str]) -> list[list[str]]:
    """The five reference captions of each named LEVIR-CC pair (``<START>`` / ``<END>`` removed)."""
    refs: list[list[str]] = []
    for name in names:
        toks = json.loads((LEVIR / "tokens" / (Path(name).stem + ".txt")).read_text())
        refs.append([" ".join(t for t in sent if t not in ("<START>", "<END>")) for sent in toks])
    return refs


def shuffled_hypotheses(refs: list[list[str]], rng: random.Random) -> list[str]:
    """Each pair's hypothesis: a random reference of another, random pair."""
    return [refs[(i + rng.randrange(1, len(refs))) % len(refs)][rng.randrange(5)] for i in range(len(refs))]


def levir_workload(rng: random.Random) -> tuple[list[str], list[list[str]]] | None:
    if not (LEVIR / "test.txt").exists():
        return None
    names = (LEVIR / "test.txt").read_text().split() + (LEVIR / "val.txt").read_text().split()
    refs = levir_references(names[:NUM_PAIRS])
    return shuffled_hypotheses(refs, rng), refs


def random_workload(rng: random.Random) -> tuple[list[str], list[list[str]]]:
    words = [f"w{i}" for i in range(800)]
    weights = [1.0 / (i + 1) for i in range(len(words))]

    def sent() -> str:
        return " ".join(rng.choices(words, weights, k=rng.randint(3, 14)))

    return [sent() for _ in range(NUM_PAIRS)], [[sent() for _ in range(5)] for _ in range(NUM_PAIRS)]


def ours(hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    cache = NgramCache(4)  # shared by BLEU and CIDEr-D, as evaluate_captions does
    b, _ = bleu(hyps, refs, cache=cache)
    r, _ = rouge_l(hyps, refs)
    c, _ = cider_d(hyps, refs, cache=cache)
    return {"Bleu_4": b[3], "ROUGE_L": r, "CIDEr": c}


def reference(hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: r for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    with contextlib.redirect_stdout(io.StringIO()):  # BleuScorer prints its totals
        b, _ = Bleu(4).compute_score(gts, res)
    r, _ = Rouge().compute_score(gts, res)
    c, _ = Cider().compute_score(gts, res)
    return {"Bleu_4": b[3], "ROUGE_L": float(r), "CIDEr": float(c)}


def best_time(fn: Callable[[], dict[str, float]], repeat: int) -> tuple[float, dict[str, float]]:
    best = float("inf")
    out: dict[str, float] = {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--meteor", action="store_true", help="also time METEOR 1.5 (needs Java)")
    args = ap.parse_args()
    rng = random.Random(0)
    workloads = {"levir": levir_workload(rng), "random": random_workload(rng)}
    print(f"{'workload':<8} {'pairs':>5}  {'changecap s':>11}  {'pycocoevalcap s':>15}  {'speed-up':>8}  max |diff|")
    for name, data in workloads.items():
        if data is None:
            print(f"{name:<8} skipped: {LEVIR} not found")
            continue
        hyps, refs = data
        t_ours, s_ours = best_time(lambda h=hyps, r=refs: ours(h, r), args.repeat)
        t_ref, s_ref = best_time(lambda h=hyps, r=refs: reference(h, r), args.repeat)
        diff = max(abs(s_ours[k] - s_ref[k]) for k in s_ours)
        print(f"{name:<8} {len(hyps):>5}  {t_ours:>11.3f}  {t_ref:>15.3f}  {t_ref / t_ours:>7.1f}x  {diff:.1e}")
    if args.meteor and workloads["levir"] is not None:
        bench_meteor(*workloads["levir"])


def bench_meteor(hyps: list[str], refs: list[list[str]]) -> None:
    from pycocoevalcap.meteor.meteor import Meteor

    from changecap.metrics.meteor import MeteorScorer, meteor_availability

    ok, reason = meteor_availability()
    if not ok:
        print(f"METEOR skipped: {reason}")
        return
    t0 = time.perf_counter()
    with MeteorScorer() as scorer:
        scorer.score(hyps[:1], refs[:1])  # wait until the JVM has loaded the paraphrase table
        t1 = time.perf_counter()
        ours_score, _ = scorer.score(hyps, refs)
        t2 = time.perf_counter()
    gts = {i: r for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    t3 = time.perf_counter()
    ref = Meteor()
    ref.compute_score({0: refs[0]}, {0: [hyps[0]]})
    t4 = time.perf_counter()
    ref_score, _ = ref.compute_score(gts, res)
    t5 = time.perf_counter()
    print(
        f"METEOR   {len(hyps):>5}  {t2 - t1:>11.3f}  {t5 - t4:>15.3f}  {(t5 - t4) / (t2 - t1):>7.1f}x  "
        f"{abs(ours_score - ref_score):.1e}   (JVM start: ours {t1 - t0:.1f} s, pycocoevalcap {t4 - t3:.1f} s)"
    )


if __name__ == "__main__":
    main()
