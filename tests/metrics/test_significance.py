"""Paired comparison of systems: all-pairs scores equal evaluate_captions, the vectorised resampling equals rescoring
the drawn corpus, identical systems give zero intervals and p = 1, a planted difference is found, the randomisation
p-value matches exact enumeration, runs (seeds), and one-line errors naming the file and the pair."""

from __future__ import annotations

import itertools
import json
import random
import statistics
from pathlib import Path

import numpy as np
import pytest

from changecap.errors import ChangeCapError, DataError
from changecap.metrics import evaluate_captions
from changecap.metrics.bleu import bleu
from changecap.metrics.cider import cider_d
from changecap.metrics.meteor import MeteorScorer
from changecap.metrics.ngrams import NgramCache
from changecap.metrics.rouge import rouge_l
from changecap.metrics.significance import (
    StatisticColumns,
    SystemPredictions,
    bootstrap_counts,
    check_systems,
    compare_systems,
    load_system,
    pair_statistics,
    system_label,
)

WORDS = ["a", "the", "house", "houses", "road", "roads", "tree", "trees", "is", "are", "built", "removed", "new",
         "on", "left", "right", "top", "bottom", "of", "scene"]  # fmt: skip
NO_CHANGE = "there is no difference"


def corpus(seed: int, n: int) -> tuple[list[str], dict[str, list[str]]]:
    """``n`` pairs with 2-5 references (a third of them no-change pairs sharing references)."""
    rng = random.Random(seed)

    def sent() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10)))

    names = [f"test_{i:06d}.png" for i in range(n)]
    refs = {}
    for i, name in enumerate(names):
        if i % 3 == 0:
            refs[name] = [NO_CHANGE, "the scene is the same as before", "nothing has changed"]
        else:
            refs[name] = [sent() for _ in range(rng.randint(2, 5))]
    return names, refs


def noisy(names: list[str], refs: dict[str, list[str]], seed: int, good: float) -> dict[str, str]:
    """A system answering a share ``good`` of the pairs with one of their references, the rest with another pair's."""
    rng = random.Random(seed)
    out = {}
    for name in names:
        if rng.random() < good:
            out[name] = rng.choice(refs[name])
        else:
            out[name] = rng.choice(refs[rng.choice(names)])
    return out


@pytest.fixture(scope="module")
def data() -> tuple[list[str], dict[str, list[str]]]:
    return corpus(0, 60)


def test_identical_systems_give_zero_intervals_and_p_one(data) -> None:
    names, refs = data
    preds = noisy(names, refs, 1, 0.5)
    c = compare_systems([SystemPredictions("x", [preds]), SystemPredictions("y", [dict(preds)])], refs,
                        protocol="none", resamples=200, permutations=200, meteor="approx")  # fmt: skip
    assert c.metrics == ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "S_m"]
    for m, v in c.pairs[0].metrics.items():
        assert v["difference"] == 0.0, m
        assert v["ci95"] == [0.0, 0.0], m
        assert v["p_value"] == 1.0, m
    # the systems' own intervals are real intervals around their score
    lo, hi = c.systems[0].ci95["Bleu_4"]
    assert lo < c.systems[0].scores["Bleu_4"] < hi


def test_a_planted_difference_is_found(data) -> None:
    names, refs = data
    worse, better = noisy(names, refs, 1, 0.2), noisy(names, refs, 2, 0.8)
    c = compare_systems([SystemPredictions("worse", [worse]), SystemPredictions("better", [better])], refs,
                        protocol="none", resamples=500, permutations=500)  # fmt: skip
    (pair,) = c.pairs
    assert (pair.a, pair.b) == ("worse", "better")
    for m in c.metrics:
        v = pair.metrics[m]
        assert v["difference"] > 0 and v["ci95"][0] > 0, m  # b - a, the interval excludes 0
        assert v["ci95"][0] <= v["difference"] <= v["ci95"][1], m
        assert v["p_value"] < 0.01, m
    reverse = compare_systems([SystemPredictions("better", [better]), SystemPredictions("worse", [worse])], refs,
                              protocol="none", resamples=500, permutations=500)  # fmt: skip
    assert reverse.pairs[0].metrics["CIDEr"]["difference"] == pytest.approx(-pair.metrics["CIDEr"]["difference"])
    assert reverse.pairs[0].metrics["CIDEr"]["ci95"][1] < 0


