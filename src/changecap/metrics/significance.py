"""Paired comparison of captioning systems on one test split: bootstrap intervals, randomisation p-values, seeds.

For two or more systems (each one or more runs, e.g. training seeds) that captioned the same pairs:

* **paired bootstrap** (Koehn 2004): ``resamples`` times, draw the test pairs with replacement (the same draw for
  every system) and rescore every system on the draw; the 95 % interval of a difference is the 2.5th-97.5th
  percentile of the resampled differences (percentile interval);
* **paired approximate randomisation** (Noreen 1989; Riezler & Maxwell 2005): ``permutations`` times, swap the two
  systems' outputs of each pair with probability 1/2 and rescore; the p-value is
  ``(1 + #{|swapped difference| >= |observed difference|}) / (1 + permutations)`` (two-sided). Identical outputs
  give p = 1;
* **over seeds**: with several runs per system, a system's score is the mean of its runs' corpus scores (the
  resampling statistics above use that mean), reported with the standard deviation over runs (ddof = 1), and runs
  are paired by position (the k-th run of each system: give them in the same seed order) to count wins per seed.

Nothing is re-tokenised per resample. Every metric is a function of per-pair statistics computed once per run:

* BLEU-1..4: per pair the hypothesis length, closest reference length, guesses and clipped matches per order
  (``bleu_statistics``); corpus BLEU comes from their sums with the coco guards and brevity penalty;
* ROUGE-L: the mean of the per-pair scores;
* CIDEr-D: the mean of the per-pair scores, whose tf-idf vectors use the document frequencies of the **full** set
  of references scored, fixed for every resample. CIDEr-D's idf is part of the metric's definition on a test set
  (the references are fixed, only which pairs are drawn varies); recomputing it per resample would change the
  metric with the draw (a pair drawn three times would triple its n-grams' document frequency) and would
  re-vectorise every caption per resample. With every pair drawn once the value is exactly the full-set CIDEr-D;
* METEOR (optional): the jar's per-pair statistics (``meteor_stats_array``), summed and scored by the jar (one
  short ``EVAL`` line per resample), or the labelled approximation's summable statistics;
* S_m = (BLEU-4 + METEOR + ROUGE-L + CIDEr-D) / 4 per resample, when METEOR is on;
* the optional embedding similarity: the mean of the per-pair best cosine similarities.

A resample is a row of pair counts (``[resamples, pairs]``, built with one ``bincount``) and a swap is a row of
0/1 (``[permutations, pairs]``); the sums of every resample are one matrix product with the per-pair statistics
``[pairs, columns]``. With all counts 1 the scores equal :func:`~changecap.metrics.caption_eval.evaluate_captions`.

No correction for multiple comparisons is applied (several metrics, several pairs of systems): read p-values of
many comparisons with that in mind.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from changecap.data.vocab import Vocabulary
from changecap.errors import ChangeCapError, DataError
from changecap.metrics.bleu import bleu_from_sums, bleu_statistics, bleu_statistics_array
from changecap.metrics.caption_eval import CaptionProtocol, load_caption_json, prepare_captions
from changecap.metrics.cider import cider_d
from changecap.metrics.embedding import EMBEDDING_KEY, Embedder, embedding_similarity
from changecap.metrics.meteor import (
    APPROX_LABEL,
    JAVA_LABEL,
    MeteorScorer,
    approx_from_sums,
    meteor_approx_statistics,
    meteor_approx_stats_array,
    meteor_stats_array,
)
from changecap.metrics.ngrams import NgramCache
from changecap.metrics.ptb import PtbMode
from changecap.metrics.rouge import rouge_l

CompareMeteor = Literal["off", "approx", "java"]
BLEU_KEYS: tuple[str, ...] = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")
CIDER_IDF_NOTE = (
    "CIDEr-D idf from the references of every pair scored, fixed for all resamples (the full-set definition)"
)
RANDOMISATION_NOTE = "p: paired approximate randomisation, two-sided; no correction for multiple comparisons"
_TIE = 1e-12  # swapped differences within this of the observed one count as "as large" (float round-off)


# ------------------------------------------------------------------------------------------------- inputs
@dataclass
class SystemPredictions:
    """One system: its label and one ``{pair name: caption}`` mapping per run (with the files, for messages)."""

    label: str
    runs: list[Mapping[str, str]]
    files: list[str | None] = field(default_factory=list)

    def file(self, k: int) -> str | None:
        return self.files[k] if k < len(self.files) else None


def load_system(label: str, paths: Sequence[str | os.PathLike[str]]) -> SystemPredictions:
    """Read a system's prediction files (``{pair name: caption}``, as ``changecap evaluate`` writes them)."""
    if not paths:
        raise ChangeCapError(f"system {label!r} has no prediction file")
    return SystemPredictions(label, [load_caption_json(p, kind="pred") for p in paths], [str(p) for p in paths])


