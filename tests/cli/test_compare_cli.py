"""``changecap compare`` end to end on a tiny SynthCC set with hand-made prediction files: table, JSON, HTML,
--runs, labels, and one-line errors with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from changecap.cli.main import main
from changecap.data.annotations import parse_annotations


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "tiny"
    argv = ["synth", "--out", str(root), "--preset", "tiny", "--pairs", "24", "--size", "32", "--no-progress"]
    assert main(argv) == 0
    return root


@pytest.fixture(scope="module")
def preds(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Hand-made systems: ``good`` answers each pair with its first reference, ``bad`` always says no change,
    ``good2`` / ``bad2`` are second runs (another reference / the same)."""
    records = parse_annotations(synth, "levir-cc", "test", check_files=False)
    out = tmp_path_factory.mktemp("preds")
    systems = {
        "good": {r.name: r.captions[0] for r in records},
        "good2": {r.name: r.captions[1] for r in records},
        "bad": {r.name: "there is no difference" for r in records},
        "bad2": {r.name: "the scene is the same as before" for r in records},
    }
    files = {}
    for name, content in systems.items():
        files[name] = out / f"{name}.json"
        files[name].write_text(json.dumps(content))
    return files


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_two_prediction_files_table_json_and_html(synth: Path, preds: dict[str, Path], tmp_path: Path, capsys) -> None:
    js, page = tmp_path / "out" / "cmp.json", tmp_path / "out" / "cmp.html"
    argv = ["compare", "--data", str(synth), "--split", "test", str(preds["bad"]), str(preds["good"]),
            "--json", str(js), "--html", str(page), "--resamples", "200", "--permutations", "200"]  # fmt: skip
    rc, out, err = _run(argv, capsys)
    assert rc == 0 and err == ""
    assert "good - bad" in out and "95% CI" in out and "Bleu_4" in out and "CIDEr" in out
    d = json.loads(js.read_text())
    (pair,) = d["comparisons"]
    assert (pair["a"], pair["b"]) == ("bad", "good") and d["split"] == "test"
    for m in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"):
        v = pair["metrics"][m]
        assert v["difference"] > 0 and v["ci95"][0] <= v["difference"] <= v["ci95"][1] and 0 < v["p_value"] <= 1
    assert pair["metrics"]["Bleu_4"]["ci95"][0] > 0 and pair["metrics"]["Bleu_4"]["p_value"] < 0.05
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "good − bad" in html


def test_runs_labels_meteor_approx_and_embedding(synth: Path, preds: dict[str, Path], tmp_path: Path, capsys) -> None:
    js = tmp_path / "runs.json"
    argv = ["compare", "--data", str(synth), "--split", "test", f"single={preds['bad']}",
            "--runs", f"good={preds['good']},{preds['good2']}", f"bad={preds['bad']},{preds['bad2']}",
            "--json", str(js), "--resamples", "50", "--permutations", "50", "--meteor", "approx",
            "--embedding-model", "builtin:bag-of-words-8", "--embedding-cache", str(tmp_path / "emb")]  # fmt: skip
    rc, out, err = _run(argv, capsys)
    assert rc == 0, err
    d = json.loads(js.read_text())
    assert [s["label"] for s in d["systems"]] == ["single", "good", "bad"]
    assert [s["runs"] for s in d["systems"]] == [1, 2, 2]
    assert {"METEOR", "S_m", "EmbedSim"} <= set(d["metrics"]) and "approx" in d["metric_labels"]["METEOR"]
    good_bad = next(p for p in d["comparisons"] if (p["a"], p["b"]) == ("good", "bad"))
    assert good_bad["metrics"]["CIDEr"]["wins"] == {"b": 0, "a": 2, "ties": 0, "seeds": 2}
    assert "wins b/a/tie" in out and "±" in out
    # a prediction file after --runs is still a prediction file (single-run systems come first)
    rc, out, _ = _run(["compare", "--data", str(synth), "--runs", f"good={preds['good']},{preds['good2']}",
                       str(preds["bad"]), "--resamples", "10", "--permutations", "10"], capsys)  # fmt: skip
    assert rc == 0 and "good - bad" in out


def _error(argv: list[str], capsys) -> str:
    rc, out, err = _run(argv, capsys)
    assert rc == 2, (out, err)
    line = err.strip()
    assert line.startswith("error: ") and "\n" not in line, err
    return line


def test_bad_inputs_are_one_line_errors(synth: Path, preds: dict[str, Path], tmp_path: Path, capsys) -> None:
    good = json.loads(preds["good"].read_text())
    base = ["compare", "--data", str(synth), "--resamples", "5", "--permutations", "5"]
    first = sorted(good)[0]
    short = tmp_path / "short.json"
    short.write_text(json.dumps({k: v for k, v in good.items() if k != first}))
    err = _error([*base, str(preds["good"]), str(short)], capsys)
    assert f"short.json [{first}]" in err and "every system must caption the same pairs" in err
    stray = tmp_path / "stray.json"
    stray.write_text(json.dumps(good | {"train_000001.png": "a house"}))
    err = _error([*base, str(preds["good"]), str(stray)], capsys)
    assert "stray.json [train_000001.png]" in err and "not in the test split" in err
    broken = tmp_path / "broken.json"
    broken.write_text('{"a": ')
    assert "broken.json: not valid JSON" in _error([*base, str(preds["good"]), str(broken)], capsys)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({first: ["a", "b"]}))
    assert f"wrong.json [{first}]: prediction must be a string" in _error([*base, str(preds["good"]), str(wrong)],
                                                                          capsys)  # fmt: skip
    assert "missing.json: file not found" in _error([*base, str(preds["good"]), str(tmp_path / "missing.json")],
                                                    capsys)  # fmt: skip
    assert "at least two systems" in _error([*base, str(preds["good"])], capsys)
    assert "--runs" in _error([*base, str(preds["good"]), "--runs", "x="], capsys)
    assert f"{preds['bad']} [--json]: is one of the inputs" in _error(
        [*base, str(preds["good"]), str(preds["bad"]), "--json", str(preds["bad"])], capsys
    )
    assert "two systems are labelled 'x'" in _error([*base, f"x={preds['good']}", f"x={preds['bad']}"], capsys)
    no_root = _error(["compare", "--data", str(tmp_path / "nowhere"), str(preds["good"]), str(preds["bad"])], capsys)
    assert "nowhere" in no_root


def test_a_missing_split_names_the_data_and_the_field(tmp_path: Path, preds: dict[str, Path], capsys) -> None:
    from tests.data.fakes import make_levir

    root = make_levir(tmp_path / "d", "levir-cc", {"train": 2, "val": 0, "test": 2})
    err = _error(["compare", "--data", str(root), "--split", "val", str(preds["good"]), str(preds["bad"])], capsys)
    assert f"{root} [split]" in err and "no pairs in split 'val'" in err


def test_runs_of_one_system_must_caption_the_same_pairs(
    synth: Path, preds: dict[str, Path], tmp_path: Path, capsys
) -> None:
    good = json.loads(preds["good"].read_text())
    last = sorted(good)[-1]
    fewer = tmp_path / "seed1.json"
    fewer.write_text(json.dumps({k: v for k, v in good.items() if k != last}))
    err = _error(["compare", "--data", str(synth), str(preds["bad"]), "--runs", f"good={preds['good']},{fewer}",
                  "--resamples", "5", "--permutations", "5"], capsys)  # fmt: skip
    assert f"seed1.json [{last}]" in err and "every system must caption the same pairs" in err