@pytest.mark.parametrize("protocol", ["none", "rsicc", "coco"])
def test_all_pair_scores_equal_evaluate_captions(data, protocol: str) -> None:
    names, refs = data
    runs = [noisy(names, refs, s, 0.5) for s in (3, 4)]
    c = compare_systems([SystemPredictions("a", [runs[0]]), SystemPredictions("b", [runs[1]])], refs,
                        protocol=protocol, ptb="python", meteor="approx", resamples=5, permutations=5)  # fmt: skip
    for system, preds in zip(c.systems, runs, strict=True):
        ref = evaluate_captions(preds, refs, protocol=protocol, ptb="python", meteor="approx", breakdown=False)
        for m in c.metrics:
            assert system.scores[m] == pytest.approx(ref.scores[m], abs=1e-9, rel=0), (protocol, m)


def test_resampled_sums_equal_rescoring_the_drawn_corpus(data) -> None:
    """One bootstrap row = scoring the corpus of the drawn pairs (BLEU from its counts; CIDEr-D with the full-set
    idf, i.e. the mean of the full-set per-pair scores; ROUGE-L the mean)."""
    names, refs = data
    preds = noisy(names, refs, 5, 0.5)
    hyps = [preds[n] for n in names]
    ref_l = [refs[n] for n in names]
    cols = StatisticColumns(None, None, embed=False)
    stats = pair_statistics(hyps, ref_l, hyps, ref_l, cols, NgramCache(4), None, None)
    counts = bootstrap_counts(len(names), 4, np.random.default_rng(0))  # [4, N]
    assert counts.sum(axis=1).tolist() == [len(names)] * 4
    full_cider = cider_d(hyps, ref_l)[1]
    for row in counts:
        drawn = [i for i, c in enumerate(row) for _ in range(int(c))]
        scores = cols.scores((row @ stats)[None, :], len(names))
        b_corpus, _ = bleu([hyps[i] for i in drawn], [ref_l[i] for i in drawn])
        for k in range(4):
            assert scores[f"Bleu_{k + 1}"][0] == pytest.approx(b_corpus[k], abs=1e-12)
        r_corpus, _ = rouge_l([hyps[i] for i in drawn], [ref_l[i] for i in drawn])
        assert scores["ROUGE_L"][0] == pytest.approx(r_corpus, abs=1e-12)
        assert scores["CIDEr"][0] == pytest.approx(statistics.fmean(full_cider[i] for i in drawn), abs=1e-12)


def test_randomisation_p_value_matches_exact_enumeration() -> None:
    """With 8 pairs every one of the 2^8 swap patterns can be scored directly; the Monte-Carlo p-value must agree."""
    names, refs = corpus(7, 8)
    a, b = noisy(names, refs, 8, 0.3), noisy(names, refs, 9, 0.7)
    c = compare_systems([SystemPredictions("a", [a]), SystemPredictions("b", [b])], refs, protocol="none",
                        resamples=10, permutations=20000, seed=1)  # fmt: skip
    ref_l = [refs[n] for n in names]

    def diff(ha: list[str], hb: list[str]) -> tuple[float, float]:
        return bleu(hb, ref_l)[0][3] - bleu(ha, ref_l)[0][3], rouge_l(hb, ref_l)[0] - rouge_l(ha, ref_l)[0]

    ha, hb = [a[n] for n in names], [b[n] for n in names]
    observed = diff(ha, hb)
    extreme = [0, 0]
    patterns = list(itertools.product((False, True), repeat=len(names)))
    for swap in patterns:
        sa = [y if s else x for x, y, s in zip(ha, hb, swap)]
        sb = [x if s else y for x, y, s in zip(ha, hb, swap)]
        d = diff(sa, sb)
        for k in range(2):
            extreme[k] += abs(d[k]) >= abs(observed[k]) - 1e-12
    exact = [e / len(patterns) for e in extreme]
    assert c.pairs[0].metrics["Bleu_4"]["p_value"] == pytest.approx(exact[0], abs=0.015)
    assert c.pairs[0].metrics["ROUGE_L"]["p_value"] == pytest.approx(exact[1], abs=0.015)


