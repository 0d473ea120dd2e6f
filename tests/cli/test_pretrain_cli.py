"""``changecap pretrain TARGET CONFIG``: a tiny run end to end, and one-line errors with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from changecap.cli.main import main
from changecap.models.foundations import target as registry
from tests.data.single_date_fakes import make_synthcc_single_dates
from tests.models.foundations.tiny_targets import TINY_LM


@pytest.fixture
def lm_config(tmp_path: Path) -> Path:
    root = make_synthcc_single_dates(tmp_path / "synthcc")
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump({
        "target": "lm",
        "data": {"root": str(root), "holdout": 0.2},
        "model": TINY_LM,
        "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "output_dir": str(tmp_path / "lm")},
        "logging": {"progress": False},
    }))  # fmt: skip
    return path


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_pretrain_writes_the_directory(lm_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "elsewhere"
    assert main(["pretrain", "lm", str(lm_config), "--output-dir", str(out), "--set", "train.seed=1"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("pretrained lm: ") and str(out) in printed and "perplexity" in printed
    card = json.loads((out / "pretrain_card.json").read_text())
    assert card["training"]["seed"] == 1 and card["config"]["train"]["output_dir"] == str(out)
    assert main(["pretrain", "lm", str(lm_config), "--output-dir", str(out)]) == 2
    assert "--overwrite" in _error(capsys)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--split", "val"], "config field 'data.split': pretraining reads the train split only"),
        (["--split", "test"], "got 'test'"),
        (["--set", "data.split=val"], "data.split"),
        (["--set", "model.llm.vocab_size=3"], "model.llm.vocab_size"),
    ],
)
def test_errors_are_one_line(lm_config: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    assert main(["pretrain", "lm", str(lm_config), *args]) == 2
    assert needle in _error(capsys)


def test_val_folder_and_missing_targets_are_refused(
    lm_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    val = tmp_path / "synthcc" / "images" / "val"
    assert main(["pretrain", "lm", str(lm_config), "--set", f"data.root={val}"]) == 2
    assert "'val' split folder" in _error(capsys)
    assert main(["pretrain", "gpt", str(lm_config)]) == 2
    assert "unknown pretraining target 'gpt'" in _error(capsys)
    monkeypatch.setitem(registry.TARGETS, "qformer", "changecap.models.foundations.not_installed:TARGET")
    assert main(["pretrain", "qformer", str(lm_config)]) == 2
    assert "'qformer' is not available" in _error(capsys)
