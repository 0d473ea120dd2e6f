"""Speed of ``changecap compare`` on a LEVIR-CC-size test split: 1,000 bootstrap resamples and 1,000 permutations.

Workload: the real LEVIR-CC test references (1,929 pairs × 5) from ``../shared/data/levir-cc-tokens`` when present,
else synthetic captions of the same size (``bench_caption_metrics.random_workload``). System ``a`` answers each pair
with a reference of another, random pair (``bench_caption_metrics.shuffled_hypotheses``); system ``b`` is ``a`` with
30 % of the pairs answered by one of their own references (a planted improvement the test must find).

Rows (wall time, best of ``--repeat``, the whole ``compare_systems`` call):

* ``statistics only``: 1 resample, 1 permutation: preparing the captions (rsicc protocol) and the per-pair
  statistics of every run, computed once;
* ``compare``: the default 1,000 resamples + 1,000 permutations for BLEU-1..4, ROUGE-L and CIDEr-D;
* ``compare, 3 runs each``: every system with three runs (seeds): three times the statistics, the resampling of
  every run;
* with ``--meteor``: ``compare --meteor approx`` and ``--meteor java`` (JVM start, the jar's statistics of every
  run, one short EVAL line per resample and per permutation), and ``--meteor java`` with a JVM that has already
  loaded its tables (the cost beyond the start).

Also checks that the all-pairs scores equal ``evaluate_captions`` (max |diff|) and prints the planted difference's
interval and p-value.

Usage: ``python benchmarks/bench_compare.py [--repeat 3] [--meteor]``.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable

from bench_caption_metrics import LEVIR, levir_references, random_workload, shuffled_hypotheses

from changecap.metrics import evaluate_captions
from changecap.metrics.significance import Comparison, SystemPredictions, compare_systems

LEVIR_TEST_PAIRS = 1929


def workload(rng: random.Random) -> tuple[str, list[str], list[str], list[list[str]]]:
    """``(source, names, hypotheses of a, references)``."""
    if (LEVIR / "test.txt").exists():
        names = (LEVIR / "test.txt").read_text().split()[:LEVIR_TEST_PAIRS]
        refs = levir_references(names)
        source = "LEVIR-CC test references"
    else:
        _, all_refs = random_workload(rng)
        refs = [rs[:5] for rs in all_refs[:LEVIR_TEST_PAIRS]]
        names = [f"test_{i:06d}.png" for i in range(len(refs))]
        source = f"synthetic references ({LEVIR} not found)"
    return source, names, shuffled_hypotheses(refs, rng), refs


def improved(hyps: list[str], refs: list[list[str]], rng: random.Random, share: float = 0.3) -> list[str]:
    return [rs[rng.randrange(len(rs))] if rng.random() < share else h for h, rs in zip(hyps, refs)]


def best(fn: Callable[[], Comparison], repeat: int) -> tuple[float, Comparison]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    assert out is not None
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--meteor", action="store_true", help="also time --meteor approx and java (needs Java)")
    args = ap.parse_args()
    rng = random.Random(0)
    source, names, hyps_a, refs_l = workload(rng)
    refs = dict(zip(names, refs_l))
    hyps_b = improved(hyps_a, refs_l, rng)
    one = [SystemPredictions("a", [dict(zip(names, hyps_a))]), SystemPredictions("b", [dict(zip(names, hyps_b))])]
    three = [
        SystemPredictions("a", [dict(zip(names, hyps_a)), dict(zip(names, shuffled_hypotheses(refs_l, rng))),
                                dict(zip(names, shuffled_hypotheses(refs_l, rng)))]),
        SystemPredictions("b", [dict(zip(names, hyps_b)), dict(zip(names, improved(hyps_a, refs_l, rng))),
                                dict(zip(names, improved(hyps_a, refs_l, rng)))]),
    ]  # fmt: skip
    print(f"workload: {source}, {len(names)} pairs x 5 references, 2 systems; {os.cpu_count()} CPUs")
    print(f"{'run':<34} {'seconds':>8}")
    rows: list[tuple[str, list[SystemPredictions], dict]] = [
        ("statistics only (1 resample)", one, {"resamples": 1, "permutations": 1}),
        ("compare (1000 + 1000)", one, {}),
        ("compare, 3 runs each", three, {}),
    ]
    if args.meteor:
        rows += [("compare --meteor approx", one, {"meteor": "approx"}),
                 ("compare --meteor java", one, {"meteor": "java"})]  # fmt: skip
    result: Comparison | None = None
    for label, systems, kwargs in rows:
        repeat = 1 if kwargs.get("meteor") == "java" else args.repeat
        seconds, out = best(lambda s=systems, k=kwargs: compare_systems(s, refs, **k), repeat)
        print(f"{label:<34} {seconds:>8.2f}", flush=True)
        if label.startswith("compare (1000"):
            result = out
    if args.meteor:
        from changecap.metrics.meteor import MeteorScorer

        with MeteorScorer() as scorer:
            scorer.score(hyps_a[:1], refs_l[:1])  # wait until the JVM has loaded its tables
            seconds, _ = best(lambda: compare_systems(one, refs, meteor=scorer), 1)
        print(f"{'compare --meteor java, JVM running':<34} {seconds:>8.2f}")
    assert result is not None
    ref_scores = evaluate_captions(one[1].runs[0], refs, meteor="off", breakdown=False).scores
    diff = max(abs(result.systems[1].scores[k] - float(ref_scores[k] or 0)) for k in result.metrics)
    print(f"all-pairs scores vs evaluate_captions: max |diff| {diff:.1e}")
    for m in ("Bleu_4", "CIDEr"):
        v = result.pairs[0].metrics[m]
        lo, hi = v["ci95"]
        print(f"planted difference b - a, {m}: {100 * v['difference']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}], "
              f"p = {v['p_value']:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
