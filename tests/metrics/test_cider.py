"""CIDEr-D: parity with pycocoevalcap 1.2 and the documented idf / single-pair behaviour."""

from __future__ import annotations

import pytest

from changecap.metrics.cider import cider_d
from changecap.metrics.ngrams import NgramCache
from tests.metrics.conftest import coco_cider
from tests.metrics.corpora import PARITY_CASES

TOL = 1e-12  # pycocoevalcap parity: the scores agree to float rounding


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_cider_matches_pycocoevalcap(case: str, pycocoevalcap_available: None) -> None:
    hyps, refs = PARITY_CASES[case]
    mean, items = cider_d(hyps, refs)
    ref_mean, ref_items = coco_cider(hyps, refs)
    assert mean == pytest.approx(ref_mean, abs=TOL, rel=0)
    assert items == pytest.approx(ref_items, abs=TOL, rel=0)


def test_single_pair_is_zero_like_pycocoevalcap_unless_rsicc_rule() -> None:
    hyps, refs = PARITY_CASES["single_item"]
    assert cider_d(hyps, refs)[0] == 0.0
    # the RSICC eval_func copy replaces log(1) by 1, which makes a single pair scoreable
    assert cider_d(hyps, refs, single_pair="rsicc")[0] > 0.0


def test_idf_comes_from_the_scored_set() -> None:
    # The same pair scores differently inside different corpora: df is counted over the references scored.
    pair_h, pair_r = ["a new road is built"], [["a new road is built", "a road appears"]]
    small = cider_d(pair_h + ["x y z"], pair_r + [["p q r"]])[1][0]
    common = cider_d(pair_h + ["a road"], pair_r + [["a new house"]])[1][0]  # "a", "new" now less rare
    assert small > common > 0


def test_shared_cache_and_duplicates_give_same_scores() -> None:
    hyps, refs = PARITY_CASES["levir_like"]
    assert cider_d(hyps, refs, cache=NgramCache(4)) == cider_d(hyps, refs)


def test_rejects_unknown_single_pair_rule() -> None:
    with pytest.raises(ValueError, match="single_pair"):
        cider_d(["a"], [["a"]], single_pair="paper")  # type: ignore[arg-type]
