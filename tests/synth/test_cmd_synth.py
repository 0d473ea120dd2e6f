"""``changecap synth`` command line: the three forms and one-line errors with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from changecap.cli.main import main


def test_generate_stats_and_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "set"
    assert main(["synth", "--out", str(out), "--preset", "tiny", "--pairs", "5", "--size", "32", "--no-progress"]) == 0
    assert len(json.loads((out / "LevirCCcaptions.json").read_text())["images"]) == 5
    capsys.readouterr()
    assert main(["synth", "--stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["pairs"] == 5 and stats["size"] == 32 and stats["single_date"]["images"] == 10
    assert main(["synth", "--stats", str(out)]) == 0
    assert "single dates: 10 images" in capsys.readouterr().out
    fig = tmp_path / "fig.png"
    assert main(["synth", "--figure", str(fig), "--from", str(out), "--samples", "2", "--tile", "32"]) == 0
    assert fig.stat().st_size > 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--pairs", "-3"], "pairs"),
        (["--pairs", "0"], "pairs"),
        (["--size", "8"], "size"),
        (["--workers", "0"], "workers"),
        (["--seed", "-1"], "seed"),
        (["--preset", "huge"], "preset"),
    ],
)
def test_bad_generation_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    assert main(["synth", "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err
    assert not (tmp_path / "x").exists()


def test_figure_without_source_and_stats_of_missing_folder_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["synth", "--figure", str(tmp_path / "f.png")]) == 2
    assert "--from" in capsys.readouterr().err
    assert main(["synth", "--stats", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "LevirCCcaptions.json" in err and "\n" not in err


def test_exactly_one_mode_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["synth"])
    assert e.value.code == 2


def test_refused_output_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "LevirCCcaptions.json").write_text('{"images": []}')
    assert main(["synth", "--out", str(tmp_path), "--preset", "tiny", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "choose a new folder" in err
