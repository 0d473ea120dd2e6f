"""``changecap caption --pairs``: a folder of pairs or a CSV, one record per pair, problems listed and not fatal,
masks written for models with a CD head, JSON lines / CSV output written atomically."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from changecap.cli.main import main
from changecap.errors import DataError
from changecap.inference import ChangeCaptioner
from changecap.inference.pairs import find_pairs


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
