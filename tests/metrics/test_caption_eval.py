"""evaluate_captions: protocols, breakdown, S_m, METEOR reporting, validation, result object; load_caption_json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from changecap.data.vocab import Vocabulary
from changecap.errors import DataError
from changecap.metrics import (
    APPROX_LABEL,
    JAVA_LABEL,
    METEOR_JAR_ENV,
    METRIC_KEYS,
    SCORE_KEYS,
    SUBSET_CIDER_CAVEAT,
    MeteorScorer,
    bleu,
    cider_d,
    evaluate_captions,
    load_caption_json,
    meteor_approx,
    meteor_session,
    rouge_l,
)
from changecap.metrics.caption_eval import BUILT_VOCAB_NOTE
from tests.metrics.conftest import require_meteor_jar

NOCHANGE = [
    "there is no difference",
    "the two scenes seem identical",
    "the scene is the same as before",
    "no change has occurred",
    "almost nothing has changed",
]
REFS = {
    "p1": ["a new road is built on the left", "a road appears on the left side", "a road is constructed"],
    "p2": list(NOCHANGE),
    "p3": ["two houses are built at the top", "some houses appear", "houses are constructed at the top"],
    "p4": list(NOCHANGE),
    "p5": ["many trees are removed", "the trees have disappeared", "some trees are cut down"],
}
PREDS = {
    "p1": "a road is built on the left",
    "p2": "the scene is the same as before",
    "p3": "there is no difference",  # a changed pair described as unchanged
    "p4": "a house is built",  # an unchanged pair described as changed
    "p5": "some trees are removed",
}


def _direct(preds: dict[str, str], refs: dict[str, list[str]], ids: list[str]) -> dict[str, float]:
    h = [preds[i] for i in ids]
    r = [refs[i] for i in ids]
    b, _ = bleu(h, r)
    m, _ = meteor_approx(h, r)
    out = {f"Bleu_{k + 1}": b[k] for k in range(4)}
    out.update({"METEOR": m, "ROUGE_L": rouge_l(h, r)[0], "CIDEr": cider_d(h, r)[0]})
    return out


def test_protocol_none_equals_the_scorers_and_s_m_is_their_mean() -> None:
    res = evaluate_captions(PREDS, REFS, protocol="none", meteor="approx", breakdown=False)
    expected = _direct(PREDS, REFS, list(REFS))
    for k in METRIC_KEYS:
        assert res.scores[k] == pytest.approx(expected[k], abs=1e-12), k
    s = res.scores
    assert s["S_m"] == pytest.approx((s["Bleu_4"] + s["METEOR"] + s["ROUGE_L"] + s["CIDEr"]) / 4)
    assert res.meteor_impl == APPROX_LABEL and res.to_dict()["METEOR_impl"] == APPROX_LABEL
    assert set(res.scores) == set(SCORE_KEYS)


def test_rsicc_ids_are_invariant_for_in_vocabulary_words() -> None:
    vocab = Vocabulary.from_captions([c for rs in REFS.values() for c in rs] + list(PREDS.values()), threshold=0)
    ids = evaluate_captions(PREDS, REFS, protocol="rsicc", vocab=vocab, meteor="off", breakdown=False)
    words = evaluate_captions(PREDS, REFS, protocol="none", meteor="off", breakdown=False)
    for k in ("Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"):  # bijection word ↔ id: same scores
        assert ids.scores[k] == pytest.approx(words.scores[k], abs=1e-12), k
    assert BUILT_VOCAB_NOTE not in ids.notes


def test_rsicc_without_vocab_builds_one_and_says_so() -> None:
    res = evaluate_captions(PREDS, REFS, meteor="off", breakdown=False)
    assert res.protocol == "rsicc" and BUILT_VOCAB_NOTE in res.notes
    # the hypothesis word "constructed" exists in the refs; an unknown one maps to <UNK> and cannot match words
    unk = evaluate_captions({**PREDS, "p1": "zebra zebra"}, REFS, meteor="off", breakdown=False, per_item=True)
    assert unk.per_item is not None and unk.per_item["p1"]["ROUGE_L"] == 0.0


def test_coco_protocol_tokenises_before_scoring() -> None:
    messy = {k: v.upper().replace(" is ", " is, ") + "." for k, v in PREDS.items()}
    res = evaluate_captions(messy, REFS, protocol="coco", meteor="off", breakdown=False, ptb="python")
    plain = evaluate_captions(PREDS, REFS, protocol="none", meteor="off", breakdown=False)
    assert res.tokenizer == "ptb-python"
    for k in ("Bleu_4", "ROUGE_L", "CIDEr"):
        assert res.scores[k] == pytest.approx(plain.scores[k], abs=1e-12)


def test_breakdown_subsets_and_accuracies() -> None:
    res = evaluate_captions(PREDS, REFS, protocol="none", meteor="approx")
    changed, unchanged = res.subsets["changed"], res.subsets["unchanged"]
    assert (changed.n, unchanged.n) == (3, 2)
    assert res.nochange_acc == pytest.approx(1 / 2)  # p2 right, p4 wrong
    assert res.change_acc == pytest.approx(2 / 3)  # p1, p5 right, p3 wrong
    # each subset is scored as its own corpus
    expected = _direct(PREDS, REFS, ["p1", "p3", "p5"])
    for k in METRIC_KEYS:
        assert changed.scores[k] == pytest.approx(expected[k], abs=1e-12), k
    assert SUBSET_CIDER_CAVEAT in res.caveats
    # the unchanged pairs share their references: df = N, idf = 0, CIDEr 0 whatever the captions (the caveat)
    assert unchanged.scores["CIDEr"] == 0.0


def test_per_item_scores_match_scorers() -> None:
    res = evaluate_captions(PREDS, REFS, protocol="none", meteor="approx", per_item=True, breakdown=False)
    ids = list(REFS)
    _, b_items = bleu([PREDS[i] for i in ids], [REFS[i] for i in ids])
    assert res.per_item is not None and list(res.per_item) == ids
    assert [res.per_item[i]["Bleu_2"] for i in ids] == b_items[1]
    assert set(res.per_item["p1"]) == set(METRIC_KEYS)


def test_meteor_unavailable_is_reported_not_replaced(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(METEOR_JAR_ENV, str(tmp_path / "nowhere" / "meteor-1.5.jar"))
    res = evaluate_captions(PREDS, REFS, protocol="none", meteor="java")
    assert res.scores["METEOR"] is None and res.scores["S_m"] is None and res.meteor_impl is None
    assert res.unavailable["METEOR"] in ("no java on PATH",) or res.unavailable["METEOR"].startswith("jar not found")
    assert "needs METEOR" in res.unavailable["S_m"]
    assert res.subsets["changed"].scores["METEOR"] is None
    table = res.format_table()
    assert "METEOR unavailable:" in table and "n/a" in table
    assert res.scores["Bleu_4"] is not None


def test_meteor_off() -> None:
    res = evaluate_captions(PREDS, REFS, protocol="none", meteor="off", breakdown=False)
    assert res.scores["METEOR"] is None and "disabled" in res.unavailable["METEOR"]


@pytest.mark.java
def test_java_meteor_with_a_shared_scorer(meteor_scorer: MeteorScorer) -> None:
    res = evaluate_captions(PREDS, REFS, protocol="none", meteor=meteor_scorer, per_item=True)
    ids = list(REFS)
    corpus, items = meteor_scorer.score([PREDS[i] for i in ids], [REFS[i] for i in ids])
    assert res.meteor_impl == JAVA_LABEL
    assert res.scores["METEOR"] == pytest.approx(corpus, abs=1e-12)
    assert res.per_item is not None and [res.per_item[i]["METEOR"] for i in ids] == items
    sub = ["p1", "p3", "p5"]
    sub_corpus, _ = meteor_scorer.score([PREDS[i] for i in sub], [REFS[i] for i in sub])
    assert res.subsets["changed"].scores["METEOR"] == pytest.approx(sub_corpus, abs=1e-12)
    assert meteor_scorer.alive  # a scorer passed in is not closed


def test_result_serialises_and_formats() -> None:
    res = evaluate_captions(PREDS, REFS, protocol="none", meteor="approx", per_item=True)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["subsets"]["unchanged"]["n"] == 2 and d["nochange_acc"] == 0.5
    assert d["per_item"]["p3"]["Bleu_1"] == res.per_item["p3"]["Bleu_1"]  # type: ignore[index]
    table = res.format_table()
    assert f"{100 * res.scores['Bleu_4']:.2f}" in table  # ×100 like papers
    assert "changed" in table and "unchanged" in table and "nochange_acc" in table
    assert any(line.startswith("* subset CIDEr") for line in table.splitlines())


@pytest.mark.parametrize(
    ("preds", "refs", "needle"),
    [
        ({**PREDS, "zz": "x"}, REFS, "1 prediction id(s) not in"),
        ({k: v for k, v in PREDS.items() if k != "p2"}, REFS, "have no prediction (first: 'p2')"),
        ({**PREDS, "p1": 3}, REFS, "[p1]: prediction must be a string, got int"),
        (PREDS, {**REFS, "p1": []}, "[p1]: reference list is empty"),
        (PREDS, {**REFS, "p1": ["ok", None]}, "[p1[1]]: reference must be a string, got null"),
        (PREDS, {**REFS, "p1": "a road"}, "[p1]: references must be a list of strings, got str"),
        ({}, REFS, "no predictions"),
        ({**PREDS, "p5": "a \ud800"}, REFS, "[p5]: caption is not valid Unicode"),
    ],
)
def test_validation_errors_are_one_line_and_name_file_and_id(preds: dict, refs: dict, needle: str) -> None:
    with pytest.raises(DataError) as err:
        evaluate_captions(preds, refs, protocol="none", meteor="off", pred_path="pred.json", refs_path="refs.json")
    msg = str(err.value)
    assert needle in msg and "\n" not in msg
    assert msg.startswith(("pred.json", "refs.json"))


def test_load_caption_json(tmp_path: Path) -> None:
    p = tmp_path / "pred.json"
    p.write_text(json.dumps({"a": "x y", "b": ["z"]}))  # one-element list = pycocoevalcap result layout
    assert load_caption_json(p, "pred") == {"a": "x y", "b": "z"}
    r = tmp_path / "refs.json"
    r.write_text(json.dumps({"a": ["x"], "b": ["y", "z"]}))
    assert load_caption_json(r, "refs") == {"a": ["x"], "b": ["y", "z"]}


@pytest.mark.parametrize(
    ("content", "kind", "needle"),
    [
        ("{not json", "pred", "not valid JSON (Expecting property name enclosed in double quotes at line 1 column 2)"),
        ("[1, 2]", "pred", "expected a JSON object {id: caption}, got list"),
        ("{}", "refs", "no captions"),
        ('{"a": ["x", "y"]}', "pred", "[a]: prediction must be a string, got list"),
        ('{"a": "x"}', "refs", "[a]: references must be a list of strings, got str"),
        ('{"a": [1]}', "refs", "[a[0]]: reference must be a string, got int"),
    ],
)
def test_load_caption_json_errors(tmp_path: Path, content: str, kind: str, needle: str) -> None:
    f = tmp_path / "caps.json"
    f.write_text(content)
    with pytest.raises(DataError) as err:
        load_caption_json(f, kind)  # type: ignore[arg-type]
    assert str(err.value).startswith(str(f)) and needle in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="file not found"):
        load_caption_json(tmp_path / "absent.json", kind)  # type: ignore[arg-type]


@pytest.mark.shared
def test_real_levir_captions_match_pycocoevalcap(pycocoevalcap_available: None) -> None:
    """On real LEVIR-CC test references (leave-one-out hypotheses) our scores equal pycocoevalcap's."""
    from changecap.data.text import changed_from_captions
    from tests.conftest import require_shared
    from tests.metrics.conftest import coco_bleu, coco_cider, coco_rouge

    root = require_shared("levir-cc-tokens")
    names = (root / "test.txt").read_text().split()[:400]
    preds: dict[str, str] = {}
    refs: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        caps = json.loads((root / "tokens" / (Path(name).stem + ".txt")).read_text())
        caps = [" ".join(t for t in c if t not in ("<START>", "<END>")) for c in caps]
        preds[name], refs[name] = caps[i % 5], caps[: i % 5] + caps[i % 5 + 1 :]
    res = evaluate_captions(preds, refs, protocol="none", meteor="off", per_item=True)
    h, r = [preds[n] for n in names], [refs[n] for n in names]
    b, b_items = coco_bleu(h, r)
    assert [res.scores[f"Bleu_{k + 1}"] for k in range(4)] == pytest.approx(b, abs=1e-9, rel=0)
    assert res.per_item is not None
    assert [res.per_item[n]["Bleu_4"] for n in names] == pytest.approx(b_items[3], abs=1e-9, rel=0)
    for key, ref_fn in (("ROUGE_L", coco_rouge), ("CIDEr", coco_cider)):
        corpus, items = ref_fn(h, r)
        assert res.scores[key] == pytest.approx(corpus, abs=1e-9, rel=0), key
        assert [res.per_item[n][key] for n in names] == pytest.approx(items, abs=1e-9, rel=0), key
    # every unchanged LEVIR-CC pair carries only no-change sentences: the subset is the text-derived change flag
    flags = [changed_from_captions([*refs[n], preds[n]]) for n in names]
    assert res.subsets["unchanged"].n == flags.count(False) > 0
    assert res.nochange_acc == 1.0 and res.change_acc == 1.0  # leave-one-out keeps the pair's own kind