def test_runs_mean_sd_and_wins_per_seed(data) -> None:
    names, refs = data
    a_runs = [noisy(names, refs, s, 0.3) for s in (10, 11, 12)]
    b_runs = [noisy(names, refs, s, 0.6) for s in (13, 14, 15)]
    single = noisy(names, refs, 16, 0.45)
    c = compare_systems(
        [SystemPredictions("a", a_runs), SystemPredictions("b", b_runs), SystemPredictions("one", [single])],
        refs, protocol="none", resamples=100, permutations=100,
    )  # fmt: skip
    a, b, one = c.systems
    per_run = {key: [evaluate_captions(r, refs, protocol="none", meteor="off", breakdown=False).scores["CIDEr"]
                     for r in runs] for key, runs in (("a", a_runs), ("b", b_runs))}  # fmt: skip
    assert a.runs == 3 and one.runs == 1
    assert a.run_scores["CIDEr"] == pytest.approx(per_run["a"], abs=1e-12)
    assert a.scores["CIDEr"] == pytest.approx(statistics.fmean(per_run["a"]), abs=1e-12)
    assert a.sd["CIDEr"] == pytest.approx(statistics.stdev(per_run["a"]), abs=1e-12)
    assert one.sd["CIDEr"] is None
    ab = c.pairs[0].metrics["CIDEr"]
    d = [y - x for x, y in zip(per_run["a"], per_run["b"], strict=True)]
    assert ab["seed_differences"] == pytest.approx(d, abs=1e-12)
    assert ab["wins"] == {"b": sum(x > 0 for x in d), "a": sum(x < 0 for x in d), "ties": 0, "seeds": 3}
    assert ab["difference"] == pytest.approx(statistics.fmean(d), abs=1e-12)
    # a single-run system against a multi-run one: tested (runs cycled), no wins per seed
    a_one = c.pairs[1].metrics["CIDEr"]
    assert (c.pairs[1].a, c.pairs[1].b) == ("a", "one") and "wins" not in a_one and 0 < a_one["p_value"] <= 1
    table = c.format_table()
    assert "wins b/a/tie" in table and "±" in table
    # every score cell stands apart from the next, however wide (an sd and an interval over 100)
    scores = table.split("(score, ± sd")[0]
    rows = [line for line in scores.splitlines() if line.startswith("CIDEr ")]
    assert rows and all("][" not in r and "]1" not in r and "]0" not in r for r in rows)
    assert all(r.count("]  ") >= len(c.systems) - 1 for r in rows)
    # the same runs on both sides: nothing to find
    same = compare_systems([SystemPredictions("a", a_runs), SystemPredictions("a2", list(a_runs))], refs,
                           protocol="none", resamples=50, permutations=50)  # fmt: skip
    v = same.pairs[0].metrics["Bleu_4"]
    assert v["p_value"] == 1.0 and v["ci95"] == [0.0, 0.0] and v["wins"]["ties"] == 3


def test_result_serialises_with_difference_ci_and_p_per_metric_and_pair(data) -> None:
    names, refs = data
    c = compare_systems([SystemPredictions("a", [noisy(names, refs, 1, 0.4)]),
                         SystemPredictions("b", [noisy(names, refs, 2, 0.5)]),
                         SystemPredictions("c", [noisy(names, refs, 3, 0.6)])],
                        refs, protocol="none", resamples=20, permutations=20)  # fmt: skip
    d = json.loads(json.dumps(c.to_dict()))
    assert [(p["a"], p["b"]) for p in d["comparisons"]] == [("a", "b"), ("a", "c"), ("b", "c")]
    for p in d["comparisons"]:
        for m in d["metrics"]:
            v = p["metrics"][m]
            assert isinstance(v["difference"], float) and len(v["ci95"]) == 2 and 0 < v["p_value"] <= 1
    assert d["n_pairs"] == 60 and d["resamples"] == 20 and len(d["systems"]) == 3


def test_seed_makes_results_reproducible(data) -> None:
    names, refs = data
    systems = [SystemPredictions("a", [noisy(names, refs, 1, 0.4)]),
               SystemPredictions("b", [noisy(names, refs, 2, 0.5)])]  # fmt: skip
    one = compare_systems(systems, refs, protocol="none", resamples=50, permutations=50, seed=3).to_dict()
    two = compare_systems(systems, refs, protocol="none", resamples=50, permutations=50, seed=3).to_dict()
    other = compare_systems(systems, refs, protocol="none", resamples=50, permutations=50, seed=4).to_dict()
    assert one == two and one["comparisons"] != other["comparisons"]


def test_a_subset_of_the_split_is_scored_with_a_note(data) -> None:
    names, refs = data
    part = names[:30]
    a, b = noisy(part, refs, 1, 0.4), noisy(part, refs, 2, 0.5)
    c = compare_systems([SystemPredictions("a", [a]), SystemPredictions("b", [b])], refs, protocol="none",
                        resamples=5, permutations=5)  # fmt: skip
    assert c.n == 30 and any("30 pairs the predictions cover, of 60" in n for n in c.notes)
    sub = {n: refs[n] for n in part}
    assert c.systems[0].scores["CIDEr"] == pytest.approx(
        evaluate_captions(a, sub, protocol="none", meteor="off", breakdown=False).scores["CIDEr"], abs=1e-12)


