"""evaluate_model (predictions JSON + metrics report under both protocols), the HTML report, and the
``caption`` / ``evaluate`` command lines with their one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from changecap.cli.main import main
from changecap.inference import ChangeCaptioner, evaluate_model, write_html_report
from changecap.metrics import evaluate_captions


@pytest.fixture(scope="module")
def evaluation(model_dir: Path, data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("eval")
    return evaluate_model(
        model_dir, data_root, "levir-mci", "test", out_dir=out, meteor="off", batch_size=3, progress=False
    )


def test_predictions_are_the_captioners_on_every_pair(evaluation, model_dir: Path, data_root: Path) -> None:
    names = [f"test_{i + 1:06d}.png" for i in range(4)]
    assert sorted(evaluation.predictions) == names
    captioner = ChangeCaptioner.from_pretrained(model_dir, device="cpu")
    for name in names:
        res = captioner(data_root / "images/test/A" / name, data_root / "images/test/B" / name)
        assert evaluation.predictions[name] == res.caption
        assert evaluation.change_probability[name] == pytest.approx(res.change_probability, abs=1e-6)
    # references are the raw test captions (not canonicalised: val/test keep the five paraphrases)
    assert all(len(r) == 5 for r in evaluation.references.values())


def test_scores_equal_evaluate_captions_on_the_same_predictions(evaluation) -> None:
    assert set(evaluation.results) == {"rsicc", "coco"}
    vocab = ChangeCaptioner.from_pretrained(evaluation.model_dir, device="cpu").vocab
    for proto, res in evaluation.results.items():
        again = evaluate_captions(
            evaluation.predictions, evaluation.references, protocol=proto, vocab=vocab, meteor="off"
        )
        assert res.scores == again.scores, proto
    assert evaluation.result is evaluation.results["rsicc"]


def test_files_written(evaluation) -> None:
    preds = json.loads(Path(evaluation.files["predictions"]).read_text())
    assert preds == evaluation.predictions
    metrics = json.loads(Path(evaluation.files["metrics"]).read_text())
    assert set(metrics) == {"rsicc", "coco", "model"}
    assert metrics["rsicc"]["scores"]["Bleu_4"] == pytest.approx(evaluation.result.scores["Bleu_4"])
    report = Path(evaluation.files["report"]).read_text()
    assert "== protocol: rsicc ==" in report and "== protocol: coco ==" in report and "nochange_acc" in report


def test_html_report_shows_pairs_predictions_and_metrics(evaluation, data_root: Path, tmp_path: Path) -> None:
    path = write_html_report(
        tmp_path / "r" / "report.html",
        evaluation=evaluation,
        baselines={"most frequent": evaluation.results["coco"]},
        data_root=data_root,
        fmt="levir-mci",
        split="test",
        num_examples=4,
        baseline_predictions={"echo": {n: "a caption" for n in evaluation.predictions}},
    )
    doc = path.read_text()
    assert doc.startswith("<!doctype html>")
    assert doc.count('<div class="card">') == 4
    assert doc.count("data:image/png;base64,") == 4 * 3  # before, after, change mask
    assert "changed" in doc and "unchanged" in doc  # both kinds of example are shown
    assert "baseline: most frequent" in doc and "<b>echo:</b> a caption" in doc
    for pred in evaluation.predictions.values():
        assert pred.replace("&", "&amp;") in doc
    assert f"{100 * evaluation.result.scores['Bleu_4']:.2f}" in doc
    # the changed-pairs table carries the changed subset's own scores
    changed = evaluation.result.subsets["changed"]
    tail = doc.split("<h3>Changed pairs only</h3>", 1)[1]
    assert f"<td>{100 * changed.scores['Bleu_4']:.2f}</td>" in tail.split("</table>", 1)[0]
    assert f"<td>{changed.n}</td>" in tail


def test_caption_cli(model_dir: Path, data_root: Path, capsys) -> None:
    a = data_root / "images/test/A/test_000001.png"
    b = data_root / "images/test/B/test_000001.png"
    expected = ChangeCaptioner.from_pretrained(model_dir, device="cpu")(a, b)
    assert main(["caption", str(a), str(b), "--model", str(model_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == expected.caption and out[1] == f"P(change) = {expected.change_probability:.3f}"
    assert main(["caption", str(a), str(b), "--model", str(model_dir), "--device", "cpu", "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["caption"] == expected.caption and js["tokens"] == expected.tokens


def test_evaluate_cli(model_dir: Path, data_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ev"
    argv = [
        "evaluate",
        "--model",
        str(model_dir),
        "--data",
        str(data_root),
        "--format",
        "levir-mci",
        "--split",
        "val",
        "--out",
        str(out),
        "--meteor",
        "off",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "== protocol: rsicc (val split, 4 pairs) ==" in text and "== protocol: coco" in text
    assert (out / "predictions_val.json").is_file() and (out / "metrics_val.json").is_file()
    assert main([*argv, "--protocol", "rsicc", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"rsicc"}


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_cli_errors_are_one_line_with_exit_status_2(model_dir: Path, data_root: Path, tmp_path: Path, capsys) -> None:
    a = data_root / "images/test/A/test_000001.png"
    b = data_root / "images/test/B/test_000001.png"
    from PIL import Image

    small = tmp_path / "small.png"
    Image.new("RGB", (20, 20)).save(small)
    grey = tmp_path / "grey.png"
    Image.new("L", (40, 40)).save(grey)
    four = tmp_path / "four.png"
    Image.new("RGBA", (40, 40)).save(four)
    no_weights = shutil.copytree(model_dir, tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    bad_vocab = shutil.copytree(model_dir, tmp_path / "bad_vocab")
    words = json.loads((bad_vocab / "vocab.json").read_text())
    words.pop(max(words, key=words.get))
    (bad_vocab / "vocab.json").write_text(json.dumps(words))
    m = str(model_dir)
    cases = [
        (["caption", str(a), str(small), "--model", m], "same size"),
        (["caption", str(grey), str(b), "--model", m], "grey.png"),
        (["caption", str(a), str(four), "--model", m], "four.png"),
        (["caption", str(a), str(tmp_path / "gone.png"), "--model", m], "gone.png"),
        (["caption", str(a), str(b), "--model", str(tmp_path / "nomodel")], "nomodel"),
        (["caption", str(a), str(b), "--model", str(no_weights)], "model.safetensors"),
        (["caption", str(a), str(b), "--model", str(bad_vocab)], "vocab.json"),
        (["caption", str(a), str(b), "--model", m, "--beam-size", "0"], "--beam-size"),
        (["evaluate", "--model", str(bad_vocab), "--data", str(data_root), "--format", "levir-mci"], "vocab.json"),
        (["evaluate", "--model", m, "--data", str(tmp_path / "nodata"), "--format", "levir-mci"], "nodata"),
        (["evaluate", "--model", m, "--data", str(data_root), "--batch-size", "0"], "--batch-size"),
    ]
    for argv, words in cases:
        assert main([*argv, "--device", "cpu"]) == 2, argv
        assert words in _err(capsys), (argv, words)