def check_systems(
    systems: Sequence[SystemPredictions], refs: Mapping[str, Sequence[str]], refs_source: str
) -> list[str]:
    """Validate the systems against the references and each other; return the pair names scored (reference order).

    Every run must caption exactly the same pairs, and every pair must be in ``refs``; errors are one line naming the
    prediction file and the pair (``refs_source`` names where the references come from, e.g. the split).
    """
    if len(systems) < 2:
        raise ChangeCapError(f"compare needs at least two systems, got {len(systems)}")
    labels = [s.label for s in systems]
    dup = next((lab for lab in labels if labels.count(lab) > 1), None)
    if dup is not None:
        raise ChangeCapError(f"two systems are labelled {dup!r}; give them distinct labels (LABEL=FILE)")
    first_sys, first_keys = systems[0], None
    for s in systems:
        if not s.runs:
            raise ChangeCapError(f"system {s.label!r} has no prediction file")
        for k, run in enumerate(s.runs):
            path = s.file(k)
            for name, caption in run.items():
                if not isinstance(caption, str):
                    raise DataError(path, f"prediction must be a string, got {type(caption).__name__}", field=name)
                try:
                    caption.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise DataError(path, f"caption is not valid Unicode ({e.reason})", field=name) from None
            extra = [name for name in run if name not in refs]
            if extra:
                msg = f"{len(extra)} pair(s) not in {refs_source} (first: {extra[0]!r})"
                raise DataError(path, msg, field=extra[0])
            keys = set(run)
            if first_keys is None:
                first_keys = keys
                continue
            missing = [n for n in refs if n in first_keys and n not in keys]
            if missing:
                raise DataError(
                    path,
                    f"{len(missing)} pair(s) captioned by {first_sys.file(0) or first_sys.label} are missing "
                    f"(first: {missing[0]!r}); every system must caption the same pairs",
                    field=missing[0],
                )
            surplus = [n for n in refs if n in keys and n not in first_keys]
            if surplus:
                raise DataError(
                    path,
                    f"{len(surplus)} pair(s) not captioned by {first_sys.file(0) or first_sys.label} "
                    f"(first: {surplus[0]!r}); every system must caption the same pairs",
                    field=surplus[0],
                )
    assert first_keys is not None
    return [n for n in refs if n in first_keys]


# ------------------------------------------------------------------------------------------------ scoring
class StatisticColumns:
    """Column layout of the per-pair statistics and the metrics computed from their sums."""

    def __init__(self, meteor: str | None, meteor_sums: Callable[[np.ndarray], np.ndarray] | None, embed: bool):
        self.meteor = meteor  # "java", "approx" or None
        self.meteor_sums = meteor_sums
        self.embed = embed
        width = 10 + 1 + 1  # BLEU (2 lengths, 4 guesses, 4 matches), ROUGE-L, CIDEr-D
        self.meteor_slice = slice(width, width + (23 if meteor == "java" else 4 if meteor == "approx" else 0))
        width = self.meteor_slice.stop
        self.embed_col = width if embed else None
        self.width = width + (1 if embed else 0)

    @property
    def metrics(self) -> list[str]:
        keys = [*BLEU_KEYS, "ROUGE_L", "CIDEr"]
        if self.meteor:
            keys[4:4] = ["METEOR"]
            keys.append("S_m")
        if self.embed:
            keys.append(EMBEDDING_KEY)
        return keys

    def scores(self, sums: np.ndarray, n: int) -> dict[str, np.ndarray]:
        """Every metric ``[R]`` from statistics summed over ``n`` pairs per row ``[R, width]``."""
        b = bleu_from_sums(sums[:, :10])  # [R, 4]
        out = {key: b[:, k] for k, key in enumerate(BLEU_KEYS)}
        out["ROUGE_L"] = sums[:, 10] / n
        out["CIDEr"] = sums[:, 11] / n
        if self.meteor:
            block = sums[:, self.meteor_slice]
            if self.meteor == "approx":
                out["METEOR"] = approx_from_sums(block)
            else:
                assert self.meteor_sums is not None
                out["METEOR"] = self.meteor_sums(block)
            out["S_m"] = (out["Bleu_4"] + out["METEOR"] + out["ROUGE_L"] + out["CIDEr"]) / 4
        if self.embed_col is not None:
            out[EMBEDDING_KEY] = sums[:, self.embed_col] / n
        return out