def test_embedding_similarity_is_a_labelled_extra_metric(data) -> None:
    names, refs = data

    def embed(texts):  # bag of words over WORDS + the no-change words
        vocab = {w: i for i, w in enumerate(sorted({w for t in texts for w in t.split()}))}
        out = np.zeros((len(texts), len(vocab)))
        for i, t in enumerate(texts):
            for w in t.split():
                out[i, vocab[w]] += 1
        return out

    a, b = noisy(names, refs, 1, 0.2), noisy(names, refs, 2, 0.9)
    c = compare_systems([SystemPredictions("a", [a]), SystemPredictions("b", [b])], refs, protocol="none",
                        embed=embed, embed_label="bag", resamples=100, permutations=100)  # fmt: skip
    assert c.metrics[-1] == "EmbedSim" and "bag" in c.labels["EmbedSim"]
    assert {"Bleu_4", "CIDEr", "ROUGE_L"} <= set(c.metrics)  # beside the standard metrics, never instead
    v = c.pairs[0].metrics["EmbedSim"]
    assert v["difference"] > 0 and v["ci95"][0] > 0


def _write(path: Path, content: object) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def test_errors_name_the_file_and_the_pair(tmp_path: Path, data) -> None:
    names, refs = data
    good = noisy(names, refs, 1, 0.5)
    a = load_system("a", [_write(tmp_path / "a.json", good)])
    short = load_system("b", [_write(tmp_path / "b.json", {k: v for k, v in good.items() if k != names[5]})])
    with pytest.raises(DataError, match=rf"b\.json \[{names[5]}\]: 1 pair\(s\) captioned by .*a\.json are missing"):
        check_systems([a, short], refs, "the test split")
    extra = load_system("c", [_write(tmp_path / "c.json", good | {"val_000001.png": "x"})])
    with pytest.raises(DataError, match=r"c\.json \[val_000001\.png\]: 1 pair\(s\) not in the test split"):
        check_systems([a, extra], refs, "the test split")
    more = load_system("d", [_write(tmp_path / "d.json", good)])
    fewer = load_system("e", [_write(tmp_path / "e.json", {k: v for k, v in good.items() if k != names[0]})])
    with pytest.raises(DataError, match=r"d\.json \[test_000000\.png\]: 1 pair\(s\) not captioned by .*e\.json"):
        check_systems([fewer, more], refs, "the test split")
    with pytest.raises(DataError, match=r"bad\.json: not valid JSON"):
        load_system("x", [_write(tmp_path / "bad.json", "{")])
    with pytest.raises(DataError, match=r"num\.json \[k\]: prediction must be a string, got int"):
        load_system("x", [_write(tmp_path / "num.json", {"k": 3})])
    with pytest.raises(DataError, match=r"missing\.json: file not found"):
        load_system("x", [tmp_path / "missing.json"])
    with pytest.raises(ChangeCapError, match="at least two systems"):
        check_systems([a], refs, "the test split")
    with pytest.raises(ChangeCapError, match="two systems are labelled 'a'"):
        check_systems([a, load_system("a", [tmp_path / "b.json"])], refs, "the test split")
    for err in (DataError, ChangeCapError):
        assert issubclass(err, ValueError)


def test_system_labels_are_file_names_made_unique() -> None:
    files = ["runs/hisem/eval_test/predictions_test.json", "runs/plain/eval_test/predictions_test.json"]
    assert [system_label(f, files) for f in files] == ["hisem/eval_test/predictions_test",
                                                       "plain/eval_test/predictions_test"]  # fmt: skip
    assert [system_label(f, ["x/a.json", "y/b.json"]) for f in ("x/a.json", "y/b.json")] == ["a", "b"]


@pytest.mark.java
def test_java_meteor_resampled_from_the_jars_statistics(meteor_scorer: MeteorScorer) -> None:
    names, refs = corpus(11, 12)
    a, b = noisy(names, refs, 1, 0.3), noisy(names, refs, 2, 0.7)
    c = compare_systems([SystemPredictions("a", [a]), SystemPredictions("b", [b])], refs, protocol="none",
                        meteor=meteor_scorer, resamples=20, permutations=20)  # fmt: skip
    assert c.labels["METEOR"].startswith("java")
    for system, preds in zip(c.systems, (a, b), strict=True):
        ref = evaluate_captions(preds, refs, protocol="none", meteor=meteor_scorer, breakdown=False)
        assert system.scores["METEOR"] == pytest.approx(ref.scores["METEOR"], abs=1e-9)
        assert system.scores["S_m"] == pytest.approx(ref.scores["S_m"], abs=1e-9)
