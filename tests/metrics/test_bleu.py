"""BLEU: parity with pycocoevalcap 1.2 per item and per corpus, and the coco details it depends on."""

from __future__ import annotations

import math

import pytest

from changecap.metrics.bleu import bleu, bleu_from_sums, bleu_statistics, bleu_statistics_array
from changecap.metrics.ngrams import NgramCache, cook
from tests.metrics.conftest import coco_bleu
from tests.metrics.corpora import PARITY_CASES

TOL = 1e-12  # pycocoevalcap parity: the scores agree to float rounding


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_bleu_matches_pycocoevalcap(case: str, pycocoevalcap_available: None) -> None:
    hyps, refs = PARITY_CASES[case]
    corpus, items = bleu(hyps, refs)
    ref_corpus, ref_items = coco_bleu(hyps, refs)
    assert corpus == pytest.approx(ref_corpus, abs=TOL, rel=0)
    for k in range(4):
        assert items[k] == pytest.approx(ref_items[k], abs=TOL, rel=0), f"Bleu_{k + 1} per item"


def test_shared_cache_gives_same_scores() -> None:
    hyps, refs = PARITY_CASES["levir_like"]
    assert bleu(hyps, refs, cache=NgramCache(4)) == bleu(hyps, refs)


def test_closest_reference_length_ties_go_to_the_shorter() -> None:
    # hypothesis of 3 words, references of 2 and 4 words: tie at distance 1 → effective length 2, no penalty.
    corpus, _ = bleu(["a b c"], [["a b", "a b c d"]])
    # BLEU-1 = clipped matches / guesses with the guards; no brevity penalty because 3 > 2.
    assert corpus[0] == pytest.approx((3 + 1e-15) / (3 + 1e-9), abs=1e-15)


def test_guards_keep_scores_strictly_inside_0_1() -> None:
    corpus, items = bleu(["a b c d e", "x y"], [["a b c d e"], ["p q"]])
    assert 0 < items[3][1] < 1e-6  # no 4-gram at all, yet not exactly 0
    assert 0.999 < items[0][0] < 1  # perfect match, yet not exactly 1
    assert all(0 < s < 1 for s in corpus)


def test_empty_hypothesis_scores_zero() -> None:
    _, items = bleu(["", "a b"], [["a b"], ["a b"]])
    assert [items[k][0] for k in range(4)] == [0.0] * 4


def test_corpus_uses_summed_counts_not_mean_of_items() -> None:
    hyps, refs = ["a b c d", "x"], [["a b c d"], ["y"]]
    corpus, items = bleu(hyps, refs)
    assert not math.isclose(corpus[0], sum(items[0]) / 2)


def test_cook_counts_ngrams_by_order() -> None:
    c = cook("a b a b", 4)
    assert c.length == 4
    assert c.counts == {"a": 2, "b": 2, "a b": 2, "b a": 1, "a b a": 1, "b a b": 1, "a b a b": 1}
    assert c.repeated == {"a": 2, "b": 2, "a b": 2}
    # keys of each order are contiguous: 2 unigrams, 2 bigrams, 2 trigrams, 1 four-gram
    assert c.order_ends == (2, 4, 6, 7)


@pytest.mark.parametrize("bad", [([], []), (["a"], []), (["a"], [[]]), (["a"], ["a"])])
def test_malformed_inputs_raise(bad: tuple[list[str], list[list[str]]]) -> None:
    with pytest.raises(ValueError):
        bleu(*bad)


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_bleu_from_summed_statistics_equals_bleu(case: str) -> None:
    """The per-pair statistics summed over the corpus (or over any pair's own row) give bleu's corpus and item
    scores: what a bootstrap resample rescored from counts relies on."""
    hyps, refs = PARITY_CASES[case]
    corpus, items = bleu(hyps, refs)
    stats = bleu_statistics_array(bleu_statistics(hyps, refs))  # [N, 10]
    assert bleu_from_sums(stats.sum(axis=0)).tolist() == pytest.approx(corpus, abs=1e-15, rel=0)
    per_item = bleu_from_sums(stats)  # [N, 4]
    for k in range(4):
        assert per_item[:, k].tolist() == pytest.approx(items[k], abs=1e-15, rel=0)
