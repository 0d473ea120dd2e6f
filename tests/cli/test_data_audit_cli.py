"""``changecap data audit``: the JSON contract, the terminal summary, and one-line errors with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from changecap.cli.main import main
from changecap.data.audit import CHECKS
from tests.data.fakes import make_levir, make_tokens


def _flip_first_flag(root: Path) -> None:
    doc = json.loads((root / "LevirCCcaptions.json").read_text())
    doc["images"][0]["changeflag"] = 0
    (root / "LevirCCcaptions.json").write_text(json.dumps(doc))


def test_json_and_html_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_levir(tmp_path / "ds", "levir-mci", pairs={"train": 2, "val": 1, "test": 1}, size=16)
    _flip_first_flag(root)
    out_json, out_html = tmp_path / "audit.json", tmp_path / "audit.html"
    argv = ["data", "audit", "--root", str(root), "--format", "levir-mci", "--json", str(out_json)]
    assert main([*argv, "--html", str(out_html), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "mask_in_unchanged_pair" in text and "train/train_000001.png" in text
    data = json.loads(out_json.read_text())
    assert isinstance(data["findings"], list) and data["findings"]
    for f in data["findings"]:
        assert {"check", "name", "split", "detail", "severity"} <= set(f)
        assert isinstance(f["name"], str) and f["split"] in ("train", "val", "test")
    assert {"check": "mask_in_unchanged_pair", "name": "train_000001.png", "split": "train"}.items() <= next(
        f for f in data["findings"] if f["check"] == "mask_in_unchanged_pair"
    ).items()
    assert set(data["counts"]) == {c.name for c in CHECKS}
    assert data["counts"]["mask_in_unchanged_pair"] == 1 and data["pairs_total"] == 4
    assert out_html.read_text().startswith("<!doctype html>")
    assert main([*argv, "--strict", "--no-progress"]) == 1  # an error-level finding


def test_caption_only_json_lists_skipped_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_tokens(tmp_path / "tok", pairs={"train": 2, "val": 1, "test": 1})
    out = tmp_path / "a.json"
    assert main(["data", "audit", "--root", str(root), "--format", "tokens", "--json", str(out)]) == 0
    assert "skipped identical_changed_pair: no images" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["skipped"]["duplicate_across_splits"].startswith("no images")
    assert data["checks"]["duplicate_across_splits"]["status"] == "skipped"
    assert "duplicate_across_splits" not in data["counts"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--format", "levir-xx"], "unknown dataset format 'levir-xx'"),
        (["--format", "levir-cc", "--hash-bits", "65"], "hash-bits"),
        (["--format", "levir-cc", "--min-changed-pixels", "0"], "min-changed-pixels"),
        (["--format", "levir-cc", "--workers", "0"], "workers"),
        (["--format", "levir-cc", "--json", "{file}/a.json"], "is a file, not a folder"),
        (["--format", "levir-cc", "--html", "."], "is a folder; a file name is required"),
    ],
)
def test_bad_inputs_are_one_line_errors(
    extra: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_levir(tmp_path / "ds", pairs={"train": 1, "val": 1, "test": 1}, size=8)
    (tmp_path / "plain.txt").write_text("x")
    extra = [e.format(file=tmp_path / "plain.txt") for e in extra]
    assert main(["data", "audit", "--root", str(root), *extra]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err, err
    assert out == ""


def test_missing_root_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "audit", "--root", str(tmp_path / "nope"), "--format", "levir-cc"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope: dataset root not found" in err