def pair_statistics(
    hyps: list[str],
    ref_strs: list[list[str]],
    raw_hyps: list[str],
    raw_refs: list[list[str]],
    cols: StatisticColumns,
    cache: NgramCache,
    scorer: MeteorScorer | None,
    embed: Embedder | None,
) -> np.ndarray:
    """Per-pair statistics ``[N, width]`` of one run (protocol strings for the n-gram metrics, captions as written for
    the embedding similarity)."""
    n = len(hyps)
    out = np.zeros((n, cols.width))
    out[:, :10] = bleu_statistics_array(bleu_statistics(hyps, ref_strs, cache=cache))
    out[:, 10] = rouge_l(hyps, ref_strs)[1]
    out[:, 11] = cider_d(hyps, ref_strs, cache=cache)[1]
    if cols.meteor == "java":
        assert scorer is not None
        out[:, cols.meteor_slice] = meteor_stats_array(scorer.statistics(hyps, ref_strs))
    elif cols.meteor == "approx":
        out[:, cols.meteor_slice] = meteor_approx_stats_array(meteor_approx_statistics(hyps, ref_strs))
    if cols.embed_col is not None:
        assert embed is not None
        out[:, cols.embed_col] = embedding_similarity(raw_hyps, raw_refs, embed)[1]
    return out


def bootstrap_counts(n_pairs: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each pair is drawn in each resample: ``[resamples, n_pairs]`` (float, rows sum to ``n_pairs``)."""
    idx = rng.integers(0, n_pairs, size=(resamples, n_pairs))  # [R, N] drawn pair indices
    flat = idx + (np.arange(resamples) * n_pairs)[:, None]  # [R, N] offset per row, so one bincount counts all rows
    return np.bincount(flat.ravel(), minlength=resamples * n_pairs).reshape(resamples, n_pairs).astype(np.float64)


# ------------------------------------------------------------------------------------------------ results
@dataclass
class SystemSummary:
    """A system's scores: mean over runs, bootstrap interval, per-run scores and their sd."""

    label: str
    files: list[str | None]
    scores: dict[str, float]
    ci95: dict[str, tuple[float, float]]
    run_scores: dict[str, list[float]]
    sd: dict[str, float | None]

    @property
    def runs(self) -> int:
        return len(self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "files": list(self.files),
            "runs": self.runs,
            "scores": dict(self.scores),
            "ci95": {k: list(v) for k, v in self.ci95.items()},
            "run_scores": {k: list(v) for k, v in self.run_scores.items()},
            "sd": dict(self.sd),
        }


@dataclass
class PairComparison:
    """System ``b`` against system ``a`` (``a`` listed first): ``difference = b - a`` per metric."""

    a: str
    b: str
    metrics: dict[str, dict[str, Any]]  # difference, ci95, p_value, [seed_differences, wins]

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "difference_is": f"{self.b} - {self.a}",
                "metrics": {k: dict(v) for k, v in self.metrics.items()}}  # fmt: skip


