"""BLEU-1..n with the semantics of the coco-caption ``BleuScorer`` (pycocoevalcap 1.2, ``option='closest'``).

What "coco semantics" means, and why each detail is kept :

* clipped n-gram counts: a hypothesis n-gram counts at most as often as in the reference where it is most frequent;
* effective reference length per pair = the reference length closest to the hypothesis length, ties going to the
  shorter reference (``min((|l - c|, l))``), summed over the corpus for the brevity penalty;
* the corpus score is computed from summed counts (not the mean of item scores);
* the guards ``tiny = 1e-15`` (numerator) and ``small = 1e-9`` (denominator) make every score strictly positive
  and below 1 except for an empty hypothesis; published numbers include them, so we keep them;
* per-item scores use the item's own counts and brevity penalty, the geometric mean being built up cumulatively
  exactly as in the reference (``bleu *= p_k`` then ``bleu ** (1/k)``) so the floats agree bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from changecap.metrics.ngrams import CookedCaption, NgramCache, check_pairs, ngram_order

_SMALL = 1e-9
_TINY = 1e-15

# (hypothesis length, closest reference length, guesses per order, clipped matches per order)
_Comps = tuple[int, int, tuple[int, ...], tuple[int, ...]]


def _geometric_scores(correct: Sequence[float], guess: Sequence[float], testlen: float, reflen: float) -> list[float]:
    """BLEU-1..n from (clipped) matches and guesses, with the coco guards and brevity penalty."""
    scores: list[float] = []
    bleu = 1.0
    for k in range(len(correct)):
        bleu *= (float(correct[k]) + _TINY) / (float(guess[k]) + _SMALL)
        scores.append(bleu ** (1.0 / (k + 1)))
    ratio = (testlen + _TINY) / (reflen + _SMALL)  # guards avoid a zero division on empty hypotheses
    if ratio < 1:
        bp = math.exp(1 - 1 / ratio)
        scores = [s * bp for s in scores]
    return scores


def bleu(
    hyps: Sequence[str], refs: Sequence[Sequence[str]], n: int = 4, *, cache: NgramCache | None = None
) -> tuple[list[float], list[list[float]]]:
    """Corpus BLEU-1..n and per-item scores, equal to ``pycocoevalcap.bleu.Bleu(n).compute_score``.

    Args:
        hyps: one hypothesis string per pair.
        refs: the reference strings of each pair (at least one).
        n: highest n-gram order.
        cache: optional n-gram cache shared with other scorers (e.g. CIDEr-D) on the same strings.

    Returns:
        ``(corpus, per_item)`` with ``corpus[k-1]`` = BLEU-k and ``per_item[k-1][i]`` = BLEU-k of pair ``i``
        (the layout of pycocoevalcap's return value).
    """
    total_correct = [0] * n
    total_guess = [0] * n
    total_test = 0
    total_ref = 0
    per_item: list[list[float]] = [[] for _ in range(n)]
    score_memo: dict[_Comps, list[float]] = {}
    for comps in bleu_statistics(hyps, refs, n, cache=cache):
        testlen, reflen, guess, correct = comps
        item_scores = score_memo.get(comps)
        if item_scores is None:
            item_scores = _geometric_scores(correct, guess, testlen, reflen)
            score_memo[comps] = item_scores
        total_test += testlen
        total_ref += reflen
        for k in range(n):
            total_guess[k] += guess[k]
            total_correct[k] += correct[k]
            per_item[k].append(item_scores[k])

    corpus = _geometric_scores(total_correct, total_guess, total_test, total_ref)
    return corpus, per_item


def bleu_statistics(
    hyps: Sequence[str], refs: Sequence[Sequence[str]], n: int = 4, *, cache: NgramCache | None = None
) -> list[_Comps]:
    """Per pair ``(hypothesis length, closest reference length, guesses per order, clipped matches per order)``.

    Corpus BLEU is a function of these statistics summed over the pairs (:func:`bleu_from_sums`), so any subset or
    resample of the pairs is scored from them without counting n-grams again.
    """
    check_pairs(hyps, refs)
    cooked = cache if cache is not None and cache.n == n else NgramCache(n)
    ref_memo: dict[tuple[str, ...], tuple[list[int], dict[str, int]]] = {}
    item_memo: dict[tuple[str, tuple[str, ...]], _Comps] = {}
    out: list[_Comps] = []
    for hyp, rs in zip(hyps, refs):
        rkey = tuple(rs)
        key = (hyp, rkey)
        comps = item_memo.get(key)
        if comps is None:
            ref_stats = ref_memo.get(rkey)
            if ref_stats is None:
                ref_stats = _max_ref_counts([cooked(r) for r in rkey])
                ref_memo[rkey] = ref_stats
            lengths, maxcounts = ref_stats
            h = cooked(hyp)
            testlen = h.length
            reflen = min((abs(l - testlen), l) for l in lengths)[1]  # 'closest', ties → shorter
            guess = tuple(max(0, testlen - k + 1) for k in range(1, n + 1))
            correct = [0] * n
            for g, c in h.counts.items():
                m = maxcounts.get(g)
                if m:
                    correct[ngram_order(g)] += c if c < m else m  # clipped count
            comps = (testlen, reflen, guess, tuple(correct))
            item_memo[key] = comps
        out.append(comps)
    return out


def bleu_statistics_array(comps: Sequence[_Comps]) -> np.ndarray:
    """:func:`bleu_statistics` as a float array ``[N, 2 + 2n]``: test length, reference length, n guesses,
    n clipped matches (the column layout :func:`bleu_from_sums` reads)."""
    return np.array([(t, r, *g, *c) for t, r, g, c in comps], dtype=np.float64).reshape(len(comps), -1)


def bleu_from_sums(sums: np.ndarray, n: int = 4) -> np.ndarray:
    """Corpus BLEU-1..n ``[..., n]`` from summed statistics ``[..., 2 + 2n]`` (any leading shape, e.g. one row per
    bootstrap resample), with the same guards, brevity penalty and order of operations as :func:`bleu`."""
    testlen, reflen = sums[..., 0], sums[..., 1]
    guess, correct = sums[..., 2 : 2 + n], sums[..., 2 + n : 2 + 2 * n]
    # the running product of the precisions, multiplied in order as ``_geometric_scores`` does
    cumulative = np.cumprod((correct + _TINY) / (guess + _SMALL), axis=-1)  # [..., n]
    scores = cumulative ** (1.0 / np.arange(1, n + 1))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    with np.errstate(divide="ignore", over="ignore"):
        penalty = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    return scores * penalty[..., None]


def _max_ref_counts(refs: Sequence[CookedCaption]) -> tuple[list[int], dict[str, int]]:
    """Reference lengths and, per n-gram, its largest count in any one reference.

    Most n-grams occur once per caption, so the union is built with C-level ``dict.update`` and only the few
    n-grams repeated inside a reference (``CookedCaption.repeated``) are fixed up to their maximum afterwards.
    """
    maxcounts: dict[str, int] = {}
    for r in refs:
        maxcounts.update(r.counts)
    for r in refs:
        for g, c in r.repeated.items():
            if c > maxcounts[g]:
                maxcounts[g] = c
    return [r.length for r in refs], maxcounts
