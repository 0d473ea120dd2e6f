from __future__ import annotations

import json
from pathlib import Path

import pytest

from changecap.cli.main import main
from changecap.data.text import tokenize
from changecap.data.vocab import Vocabulary
from tests.data.fakes import make_dubai, make_levir, make_tokens
from tests.data.malformed import CASES, Case


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_data_check_exits_2_with_one_line_error(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = case.build(tmp_path)
    argv = ["data", "check", "--root", str(root), "--format", case.format] + (["--deep"] if case.deep else [])
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for needle in case.expect:
        assert needle in lines[0]
    assert out == ""


def test_data_check_prints_statistics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_levir(tmp_path / "ds", "levir-mci", pairs={"train": 2, "val": 2, "test": 2}, size=8)
    assert main(["data", "check", "--root", str(root), "--format", "levir-mci", "--deep"]) == 0
    out = capsys.readouterr().out
    assert "pairs     6" in out and "full decode" in out
    assert "train" in out and "50.0%" in out


def test_data_check_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_dubai(tmp_path / "ds", pairs={"train": 2, "val": 1, "test": 1}, tile=8)
    assert main(["data", "check", "--root", str(root), "--format", "dubai-cc", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pairs"] == 4 and report["format"] == "dubai-cc"
    assert report["splits"]["train"]["changed"] == 1
    assert report["image_sizes"] == {"8x8": 4}


def test_data_check_layout_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_levir(tmp_path / "ds", pairs={"train": 1, "val": 1, "test": 1}, size=8)
    (root / "LevirCCcaptions.json").rename(tmp_path / "captions.json")
    (root / "images").rename(tmp_path / "imgs")
    argv = [
        "data",
        "check",
        "--root",
        str(root),
        "--format",
        "levir-cc",
        "--json",
        "--annotation",
        str(tmp_path / "captions.json"),
        "--image-root",
        str(tmp_path / "imgs"),
    ]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["pairs"] == 3


def test_data_without_subcommand_shows_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data"]) == 1
    assert "check" in capsys.readouterr().out


def test_cli_format_choices_match_library() -> None:
    from changecap.cli.cmd_data import FORMATS as CLI_FORMATS
    from changecap.data.annotations import FORMATS

    assert CLI_FORMATS == FORMATS


def test_vocab_command_writes_peers_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_tokens(tmp_path / "ds", pairs={"train": 2, "val": 1, "test": 1})
    out = tmp_path / "vocab.json"
    assert (
        main(
            [
                "vocab",
                "--root",
                str(root),
                "--format",
                "tokens",
                "--splits",
                "all",
                "--threshold",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "entries" in capsys.readouterr().out
    built = Vocabulary.load(out)
    shipped = Vocabulary.load(root / "vocab.json")  # the fake generator counts every split with threshold 0
    assert built == shipped
    # train only, count >= 2
    assert (
        main(
            [
                "vocab",
                "--root",
                str(root),
                "--format",
                "tokens",
                "--threshold",
                "2",
                "--rule",
                "ge",
                "--json",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"] == "train" and summary["entries"] == len(Vocabulary.load(out))
    from collections import Counter

    from changecap.data.text import NO_CHANGE_SENTENCES
    from tests.data.fakes import CHANGE_CAPTIONS

    counts = Counter(w for c in (*CHANGE_CAPTIONS, *NO_CHANGE_SENTENCES) for w in tokenize(c))
    assert Vocabulary.load(out).id_to_word[4:] == sorted(w for w, n in counts.items() if n >= 2)


def test_vocab_command_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vocab", "--root", str(tmp_path / "nope"), "--format", "levir-cc", "--out", "v.json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err and "not found" in err


def test_data_import_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.data.test_importer import caption_rows, make_pairs, write_csv

    pairs = make_pairs(tmp_path / "pairs", 6)
    sheet = write_csv(tmp_path / "caps.csv", ["name", "caption"], caption_rows(6))
    out = tmp_path / "out"
    argv = ["data", "import", "--pairs", str(pairs), "--captions", str(sheet), "--split-ratios", "0.5,0.25,0.25",
            "--seed", "7", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "imported 6 pairs" in text and f"changecap data check --root {out} --format levir-cc" in text
    assert main(["data", "check", "--root", str(out), "--format", "levir-cc", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pairs"] == 6
    assert main(argv) == 2  # the output exists now: refused, untouched
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "is not empty" in err and "\n" not in err


def test_data_import_lists_every_problem_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.data.test_importer import caption_rows, make_pairs, write_csv

    pairs = make_pairs(tmp_path / "pairs", 6)
    rows = caption_rows(6) + [["ghost", "a caption"], ["p01", ""]]
    sheet = write_csv(tmp_path / "caps.csv", ["name", "caption"], rows)
    base = ["data", "import", "--pairs", str(pairs), "--captions", str(sheet), "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == f"error: {sheet} [row 20, name]: caption for an unknown pair 'ghost' (no such pair in --pairs)"
    assert lines[1] == f"error: {sheet} [row 21, caption]: caption is empty"
    assert lines[2].startswith("error: 2 problem(s); nothing written") and len(lines) == 3
    assert not (tmp_path / "out").exists()
    assert main([*base, "--out", str(tmp_path / "out"), "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("skipped: ") == 2 and "imported 6 pairs" in captured.out
    assert main([*base, "--out", str(tmp_path / "other"), "--split-ratios", "0.8,0.8,0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --split-ratios: ratios must sum to 1, got 1.7"


def test_data_pack_writes_a_pack_and_reports_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_levir(tmp_path / "ds", "levir-mci", pairs={"train": 2, "val": 1, "test": 1}, size=12)
    argv = ["data", "pack", "--root", str(root), "--format", "levir-mci", "--out", str(tmp_path / "pack"),
            "--size", "8", "--splits", "train", "val", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("packed 3 pairs (train 2 (8×8 px), val 1 (8×8 px)) into ") and "GiB" in out
    assert json.loads((tmp_path / "pack" / "pack.json").read_text())["splits"].keys() == {"train", "val"}


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--size", "-3"], "'--size': must be a positive number of pixels"),
        (["--out", "{busy}"], "[--out]: holds files and is not a pack"),
        (["--root", "{missing}"], "missing"),
    ],
)
def test_data_pack_errors_are_one_line(
    extra: list[str], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_levir(tmp_path / "ds", "levir-cc", pairs={"train": 1, "val": 1, "test": 1}, size=8)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("x")
    extra = [e.format(busy=tmp_path / "busy", missing=tmp_path / "missing") for e in extra]
    argv = ["data", "pack", "--root", str(root), "--format", "levir-cc", "--out", str(tmp_path / "pack"), *extra]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
    assert not (tmp_path / "pack").exists()
