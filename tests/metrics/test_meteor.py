"""METEOR: the long-lived JVM equals pycocoevalcap's Meteor; unavailability is reported; the approximation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from changecap.metrics.meteor import (
    METEOR_JAR_ENV,
    ApproxStats,
    MeteorScorer,
    approx_align,
    approx_from_sums,
    approx_score,
    meteor_approx,
    meteor_approx_statistics,
    meteor_approx_stats_array,
    meteor_availability,
    meteor_stats_array,
)
from tests.metrics.conftest import as_coco
from tests.metrics.corpora import PARITY_CASES

HYPS = [
    "the cat sat on the mat",
    "12 34 56",
    "",
    "café naïve",
    "a  b c |||x",
    "the road is built",
    "many new buildings appear on the left",
]
REFS = [
    ["the cat is on the mat", "a cat on a mat"],
    ["12 34", "12 56"],
    ["a b c"],
    ["cafe naive"],
    ["a b c x"],
    ["a new road is built", "the road was built", "roads"],
    ["several buildings are built on the left side", "many buildings appear"],
]


@pytest.mark.java
def test_jvm_scorer_equals_pycocoevalcap(meteor_scorer: MeteorScorer, coco_meteor: Any) -> None:
    corpus, items = meteor_scorer.score(HYPS, REFS)
    gts, res = as_coco(HYPS, REFS)
    ref_corpus, ref_items = coco_meteor.compute_score(gts, res)
    assert corpus == pytest.approx(ref_corpus, abs=1e-9, rel=0)
    assert items == pytest.approx(ref_items, abs=1e-9, rel=0)


@pytest.mark.java
def test_repeated_requests_are_sent_once_and_score_as_pycocoevalcap(
    meteor_scorer: MeteorScorer, coco_meteor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RSICC-like: many unchanged pairs share references and get the same answer; changed pairs are all different
    hyps, refs = PARITY_CASES["levir_like"]
    no_change = ["there is no difference", "the two scenes seem identical", "no change has occurred"]
    hyps = [*hyps, *["there is no difference"] * 30, *["the scene is the same as before"] * 10]
    refs = [*refs, *[no_change] * 40]
    sent: list[int] = []
    exchange = meteor_scorer._exchange

    def counting(lines: Any, n_out: int) -> list[str]:
        sent.append(len(lines))
        return exchange(lines, n_out)

    monkeypatch.setattr(meteor_scorer, "_exchange", counting)
    stats = meteor_scorer.statistics(hyps, refs)
    distinct = len({(h, tuple(r)) for h, r in zip(hyps, refs)})
    assert sent == [distinct] and distinct < len(hyps) - 35
    corpus, items = meteor_scorer.evaluate(stats)
    gts, res = as_coco(hyps, refs)
    ref_corpus, ref_items = coco_meteor.compute_score(gts, res)
    assert corpus == pytest.approx(ref_corpus, abs=1e-12, rel=0)
    assert items == pytest.approx(ref_items, abs=1e-12, rel=0)


@pytest.mark.java
def test_warmed_up_jvm_scores_as_pycocoevalcap_and_closes_while_warming(coco_meteor: Any) -> None:
    with MeteorScorer(warmup=True) as early:
        pass  # closed while still loading / warming up: killed, no hang, no error
    assert not early.alive
    hyps, refs = PARITY_CASES["levir_like"]
    with MeteorScorer(warmup=True) as scorer:
        corpus, items = scorer.score(hyps, refs)  # waits for the warm-up (the lock), then scores
        assert scorer._warmup is not None
        scorer._warmup.join()
        again = scorer.score(hyps, refs)
    gts, res = as_coco(hyps, refs)
    ref_corpus, ref_items = coco_meteor.compute_score(gts, res)
    assert corpus == pytest.approx(ref_corpus, abs=1e-12, rel=0)
    assert items == pytest.approx(ref_items, abs=1e-12, rel=0)
    assert again == (corpus, items)


@pytest.mark.java
def test_jvm_is_reused_and_subsets_aggregate_from_statistics(meteor_scorer: MeteorScorer) -> None:
    hyps, refs = PARITY_CASES["levir_like"]
    stats = meteor_scorer.statistics(hyps, refs)
    full, items = meteor_scorer.evaluate(stats)
    idx = list(range(0, len(hyps), 2))
    sub, sub_items = meteor_scorer.evaluate([stats[i] for i in idx])
    direct, _ = meteor_scorer.score([hyps[i] for i in idx], [refs[i] for i in idx])
    assert sub == pytest.approx(direct, abs=1e-12)
    assert sub_items == [items[i] for i in idx]
    # the corpus score comes from summed statistics, not from the mean of the item scores
    assert full != pytest.approx(sum(items) / len(items), abs=1e-6)
    assert meteor_scorer.alive


@pytest.mark.java
def test_summed_statistics_scored_by_the_jar_equal_its_corpus_score(meteor_scorer: MeteorScorer) -> None:
    """Rows of meteor_stats_array summed over any subset (a perfect one-chunk pair adds no chunk, as in the jar)
    and scored with one EVAL line each give the jar's corpus METEOR of that subset."""
    hyps, refs = PARITY_CASES["levir_like"]
    hyps = [refs[0][0], *hyps]  # a perfect match, scored in one chunk
    refs = [refs[0], *refs]
    stats = meteor_scorer.statistics(hyps, refs)
    arr = meteor_stats_array(stats)  # [N, 23]
    assert arr[0, 20] == 0.0  # its chunk is not counted
    subsets = [list(range(len(hyps))), list(range(0, len(hyps), 2)), [0], [1, 1, 2]]
    sums = np.stack([arr[idx].sum(axis=0) for idx in subsets])
    got = meteor_scorer.evaluate_sums(sums)
    for value, idx in zip(got, subsets, strict=True):
        assert value == pytest.approx(meteor_scorer.evaluate([stats[i] for i in idx])[0], abs=1e-12)


