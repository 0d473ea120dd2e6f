"""ROUGE-L: parity with pycocoevalcap 1.2 and the bit-parallel LCS against the textbook dynamic programme."""

from __future__ import annotations

import random

import pytest

from changecap.metrics.rouge import lcs_length, match_masks, rouge_l, rouge_l_item
from tests.metrics.conftest import coco_rouge
from tests.metrics.corpora import PARITY_CASES

TOL = 1e-12  # pycocoevalcap parity: the scores agree to float rounding


def _lcs_dp(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def test_bit_parallel_lcs_equals_dynamic_programme() -> None:
    rng = random.Random(0)
    for _ in range(500):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 15))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 15))]
        assert lcs_length(match_masks(a), len(a), b) == _lcs_dp(a, b), (a, b)


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_rouge_matches_pycocoevalcap(case: str, pycocoevalcap_available: None) -> None:
    hyps, refs = PARITY_CASES[case]
    mean, items = rouge_l(hyps, refs)
    ref_mean, ref_items = coco_rouge(hyps, refs)
    assert mean == pytest.approx(ref_mean, abs=TOL, rel=0)
    assert items == pytest.approx(ref_items, abs=TOL, rel=0)


def test_precision_and_recall_are_maximised_separately() -> None:
    # best precision comes from the long reference, best recall from the short one
    score = rouge_l_item("a b", ["a b c d e f", "a x"])
    p, r, beta = 1.0, 0.5, 1.2
    assert score == pytest.approx((1 + beta**2) * p * r / (r + beta**2 * p))


def test_no_overlap_is_zero_and_identity_is_one() -> None:
    assert rouge_l_item("x y", ["a b"]) == 0.0
    assert rouge_l_item("a b c", ["a b c"]) == pytest.approx(1.0)
