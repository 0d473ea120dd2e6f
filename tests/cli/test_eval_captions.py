"""``changecap eval-captions``: output formats and one-line errors with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from changecap.cli.main import main
from changecap.metrics import APPROX_LABEL, JAVA_LABEL
from tests.metrics.conftest import require_meteor_jar

PREDS = {"a": "a red house is built", "b": "the scene is the same as before", "c": "trees are removed"}
REFS = {
    "a": ["a new house is built", "a red house appears"],
    "b": ["there is no difference", "the scene is the same as before"],
    "c": ["some trees are removed", "the trees are cut down"],
}


def _write(tmp_path: Path, name: str, content: object) -> str:
    p = tmp_path / name
    p.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return str(p)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_table_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred, refs = _write(tmp_path, "pred.json", PREDS), _write(tmp_path, "refs.json", REFS)
    rc, out, err = _run(["eval-captions", "--pred", pred, "--refs", refs, "--meteor", "approx"], capsys)
    assert rc == 0 and err == ""
    assert "protocol rsicc" in out and "Bleu_4" in out and "unchanged" in out
    assert APPROX_LABEL in out and "vocabulary was built from the references" in out


def test_json_output_with_per_item_and_vocab(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from changecap.data.vocab import Vocabulary

    vocab = tmp_path / "vocab.json"
    Vocabulary.from_captions([c for rs in REFS.values() for c in rs], threshold=0).save(vocab)
    pred, refs = _write(tmp_path, "pred.json", PREDS), _write(tmp_path, "refs.json", REFS)
    argv = ["eval-captions", "--pred", pred, "--refs", refs, "--vocab", str(vocab), "--meteor", "off"]
    rc, out, _ = _run([*argv, "--per-item", "--json"], capsys)
    assert rc == 0
    d = json.loads(out)
    assert d["protocol"] == "rsicc" and d["scores"]["METEOR"] is None and d["scores"]["S_m"] is None
    assert set(d["per_item"]) == set(PREDS) and d["subsets"]["unchanged"]["n"] == 1
    assert not any("built from the references" in n for n in d["notes"])


def test_protocol_none_without_breakdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred, refs = _write(tmp_path, "pred.json", PREDS), _write(tmp_path, "refs.json", REFS)
    argv = ["eval-captions", "--pred", pred, "--refs", refs, "--protocol", "none", "--meteor", "off"]
    rc, out, _ = _run([*argv, "--no-breakdown", "--json"], capsys)
    assert rc == 0
    d = json.loads(out)
    assert d["protocol"] == "none" and "subsets" not in d


@pytest.mark.parametrize(
    ("pred", "refs", "extra", "needles"),
    [
        ("{oops", REFS, [], ["pred.json", "not valid JSON"]),
        (PREDS, '["a", "b"]', [], ["refs.json", "expected a JSON object"]),
        ({**PREDS, "zz": "x"}, REFS, [], ["pred.json [zz]", "not in", "refs.json"]),
        ({"a": "x"}, REFS, [], ["pred.json", "have no prediction", "'b'"]),
        ({**PREDS, "a": 7}, REFS, [], ["pred.json [a]", "must be a string"]),
        (PREDS, {**REFS, "c": []}, [], ["refs.json [c]", "empty"]),
        (PREDS, REFS, ["--vocab", "missing_vocab.json"], ["missing_vocab.json", "not found"]),
        (PREDS, REFS, ["--protocol", "coco", "--vocab", "v.json"], ["--vocab", "only used with --protocol rsicc"]),
    ],
)
def test_errors_are_one_line_with_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    pred: object,
    refs: object,
    extra: list[str],
    needles: list[str],
) -> None:
    p, r = _write(tmp_path, "pred.json", pred), _write(tmp_path, "refs.json", refs)
    rc, out, err = _run(["eval-captions", "--pred", p, "--refs", r, "--meteor", "off", *extra], capsys)
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]


def test_missing_pred_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = _write(tmp_path, "refs.json", REFS)
    rc, _, err = _run(["eval-captions", "--pred", str(tmp_path / "none.json"), "--refs", r], capsys)
    assert rc == 2 and err.strip() == f"error: {tmp_path / 'none.json'}: file not found"


@pytest.mark.java
def test_java_meteor_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_meteor_jar()
    pred, refs = _write(tmp_path, "pred.json", PREDS), _write(tmp_path, "refs.json", REFS)
    rc, out, _ = _run(["eval-captions", "--pred", pred, "--refs", refs, "--protocol", "coco", "--json"], capsys)
    assert rc == 0
    d = json.loads(out)
    assert d["METEOR_impl"] == JAVA_LABEL and 0 < d["scores"]["METEOR"] < 1 and d["tokenizer"] == "ptb-java"
    s = d["scores"]
    assert s["S_m"] == pytest.approx((s["Bleu_4"] + s["METEOR"] + s["ROUGE_L"] + s["CIDEr"]) / 4)


def test_embedding_model_adds_a_labelled_score(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred, refs = _write(tmp_path, "pred.json", PREDS), _write(tmp_path, "refs.json", REFS)
    argv = ["eval-captions", "--pred", pred, "--refs", refs, "--meteor", "off",
            "--embedding-model", "builtin:bag-of-words-8", "--embedding-cache", str(tmp_path / "emb")]  # fmt: skip
    rc, out, _ = _run([*argv, "--per-item"], capsys)
    assert rc == 0 and "EmbedSim+" in out and "encoder: builtin:bag-of-words-8" in out and "Bleu_4" in out
    assert "CIDEr EmbedSim" in out  # the per-item header
    rc, out, _ = _run([*argv, "--json"], capsys)
    d = json.loads(out)
    assert rc == 0 and d["embedding_similarity"]["model"] == "builtin:bag-of-words-8"
    assert "EmbedSim" not in d["scores"]
    rc, _, err = _run([*argv[:-4], "--embedding-model", "builtin:bag-of-words-x", *argv[-2:]], capsys)
    assert rc == 2 and err.startswith("error: --embedding-model 'builtin:bag-of-words-x'") and err.count("\n") == 1