@pytest.mark.java
def test_meteor_session_starts_one_jvm_for_several_evaluations() -> None:
    require_meteor_jar()
    preds = {"a": "a road is built", "b": "there is no difference"}
    refs = {"a": ["a new road is built", "the road was built"], "b": ["there is no difference", "no change"]}
    with meteor_session("java") as scorer:
        assert isinstance(scorer, MeteorScorer) and scorer.alive  # running before any caption is scored
        first = evaluate_captions(preds, refs, protocol="none", meteor=scorer)
        second = evaluate_captions(preds, refs, protocol="none", meteor=scorer)
        assert scorer.alive
    assert not scorer.alive  # stopped on exit
    alone = evaluate_captions(preds, refs, protocol="none", meteor="java")
    assert first.scores == second.scores == alone.scores and first.meteor_impl == alone.meteor_impl


def test_meteor_session_passes_other_modes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    with meteor_session("approx") as m:
        assert m == "approx"
    with meteor_session("off") as m:
        assert m == "off"
    monkeypatch.setenv(METEOR_JAR_ENV, "/nonexistent/meteor.jar")
    with meteor_session("java") as m:  # unavailable: evaluate_captions reports why, as without a session
        assert m == "java"
        result = evaluate_captions({"a": "x y"}, {"a": ["x y"]}, protocol="none", meteor=m)
    assert "jar not found" in result.unavailable["METEOR"]
