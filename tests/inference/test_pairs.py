"""``changecap caption --pairs``: a folder of pairs or a CSV, one record per pair, problems listed and not fatal,
masks written for models with a CD head, JSON lines / CSV output written atomically."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import changecap
from changecap.cli.main import main
from changecap.data.files import is_temp_name
from changecap.errors import DataError
from changecap.inference import ChangeCaptioner
from changecap.inference.pairs import find_pairs
from tests.conftest import REPO_ROOT
from tests.data.fakes import bomb_png


def _png(path: Path, seed: int, size: tuple[int, int] = (40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Four good pairs, one before without after, one after without before, one corrupt, one size mismatch."""
    root = tmp_path / "pairs"
    for i in range(4):
        _png(root / "A" / f"p{i}.png", i)
        _png(root / "B" / f"p{i}.png", 10 + i)
    _png(root / "A" / "lonely_before.png", 20)
    _png(root / "B" / "lonely_after.png", 21)
    _png(root / "A" / "corrupt.png", 22)
    (root / "B" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    _png(root / "A" / "sizes.png", 23, (40, 40))
    _png(root / "B" / "sizes.png", 24, (48, 40))
    (root / "A" / "notes.txt").write_text("not an image")
    return root


def test_find_pairs_matches_names_and_lists_the_unmatched(folder: Path) -> None:
    pairs, problems = find_pairs(folder)
    assert [p.name for p in pairs] == ["corrupt.png", "p0.png", "p1.png", "p2.png", "p3.png", "sizes.png"]
    assert {(p.name, p.error) for p in problems} == {
        ("lonely_before.png", "no after image with this name in B/"),
        ("lonely_after.png", "no before image with this name in A/"),
    }


def test_folder_mode_writes_one_record_per_pair_and_problems_last(
    folder: Path, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "captions.jsonl"
    code = main(["caption", "--pairs", str(folder), "--model", str(model_dir), "--device", "cpu", "--out", str(out),
                 "--batch-size", "3", "--no-progress"])  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    good = [r for r in records if r["error"] is None]
    bad = [r for r in records if r["error"] is not None]
    assert records == good + bad  # problems after the captions
    assert [r["name"] for r in good] == ["p0.png", "p1.png", "p2.png", "p3.png"]
    assert {r["name"] for r in bad} == {"corrupt.png", "sizes.png", "lonely_before.png", "lonely_after.png"}
    corrupt = next(r for r in bad if r["name"] == "corrupt.png")
    assert "corrupt.png" in corrupt["error"] and "\n" not in corrupt["error"]
    assert "same size" in next(r for r in bad if r["name"] == "sizes.png")["error"]
    # the same captions and probabilities as captioning the pairs one by one
    captioner = ChangeCaptioner.from_pretrained(model_dir, device="cpu")
    for r in good:
        one = captioner(r["before"], r["after"])
        assert r["caption"] == one.caption and r["change_probability"] == pytest.approx(one.change_probability)
    err = capsys.readouterr().err
    assert "4 pair(s) captioned" in err and "4 problem(s)" in err and "lonely_after.png" in err
    assert not list(out.parent.glob("*.part"))  # the temporary file was renamed


def test_csv_in_csv_out_with_masks(tmp_path: Path, scc_dir: Path) -> None:
    a = _png(tmp_path / "img" / "a.png", 1, (50, 60))
    _png(tmp_path / "img" / "b.png", 2, (50, 60))
    listing = tmp_path / "list.csv"
    listing.write_text(f"before,after\nimg/a.png,img/b.png\n{a},{tmp_path / 'missing.png'}\nonly-one-column\n")
    out, masks = tmp_path / "captions.csv", tmp_path / "masks"
    code = main(["caption", "--pairs", str(listing), "--model", str(scc_dir), "--device", "cpu", "--out", str(out),
                 "--mask-dir", str(masks), "--no-progress"])  # fmt: skip
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["error"] == "" for r in rows] == [True, False, False]  # the captioned pair first
    assert rows[0]["name"] == "a.png" and rows[0]["caption"] and rows[0]["mask"] == str(masks / "a.png")
    mask = np.asarray(Image.open(masks / "a.png"))
    assert mask.shape == (50, 60) and set(np.unique(mask)) <= {0, 255}  # at the input size
    errors = {r["name"]: r["error"] for r in rows[1:]}
    assert errors["row4"] == "row 4: expected 2 columns (before,after)"
    assert errors["row3:a.png"] == f"{tmp_path / 'missing.png'}: no such file"  # a.png is already a pair's name


def test_stdout_when_no_out_file(folder: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["caption", "--pairs", str(folder), "--model", str(model_dir), "--device", "cpu", "--no-progress"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 8 and sum(r["error"] is None for r in lines) == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pairs", "{tmp}/nowhere"], "no such file or folder"),
        (["--pairs", "{tmp}"], "needs the sub-folders A/ (before) and B/ (after)"),
        (["--pairs", "{folder}", "--out", "{tmp}/x.txt"], "must end in .jsonl or .csv"),
        (["--pairs", "{folder}", "--mask-dir", "{tmp}/m"], "predicts no change mask"),
        (["{folder}/A/p0.png", "{folder}/B/p0.png", "--out", "{tmp}/x.jsonl"], "--out goes with --pairs"),
        ([], "give BEFORE and AFTER images, or --pairs"),
    ],
)
def test_bad_use_is_one_line_exit_2(
    argv: list[str], message: str, folder: Path, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.format(tmp=tmp_path, folder=folder) for a in argv]
    assert main(["caption", *argv, "--model", str(model_dir), "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_an_empty_folder_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    with pytest.raises(DataError, match="no images"):
        find_pairs(tmp_path)


# ------------------------------------------------------------------------------------------------- hardening
def _argv(folder: Path, model_dir: Path, *extra: str) -> list[str]:
    return ["caption", "--pairs", str(folder), "--model", str(model_dir), "--device", "cpu", "--no-progress", *extra]


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if is_temp_name(p.name) or p.name.endswith(".part"))


def test_a_decompression_bomb_is_that_pair_s_problem(
    folder: Path, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bomb_png(folder / "B" / "p1.png")
    out = tmp_path / "out" / "captions.jsonl"
    assert main(_argv(folder, model_dir, "--out", str(out), "--batch-size", "2")) == 0
    records = {r["name"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert [n for n, r in records.items() if r["error"] is None] == ["p0.png", "p2.png", "p3.png"]
    assert "p1.png: image is 30000×30000 pixels" in records["p1.png"]["error"]
    assert _temporaries(out.parent) == []
    assert "3 pair(s) captioned" in capsys.readouterr().err


def test_batch_size_0_is_one_line_before_anything_is_written(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "captions.csv"
    # the model folder does not exist: the argument is refused before the model is looked at
    assert main(_argv(folder, tmp_path / "no-model", "--out", str(out), "--batch-size", "0")) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --batch-size must be >= 1, got 0"
    assert not out.parent.exists()


@pytest.mark.parametrize(
    ("make", "flag", "message"),
    [
        (lambda t: t / "a_folder", "--out", "a_folder [--out]: is a folder"),
        (lambda t: t / "a_file" / "x.csv", "--out", "a_file is a file, not a folder"),
        (lambda t: t / "a_file", "--mask-dir", "a_file [--mask-dir]: is a file; a folder is required"),
    ],
)
def test_unusable_outputs_are_refused_before_the_model_is_loaded(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, flag: str, message: str
) -> None:
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("x")
    out = make(tmp_path)
    if flag == "--out" and out.name == "a_folder":
        out = out.with_suffix(".csv")
        out.mkdir()
        message = "a_folder.csv [--out]: is a folder"
    assert main(_argv(folder, tmp_path / "no-model", flag, str(out))) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_csv_cells_that_look_like_formulas_are_neutralised(model_dir: Path, tmp_path: Path) -> None:
    names = ["=HYPERLINK(1).png", "+1.png", "-2.png", "@SUM.png", "plain.png"]
    for i, name in enumerate(names):
        _png(tmp_path / "pairs" / "A" / name, i)
        _png(tmp_path / "pairs" / "B" / name, 10 + i)
    out = tmp_path / "captions.csv"
    assert main(_argv(tmp_path / "pairs", model_dir, "--out", str(out))) == 0
    rows = list(csv.DictReader(out.open(newline="")))
    assert sorted(r["name"] for r in rows) == sorted(["'" + n for n in names[:4]] + ["plain.png"])
    assert all(r["caption"] and not r["caption"].startswith("'") for r in rows)
    jsonl = tmp_path / "captions.jsonl"  # JSON lines are exact
    assert main(_argv(tmp_path / "pairs", model_dir, "--out", str(jsonl))) == 0
    assert sorted(json.loads(line)["name"] for line in jsonl.read_text().splitlines()) == sorted(names)


def test_outputs_have_the_umask_permissions(scc_dir: Path, tmp_path: Path) -> None:
    _png(tmp_path / "pairs" / "A" / "a.png", 1, (64, 64))
    _png(tmp_path / "pairs" / "B" / "a.png", 2, (64, 64))
    out, masks = tmp_path / "o" / "captions.csv", tmp_path / "masks"
    old = os.umask(0o022)
    try:
        assert main(_argv(tmp_path / "pairs", scc_dir, "--out", str(out), "--mask-dir", str(masks))) == 0
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644 and (masks / "a.png").stat().st_mode & 0o777 == 0o644
    assert _temporaries(out.parent) == [] and _temporaries(masks) == []


def _interrupt_on_call(monkeypatch: pytest.MonkeyPatch, n: int, exc: BaseException) -> None:
    real = ChangeCaptioner.caption_tensor
    calls = []

    def flaky(self: ChangeCaptioner, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == n:
            raise exc
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ChangeCaptioner, "caption_tensor", flaky)


def test_an_interrupted_run_keeps_its_records_under_a_visible_name_and_no_temporary_file(
    folder: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "captions.jsonl"
    _interrupt_on_call(monkeypatch, 2, KeyboardInterrupt())
    assert main(_argv(folder, model_dir, "--out", str(out), "--batch-size", "2")) == 130
    err = capsys.readouterr().err
    partial = tmp_path / "captions.partial.jsonl"
    assert f"interrupted: the 1 record(s) written so far are in {partial}" in err  # batch 1: corrupt.png, p0.png
    assert [json.loads(line)["name"] for line in partial.read_text().splitlines()] == ["p0.png"]
    assert not out.exists() and _temporaries(tmp_path) == []
    monkeypatch.undo()
    assert main(_argv(folder, model_dir, "--out", str(out), "--batch-size", "2")) == 0  # a complete rerun
    assert len(out.read_text().splitlines()) == 8 and not partial.exists()


def test_a_failure_with_nothing_written_leaves_nothing(
    folder: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupt_on_call(monkeypatch, 1, RuntimeError("out of memory"))
    with pytest.raises(RuntimeError):
        main(_argv(folder, model_dir, "--out", str(tmp_path / "o" / "captions.csv"), "--batch-size", "2"))
    assert list((tmp_path / "o").iterdir()) == []


def test_a_successful_rerun_removes_the_part_files_of_killed_runs(
    folder: Path, model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "captions.csv"
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    killed = tmp_path / f".captions.csv.{proc.pid}.k1ll3d.part"  # SIGKILL: nothing could clean up
    running = tmp_path / f".captions.csv.{os.getppid()}.st1ll.part"  # another live process's: not ours to remove
    for p in (killed, running):
        p.write_text("name,before\n")
    assert main(_argv(folder, model_dir, "--out", str(out))) == 0
    assert not killed.exists() and running.exists()


def test_sigterm_exits_cleanly_and_says_where_the_records_are(folder: Path, model_dir: Path, tmp_path: Path) -> None:
    """A real SIGTERM to a real process, sent while the second batch is in the model."""
    out = tmp_path / "captions.jsonl"
    script = textwrap.dedent(
        """
        import sys, time
        from changecap.inference import ChangeCaptioner
        real, calls = ChangeCaptioner.caption_tensor, []
        def slow(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                print("READY", flush=True)
                time.sleep(120)
            return real(self, *args, **kwargs)
        ChangeCaptioner.caption_tensor = slow
        from changecap.cli.main import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(changecap.__file__).parents[1]), str(REPO_ROOT)])}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *_argv(folder, model_dir, "--out", str(out), "--batch-size", "2")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    partial = tmp_path / "captions.partial.jsonl"
    assert proc.returncode == 143, err
    assert f"the 1 record(s) written so far are in {partial}" in err and err.strip().endswith("terminated")
    assert "Traceback" not in err and partial.is_file() and not out.exists() and _temporaries(tmp_path) == []