@pytest.mark.java
def test_invalid_unicode_fails_before_sending(meteor_scorer: MeteorScorer) -> None:
    with pytest.raises(ValueError, match="not valid Unicode"):
        meteor_scorer.score(["a \ud800 b"], [["a b"]])
    assert meteor_scorer.score(["a b"], [["a b"]])[0] == 1.0  # the JVM is still in sync


def _fake_jar(tmp_path: Path, with_paraphrase: bool) -> Path:
    jar = tmp_path / "meteor-1.5.jar"
    jar.write_bytes(b"PK")  # never executed: availability only looks at the files
    if with_paraphrase:
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "paraphrase-en.gz").write_bytes(b"")
    return jar


def test_unavailable_when_jar_env_points_to_missing_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(METEOR_JAR_ENV, str(tmp_path / "missing.jar"))
    ok, reason = meteor_availability()
    if reason == "no java on PATH":
        pytest.skip("no java on PATH: the jar check is not reached")
    assert not ok and reason.startswith("jar not found") and "missing.jar" in reason
    with pytest.raises(RuntimeError, match="jar not found"):
        MeteorScorer()


def test_unavailable_reasons_java_and_paraphrase(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(METEOR_JAR_ENV, str(_fake_jar(tmp_path, with_paraphrase=False)))
    ok, reason = meteor_availability()
    if reason != "no java on PATH":
        assert not ok and reason.startswith("paraphrase data missing")
    monkeypatch.setenv("PATH", str(tmp_path))  # no java there
    assert meteor_availability() == (False, "no java on PATH")


def test_fake_jar_with_paraphrase_is_considered_available(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    jar = _fake_jar(tmp_path, with_paraphrase=True)
    monkeypatch.setenv(METEOR_JAR_ENV, str(jar))
    ok, info = meteor_availability()
    if info == "no java on PATH":
        pytest.skip("no java on PATH")
    assert ok and info == str(jar)


def test_approx_alignment_and_formula_by_hand() -> None:
    st = approx_align(["a", "b", "c", "d"], ["a", "b", "x", "c", "d"])
    assert st == ApproxStats(hyp_len=4, ref_len=5, matches=4, chunks=2)
    # P = 1, R = 0.8, Fmean = P·R / (0.85 P + 0.15 R) = 0.8 / 0.97; penalty = 0.6 · (2/4)^0.2
    expected = (0.8 / 0.97) * (1 - 0.6 * 0.5**0.2)
    assert approx_score(st) == pytest.approx(expected, abs=1e-12)
    assert approx_score(approx_align(["a", "b", "c"], ["a", "b", "c"])) == 1.0  # one full chunk: no penalty
    assert approx_score(approx_align(["x", "y"], ["a", "b"])) == 0.0


def test_approx_prefers_extending_chunks_with_repeated_words() -> None:
    st = approx_align(["the", "road", "the", "house"], ["the", "house", "the", "road"])
    assert st.matches == 4 and st.chunks == 2  # "the road" + "the house"


def test_approx_corpus_uses_summed_statistics() -> None:
    corpus, items = meteor_approx(["a b c", "x y z w"], [["a b c"], ["x q z"]])
    assert items[0] == 1.0 and 0 < items[1] < 1
    assert corpus != pytest.approx(sum(items) / 2)
    # lower-cased and punctuation split off like -norm
    assert meteor_approx(["A road."], [["a road ."]])[1][0] == 1.0


def test_approx_scores_from_summed_arrays_equal_the_python_formula() -> None:
    hyps, refs = PARITY_CASES["levir_like"]
    stats = meteor_approx_statistics(hyps, refs)
    arr = meteor_approx_stats_array(stats)  # [N, 4]
    assert approx_from_sums(arr).tolist() == pytest.approx([approx_score(st) for st in stats], abs=1e-15)
    corpus, _ = meteor_approx(hyps, refs)
    assert float(approx_from_sums(arr.sum(axis=0))) == pytest.approx(corpus, abs=1e-15)
    assert approx_from_sums(np.array([3.0, 4.0, 0.0, 0.0])) == 0.0  # no match: 0, no division warning
