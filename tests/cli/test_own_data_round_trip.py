"""Your own data, end to end: the marked block of ``docs/evaluation.md`` run in order through the CLI entry point.

A folder of pairs, masks and a caption CSV (16 generated 32 px pairs, one planted label error) → ``data import`` →
``data check`` → ``data audit`` → ``train`` twice (two seeds) → ``evaluate`` twice → ``compare``. Each command runs
in-process (``changecap.cli.main.main``) in a temporary folder laid out as the doc describes, must exit 0 and write
what it promises (:data:`PROMISES`). The doc's commands run as written, with two additions that keep the test to
seconds: ``train`` gets :data:`TINY` (a tiny model, 2 updates) and ``evaluate`` skips the Java scorers.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from changecap.cli.main import build_parser, main
from changecap.data.text import NO_CHANGE_SENTENCES
from tests.conftest import REPO_ROOT
from tests.doc_commands import DocCommand, marked_blocks

DOC = REPO_ROOT / "docs" / "evaluation.md"
PAIRS, SIZE = 16, 32
PLANTED = "pair_01"  # unchanged (its captions say so) while its mask has changed pixels
CHANGE_CAPTIONS = (
    "a building is built at the top left",
    "a house appears in the upper left corner",
    "a new building is constructed on the left",
)

#: ``train``: a tiny plain model at 32 px, every word kept, one epoch of 2 updates (11 train pairs, batch 8)
TINY: tuple[str, ...] = (
    "data.image_size=32",
    "data.vocab.threshold=0",
    "model.encoder.config={hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, "
    "image_size: 32, patch_size: 8}",
    "model.fusion={dim: 32, grid_size: 4, layers: 1, heads: 2, ffn_mult: 2}",
    "model.decoder={dim: 32, layers: 1, heads: 2}",
    "schedule.warmup_steps=0",
    "train.epochs=1",
    "train.batch_size=8",
    "train.val_every=1",
    "train.val_max_length=8",
    "logging.progress=false",
)
#: ``evaluate``: the rsicc protocol without METEOR (no Java start)
FAST_EVALUATE: tuple[str, ...] = ("--protocol", "rsicc", "--meteor", "off", "--device", "cpu")


def _lay_out_inputs(args: argparse.Namespace, cwd: Path) -> None:
    """The import's inputs where its options say: pairs (A/, B/), masks, and a caption CSV (3 rows per pair)."""
    rng = np.random.default_rng(0)
    pairs, masks = cwd / args.pairs, cwd / args.masks
    for folder in (pairs / "A", pairs / "B", masks):
        folder.mkdir(parents=True)
    rows: list[tuple[str, str]] = []
    for i in range(PAIRS):
        name = f"pair_{i:02d}"
        before = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        after, mask = before.copy(), np.zeros((SIZE, SIZE), np.uint8)
        changed = i % 2 == 0
        if changed:  # a building in the top-left quarter
            after[: SIZE // 2, : SIZE // 2] = 255 - after[: SIZE // 2, : SIZE // 2]
            mask[: SIZE // 2, : SIZE // 2] = 255
        if name == PLANTED:
            mask[-4:, -4:] = 255
        Image.fromarray(before).save(pairs / "A" / f"{name}.png")
        Image.fromarray(after).save(pairs / "B" / f"{name}.png")
        Image.fromarray(mask).save(masks / f"{name}.png")
        rows += [(name, c) for c in (CHANGE_CAPTIONS if changed else NO_CHANGE_SENTENCES[:3])]
    with (cwd / args.captions).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "caption"])
        writer.writerows(rows)


def _self_contained(page: str) -> None:
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page), "the page loads something from elsewhere"
    assert not re.search(r"url\((?!data:)", page) and "@import" not in page and "<script src" not in page