@dataclass
class Comparison:
    """Outcome of :func:`compare_systems` (scores are fractions; tables print them × 100)."""

    metrics: list[str]
    systems: list[SystemSummary]
    pairs: list[PairComparison]
    n: int
    protocol: str
    tokenizer: str
    resamples: int
    permutations: int
    seed: int
    labels: dict[str, str] = field(default_factory=dict)  # metric → implementation / model label
    notes: list[str] = field(default_factory=list)
    split: str | None = None
    data: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "split": self.split,
            "n_pairs": self.n,
            "protocol": self.protocol,
            "tokenizer": self.tokenizer,
            "resamples": self.resamples,
            "permutations": self.permutations,
            "seed": self.seed,
            "confidence": 0.95,
            "metrics": list(self.metrics),
            "metric_labels": dict(self.labels),
            "systems": [s.to_dict() for s in self.systems],
            "comparisons": [p.to_dict() for p in self.pairs],
            "notes": list(self.notes),
        }

    def format_table(self) -> str:
        """Readable text: the systems' scores with intervals, then each comparison (× 100, as papers print)."""
        where = f"{self.split} split, " if self.split else ""
        lines = [
            f"compare: {where}{self.n} pairs, protocol {self.protocol}, {self.resamples} bootstrap resamples, "
            f"{self.permutations} permutations, seed {self.seed}; scores x100"
        ]
        for s in self.systems:
            shown = ", ".join(str(f) for f in s.files if f)
            lines.append(f"  {s.label}: {s.runs} run{'s' if s.runs > 1 else ''}" + (f" ({shown})" if shown else ""))
        cells: dict[str, list[str]] = {}
        for m in self.metrics:
            cells[m] = []
            for s in self.systems:
                lo, hi = s.ci95[m]
                sd = s.sd[m]
                cell = f"{100 * s.scores[m]:.2f}" + (f" ±{100 * sd:.2f}" if sd is not None else "")
                cells[m].append(cell + f" [{100 * lo:.2f}, {100 * hi:.2f}]")
        # two spaces at least between columns, however wide a cell (CIDEr-D over 100 with an sd and an interval)
        widest = max((len(c) for row in cells.values() for c in row), default=0)
        colw = max(widest, *(len(s.label) for s in self.systems)) + 2
        lines.append("")
        lines.append(f"{'metric':<10}" + "".join(f"{s.label:>{colw}}" for s in self.systems))
        for m in self.metrics:
            lines.append(f"{m:<10}" + "".join(f"{c:>{colw}}" for c in cells[m]))
        lines.append("(score, ± sd over runs when several, [bootstrap 95% CI])")
        for p in self.pairs:
            lines.append("")
            lines.append(f"{p.b} - {p.a}")
            seeds = any(v.get("wins") is not None for v in p.metrics.values())
            head = f"{'metric':<10}{'difference':>12}{'95% CI':>22}{'p':>10}"
            lines.append(head + (f"{'wins b/a/tie':>15}" if seeds else ""))
            for m in self.metrics:
                v = p.metrics[m]
                lo, hi = v["ci95"]
                row = f"{m:<10}{100 * v['difference']:>+12.2f}{f'[{100 * lo:+.2f}, {100 * hi:+.2f}]':>22}"
                row += f"{_p_text(v['p_value'], self.permutations):>10}"
                if seeds:
                    w = v.get("wins")
                    wins = "" if w is None else "/".join(str(w[key]) for key in ("b", "a", "ties"))
                    row += f"{wins:>15}"
                lines.append(row)
        for m, label in self.labels.items():
            lines.append(f"{m}: {label}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _p_text(p: float, permutations: int) -> str:
    """The p-value; at its floor 1 / (permutations + 1) (no swap was as extreme) shown as ``<=floor``."""
    floor = 1 / (permutations + 1)
    return f"<={floor:.4f}" if p <= floor * (1 + 1e-9) else f"{p:.4f}"


def _interval(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


# ------------------------------------------------------------------------------------------------ the test
def compare_systems(
    systems: Sequence[SystemPredictions],
    refs: Mapping[str, Sequence[str]],
    *,
    protocol: CaptionProtocol = "rsicc",
    vocab: Vocabulary | None = None,
    ptb: PtbMode = "auto",
    meteor: CompareMeteor | MeteorScorer = "off",
    embed: Embedder | None = None,
    embed_label: str = "embedding model",
    resamples: int = 1000,
    permutations: int = 1000,
    seed: int = 0,
    refs_source: str | os.PathLike[str] = "the references",
) -> Comparison:
    """Compare systems pairwise on the pairs they captioned (module docstring).

    Args:
        systems: two or more systems, each with one or more runs captioning the same pairs.
        refs: ``{pair name: [reference, ...]}``; may hold more pairs than the systems captioned (then only the
            captioned ones are scored, and CIDEr-D's idf comes from their references, as in ``evaluate_captions``).
        protocol, vocab, ptb: how captions become scorer strings, as in ``evaluate_captions``.
        meteor: ``off`` (default), ``approx`` (labelled approximation), ``java`` (the METEOR 1.5 jar; a JVM is
            started) or a running :class:`MeteorScorer`.
        embed, embed_label: a sentence encoder adding the embedding similarity (labelled), or None.
        resamples, permutations: bootstrap resamples and randomisation swaps.
        seed: seed of both random draws (results are reproducible).
        refs_source: where the references come from, for messages (e.g. ``"the test split of data/levir"``).
    """
    if protocol not in ("rsicc", "coco", "none"):
        raise ValueError(f"protocol must be 'rsicc', 'coco' or 'none', got {protocol!r}")
    if resamples < 1 or permutations < 1:
        raise ValueError(f"resamples and permutations must be >= 1, got {resamples} and {permutations}")
    names = check_systems(systems, refs, str(refs_source))
    raw_refs = [list(refs[n]) for n in names]
    notes: list[str] = []
    if len(names) < len(refs):
        notes.append(f"scored on the {len(names)} pairs the predictions cover, of {len(refs)} in {refs_source}")
    flat_runs = [(si, k) for si, s in enumerate(systems) for k in range(len(s.runs))]
    raw_hyps = [[systems[si].runs[k][n] for n in names] for si, k in flat_runs]
    hyp_strs, ref_strs, tokenizer = prepare_captions(raw_hyps, raw_refs, protocol, vocab, ptb, notes)

    labels: dict[str, str] = {}
    scorer: MeteorScorer | None = None
    own_scorer = False
    if isinstance(meteor, MeteorScorer):
        scorer = meteor
    elif meteor == "java":
        try:
            scorer = MeteorScorer()
        except RuntimeError as e:
            raise ChangeCapError(f"--meteor java: {e}") from None
        own_scorer = True
    elif meteor not in ("off", "approx"):
        raise ValueError(f"meteor must be 'off', 'approx', 'java' or a MeteorScorer, got {meteor!r}")
    meteor_kind = "java" if scorer is not None else "approx" if meteor == "approx" else None
    if meteor_kind:
        labels["METEOR"] = JAVA_LABEL if meteor_kind == "java" else APPROX_LABEL
        labels["S_m"] = "(Bleu_4 + METEOR + ROUGE_L + CIDEr) / 4"
    else:
        notes.append("METEOR and S_m off (--meteor approx or java adds them)")
    if embed is not None:
        labels[EMBEDDING_KEY] = f"best cosine similarity to a reference, encoder {embed_label} (not a published metric)"
    notes.append(CIDER_IDF_NOTE)
    notes.append(RANDOMISATION_NOTE)
    try:
        cols = StatisticColumns(meteor_kind, scorer.evaluate_sums if scorer is not None else None, embed is not None)
        cache = NgramCache(4)
        stats = [
            pair_statistics(hyp_strs[j], ref_strs, raw_hyps[j], raw_refs, cols, cache, scorer, embed)
            for j in range(len(flat_runs))
        ]
        return _resample(systems, flat_runs, stats, cols, names, resamples, permutations, seed, labels, notes,
                         protocol, tokenizer)  # fmt: skip
    finally:
        if own_scorer and scorer is not None:
            scorer.close()


def _resample(
    systems: Sequence[SystemPredictions],
    flat_runs: list[tuple[int, int]],
    stats: list[np.ndarray],
    cols: StatisticColumns,
    names: list[str],
    resamples: int,
    permutations: int,
    seed: int,
    labels: dict[str, str],
    notes: list[str],
    protocol: str,
    tokenizer: str,
) -> Comparison:
    n = len(names)
    metrics = cols.metrics
    rng = np.random.default_rng(seed)
    counts = bootstrap_counts(n, resamples, rng)  # [R, N]
    swaps = (rng.random((permutations, n)) < 0.5).astype(np.float64)  # [P, N] 1 = swap the pair's outputs
    runs_of: list[list[np.ndarray]] = [[] for _ in systems]
    for (si, _), st in zip(flat_runs, stats, strict=True):
        runs_of[si].append(st)
    totals = [[st.sum(axis=0) for st in runs] for runs in runs_of]  # per system, per run: [width]

    summaries: list[SystemSummary] = []
    boot_mean: list[dict[str, np.ndarray]] = []  # per system: metric → [R], mean over its runs
    for s, runs, tots in zip(systems, runs_of, totals, strict=True):
        run_scores = [cols.scores(t[None, :], n) for t in tots]
        boot = [cols.scores(counts @ st, n) for st in runs]  # [R, width] sums per resample
        mean_boot = {m: np.mean([b[m] for b in boot], axis=0) for m in metrics}
        boot_mean.append(mean_boot)
        per_run = {m: [float(r[m][0]) for r in run_scores] for m in metrics}
        summaries.append(
            SystemSummary(
                label=s.label,
                files=list(s.files) if s.files else [None] * len(runs),
                scores={m: float(np.mean(per_run[m])) for m in metrics},
                ci95={m: _interval(mean_boot[m]) for m in metrics},
                run_scores=per_run,
                sd={m: float(np.std(per_run[m], ddof=1)) if len(runs) > 1 else None for m in metrics},
            )
        )

    pairs: list[PairComparison] = []
    for ia in range(len(systems)):
        for ib in range(ia + 1, len(systems)):
            a, b = summaries[ia], summaries[ib]
            p_values = _randomisation(runs_of[ia], runs_of[ib], totals[ia], totals[ib], swaps, cols, n)
            result: dict[str, dict[str, Any]] = {}
            for m in metrics:
                diff = b.scores[m] - a.scores[m]
                entry: dict[str, Any] = {
                    "a": a.scores[m],
                    "b": b.scores[m],
                    "difference": diff,
                    "ci95": list(_interval(boot_mean[ib][m] - boot_mean[ia][m])),
                    "p_value": p_values[m],
                }
                if a.runs > 1 and b.runs > 1:
                    seeds = min(a.runs, b.runs)
                    d = [b.run_scores[m][k] - a.run_scores[m][k] for k in range(seeds)]
                    entry["seed_differences"] = d
                    entry["wins"] = {"b": sum(x > 0 for x in d), "a": sum(x < 0 for x in d),
                                     "ties": sum(x == 0 for x in d), "seeds": seeds}  # fmt: skip
                result[m] = entry
            pairs.append(PairComparison(a.label, b.label, result))
    if any(s.runs > 1 for s in summaries):
        notes.append("several runs: scores are means over runs; wins pair the k-th runs of two systems")
    return Comparison(metrics, summaries, pairs, n, protocol, tokenizer, resamples, permutations, seed,
                      labels, notes)  # fmt: skip


def _randomisation(
    runs_a: list[np.ndarray],
    runs_b: list[np.ndarray],
    tot_a: list[np.ndarray],
    tot_b: list[np.ndarray],
    swaps: np.ndarray,
    cols: StatisticColumns,
    n: int,
) -> dict[str, float]:
    """Two-sided approximate-randomisation p-value of ``mean over runs(b) - mean over runs(a)`` per metric.

    With different numbers of runs, both systems' runs are repeated cyclically to their least common multiple
    (which leaves each mean unchanged) and the k-th runs are swapped together, so a swap always exchanges one
    output of each system per pair.
    """
    count = math.lcm(len(runs_a), len(runs_b))
    observed: dict[str, float] = dict.fromkeys(cols.metrics, 0.0)
    swapped: dict[str, np.ndarray] = {m: np.zeros(swaps.shape[0]) for m in cols.metrics}
    for k in range(count):
        xa, xb = runs_a[k % len(runs_a)], runs_b[k % len(runs_b)]
        ta, tb = tot_a[k % len(tot_a)], tot_b[k % len(tot_b)]
        moved = swaps @ (xb - xa)  # [P, width]: what swapping moves from b to a
        sa, sb = cols.scores(ta + moved, n), cols.scores(tb - moved, n)
        obs_a, obs_b = cols.scores(ta[None, :], n), cols.scores(tb[None, :], n)
        for m in cols.metrics:
            swapped[m] += (sb[m] - sa[m]) / count
            observed[m] += float(obs_b[m][0] - obs_a[m][0]) / count
    p: dict[str, float] = {}
    for m in cols.metrics:
        obs = abs(observed[m])
        extreme = int(np.count_nonzero(np.abs(swapped[m]) >= obs - _TIE * max(1.0, obs)))
        p[m] = (1 + extreme) / (1 + swaps.shape[0])
    return p


def system_label(path: str | os.PathLike[str], others: Sequence[str | os.PathLike[str]]) -> str:
    """A short label for a prediction file: its stem, with as many parent folders as needed to tell it from
    ``others`` (``evaluate`` names every file ``predictions_<split>.json``, in ``<model>/eval_<split>/``)."""
    parts = Path(path).with_suffix("").parts
    other_parts = [Path(o).with_suffix("").parts for o in others if Path(o) != Path(path)]
    for k in range(1, len(parts) + 1):
        tail = parts[-k:]
        if all(op[-k:] != tail for op in other_parts):
            return "/".join(tail)
    return str(path)
