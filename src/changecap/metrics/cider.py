"""CIDEr-D with the semantics of coco-caption's ``Cider`` (pycocoevalcap 1.2), reported as "CIDEr" by RSICC papers.

For n = 1..4, each caption becomes a tf-idf vector with idf(g) = log(N) − log(max(1, df(g))), where N is the number
of pairs scored and df(g) the number of pairs whose *references* contain g (coco-caption's rule: df counts the set being
scored, so a subset gets different idf values than the full test set). The similarity of a hypothesis h to a
reference r for order n is ``Σ_g min(h_g, r_g)·r_g / (‖h‖·‖r‖)`` (the "D" clipping), times the Gaussian length
penalty ``exp(−δ²/(2σ²))`` with σ = 6 and δ the difference of the numbers of *bigrams* (coco counts the length
while visiting the 2-grams). A pair's score is the mean over n and over its references, × 10; the corpus score is
the mean over pairs.

Single-pair quirk: with N = 1 every idf is log(1) − log(1) = 0, so pycocoevalcap returns 0 whatever the captions.
We match that by default (``single_pair="coco"``). The RSICC repositories' ``eval_func`` copy replaces log(N) by 1
when N = 1 (``single_pair="rsicc"``), which only matters when scoring one pair at a time.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from itertools import repeat
from operator import mul
from typing import Literal

from changecap.metrics.ngrams import NgramCache, check_pairs, ngram_order

SinglePairRule = Literal["coco", "rsicc"]

# A caption's tf-idf representation: one dict over all orders (keys are space-joined n-grams, so orders never
# collide), the per-order norms, and the number of bigrams used by the length penalty.
_Vec = tuple[dict[str, float], list[float], int]


def cider_d(
    hyps: Sequence[str],
    refs: Sequence[Sequence[str]],
    n: int = 4,
    sigma: float = 6.0,
    *,
    single_pair: SinglePairRule = "coco",
    cache: NgramCache | None = None,
) -> tuple[float, list[float]]:
    """Mean CIDEr-D and per-item scores, equal to ``pycocoevalcap.cider.Cider().compute_score``.

    Args:
        hyps: one hypothesis string per pair.
        refs: reference strings of each pair (at least one).
        n: highest n-gram order.
        sigma: standard deviation of the length penalty.
        single_pair: rule for N = 1 (see module docstring).
        cache: optional n-gram cache shared with BLEU on the same strings.
    """
    check_pairs(hyps, refs)
    if single_pair not in ("coco", "rsicc"):
        raise ValueError(f"single_pair must be 'coco' or 'rsicc', got {single_pair!r}")
    cooked = cache if cache is not None and cache.n == n else NgramCache(n)

    # Document frequency over the references of each pair. Identical reference lists (the no-change pairs) are
    # merged once and weighted by their multiplicity.
    df: Counter[str] = Counter()
    for rkey, mult in Counter(tuple(rs) for rs in refs).items():
        seen: set[str] = set()
        for r in rkey:
            seen.update(cooked(r).counts)
        if mult == 1:
            df.update(seen)
        else:
            for g in seen:
                df[g] += mult

    num_pairs = len(refs)
    log_n = 1.0 if (num_pairs == 1 and single_pair == "rsicc") else math.log(float(num_pairs))
    # idf = log N − log max(1, df), tabulated per integer df (df <= N); index 0 = n-grams absent from every
    # reference, which coco gives df = max(1, 0) = 1, i.e. idf = log N.
    idf_of_df = [log_n - math.log(float(max(1, d))) for d in range(max(df.values(), default=0) + 1)]
    df_get = df.get

    vec_memo: dict[str, _Vec] = {}

    def vectorize(caption: str) -> _Vec:
        hit = vec_memo.get(caption)
        if hit is None:
            c = cooked(caption)
            keys = c.counts.keys()
            # tf·idf for every n-gram, with the look-ups mapped in C (this loop dominates the scorer's time).
            weights = list(map(mul, c.counts.values(), map(idf_of_df.__getitem__, map(df_get, keys, repeat(0)))))
            norms: list[float] = []
            start = 0
            for end in c.order_ends:
                seg = weights[start:end]
                norms.append(math.sqrt(sum(map(mul, seg, seg))))
                start = end
            # coco counts the "length" while visiting the bigrams: the number of bigram positions.
            bigrams = max(0, c.length - 1) if n > 1 else 0
            hit = (dict(zip(keys, weights)), norms, bigrams)
            vec_memo[caption] = hit
        return hit

    two_sigma_sq = 2 * sigma**2
    memo: dict[tuple[str, tuple[str, ...]], float] = {}
    scores: list[float] = []
    for hyp, rs in zip(hyps, refs):
        key = (hyp, tuple(rs))
        s = memo.get(key)
        if s is None:
            hvec, hnorm, hlen = vectorize(hyp)
            acc = [0.0] * n
            for r in rs:
                rvec, rnorm, rlen = vectorize(r)
                val = [0.0] * n
                for g in hvec.keys() & rvec.keys():  # only shared n-grams contribute to Σ min(h, r)·r
                    hv = hvec[g]
                    rv = rvec[g]
                    val[ngram_order(g)] += (hv if hv < rv else rv) * rv
                penalty = math.exp(-(float(hlen - rlen) ** 2) / two_sigma_sq)
                for k in range(n):
                    if hnorm[k] != 0 and rnorm[k] != 0:
                        val[k] /= hnorm[k] * rnorm[k]
                    acc[k] += val[k] * penalty
            s = sum(acc) / n / len(rs) * 10.0
            memo[key] = s
        scores.append(s)
    return math.fsum(scores) / len(scores), scores