def _imported(args: argparse.Namespace, cwd: Path, out: str) -> None:
    root = cwd / args.out
    doc = json.loads((root / "LevirCCcaptions.json").read_text())
    splits = {s: sum(e["split"] == s for e in doc["images"]) for s in ("train", "val", "test")}
    assert splits == {"train": 11, "val": 2, "test": 3}, splits  # 0.7 / 0.1 / 0.2 of 16, largest remainder
    assert (root / "images" / "train" / "label").is_dir() and "(levir-mci)" in out  # with masks
    assert json.loads((root / "import.json").read_text())["skipped"] == []


def _checked(args: argparse.Namespace, cwd: Path, out: str) -> None:
    assert "all files OK" in out and "pairs     16" in out


def _audited(args: argparse.Namespace, cwd: Path, out: str) -> None:
    report = json.loads((cwd / args.json).read_text())
    errors = {(f["check"], f["name"]) for f in report["findings"] if f["severity"] == "error"}
    assert errors == {("mask_in_unchanged_pair", f"{PLANTED}.png")}, errors
    page = (cwd / args.html).read_text()
    _self_contained(page)
    assert f"{PLANTED}.png" in page and page.count("base64,") == 3 * len({f["name"] for f in report["findings"]})


def _trained(args: argparse.Namespace, cwd: Path, out: str) -> None:
    assert "finished: 2 updates" in out
    assert (cwd / args.output_dir / "best" / "model.safetensors").is_file()


def _evaluated(args: argparse.Namespace, cwd: Path, out: str) -> None:
    folder = cwd / (args.out or Path(args.model) / f"eval_{args.split}")
    predictions = json.loads((folder / f"predictions_{args.split}.json").read_text())
    test = [e["filename"] for e in json.loads((cwd / args.data / "LevirCCcaptions.json").read_text())["images"]
            if e["split"] == args.split]  # fmt: skip
    assert sorted(predictions) == sorted(test) and all(isinstance(c, str) for c in predictions.values())


def _compared(args: argparse.Namespace, cwd: Path, out: str) -> None:
    result = json.loads((cwd / args.json).read_text())
    (pair,) = result["comparisons"]
    assert (pair["a"], pair["b"]) == ("seed0", "seed1") and result["split"] == "test"
    for metric in ("Bleu_4", "ROUGE_L", "CIDEr"):
        v = pair["metrics"][metric]
        assert v["ci95"][0] <= v["difference"] <= v["ci95"][1] and 0 < v["p_value"] <= 1
    _self_contained((cwd / args.html).read_text())


#: what each command of the block promises, keyed by ``changecap`` subcommand (``data`` by its own subcommand)
PROMISES: dict[str, Callable[[argparse.Namespace, Path, str], None]] = {
    "data import": _imported,
    "data check": _checked,
    "data audit": _audited,
    "train": _trained,
    "evaluate": _evaluated,
    "compare": _compared,
}


def _key(command: DocCommand) -> str:
    return " ".join(command.argv[1:3]) if command.subcommand == "data" else str(command.subcommand)


def _argv(command: DocCommand) -> list[str]:
    argv = list(command.argv[1:])
    if command.subcommand == "train":
        argv += [word for override in TINY for word in ("--set", override)]
    elif command.subcommand == "evaluate":
        argv += FAST_EVALUATE
    return argv


def test_your_own_data_from_import_to_compare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], one_torch_thread: None
) -> None:
    (block,) = marked_blocks(DOC)
    keys = [_key(c) for c in block.commands]
    assert list(dict.fromkeys(keys)) == list(PROMISES), f"{block.id}: the round trip's steps changed: {keys}"
    parser = build_parser()
    shutil.copytree(REPO_ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    for command in block.commands:
        argv = _argv(command)
        args = parser.parse_args(argv)
        if _key(command) == "data import":
            _lay_out_inputs(args, tmp_path)
        rc = main(argv)
        out, err = capsys.readouterr()
        assert rc == 0, f"{command} exited {rc}: {err[-2000:]}"
        PROMISES[_key(command)](args, tmp_path, out)
