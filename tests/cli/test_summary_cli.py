"""``changecap summary``: shipped training configs and a saved model directory, JSON and table output, the sizes
assumed when a config leaves them to the data, and one-line user errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from changecap.cli.main import main
from changecap.data.vocab import Vocabulary
from changecap.models import build_model, save_model
from changecap.models.hisem import tiny_config
from changecap.models.summary import summarize_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PAPER = {"encoder": 85_799_424, "fusion": 81_243_976, "decoder": 10_221_813}


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """One torch thread, as in the model tests."""


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["summary", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _yaml_with(tmp_path: Path, base: str, change: dict[str, Any]) -> Path:
    """A copy of a shipped config with ``{"section.key": value}`` changed."""
    data = yaml.safe_load((CONFIGS / base).read_text(encoding="utf-8"))
    for dotted, value in change.items():
        *parents, last = dotted.split(".")
        node = data
        for p in parents:
            node = node[p]
        node[last] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_paper_config_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(capsys, str(CONFIGS / "hisem_levircc.yaml"), "--json")
    assert rc == 0
    d = json.loads(out)
    assert set(d) == {"architecture", "parts", "total", "trainable", "capabilities"}
    assert d["capabilities"] == ["captions", "change_probability", "beam_search", "onnx", "attention_maps"]
    assert d["architecture"] == "hisem"
    for counts in d["parts"].values():
        assert set(counts) == {"total", "trainable"} and all(type(v) is int for v in counts.values())
    assert {k: d["parts"][k]["total"] for k in PAPER} == PAPER
    assert d["total"] == sum(PAPER.values()) and d["trainable"] == 119_818_813
    assert err.count("\n") == 1 and err.startswith("note: ") and "501" in err  # the vocabulary size it assumed

    rc, out, err = _run(capsys, str(CONFIGS / "hisem_levircc.yaml"), "--json", "--vocab-size", "468")
    assert rc == 0 and err == ""
    decoder = json.loads(out)["parts"]["decoder"]["total"]
    assert decoder == PAPER["decoder"] - (501 - 468) * (768 + 768 + 1)  # word embedding + output projection


def test_plain_config_table(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(capsys, str(CONFIGS / "plain_synthcc_cpu.yaml"))
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "architecture: plain"
    assert lines[1].split() == ["part", "total", "trainable"]
    names = [line.split()[0] for line in lines[2:-1] if not set(line) <= {"-"}]
    assert names[:2] == ["encoder", "encoder.vision"] and "fusion" in names and "decoder" in names
    assert names[-1] == "total" and "," in lines[-2]
    assert lines[-1] == "capabilities: captions, beam_search, onnx, attention_maps"  # what plain declares
    notes = err.splitlines()
    assert len(notes) == 2 and all(n.startswith("note: ") for n in notes)
    assert "501" in notes[0] and "41" in notes[1] and "'auto'" in notes[1]


def test_vocab_size_from_the_configured_vocab_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vocab = Vocabulary.build([[f"w{i}" for i in range(26)]], threshold=0, rule="ge")  # 4 special tokens + 26
    vocab.save(tmp_path / "vocab.json")
    config = _yaml_with(tmp_path, "plain_synthcc_cpu.yaml", {"data.vocab.path": str(tmp_path / "vocab.json")})
    rc, out, err = _run(capsys, str(config), "--json")
    rc30, out30, _ = _run(capsys, str(config), "--json", "--vocab-size", "30")
    assert rc == rc30 == 0 and out == out30
    assert "vocab_size" not in err and err.count("\n") == 1  # only the max_length note


def test_saved_model_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(20, image_size=32, patch_size=8, dim=32))
    vocab = Vocabulary.build([[f"w{i}" for i in range(16)]], threshold=0, rule="ge")
    directory = save_model(model, model.config, vocab, tmp_path / "model")
    rc, out, err = _run(capsys, str(directory), "--json")
    assert rc == 0 and err == ""
    assert json.loads(out) == summarize_model(model, "hisem").to_dict()
    rc, out, _ = _run(capsys, str(directory))
    assert rc == 0 and out.splitlines()[0] == "architecture: hisem"


def _assert_one_line_error(rc: int, out: str, err: str, *needles: str) -> None:
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


def test_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"
    _assert_one_line_error(*_run(capsys, str(missing)), str(missing))
    bad = _yaml_with(tmp_path, "plain_synthcc_cpu.yaml", {"model.decoder.heads": 5})
    _assert_one_line_error(*_run(capsys, str(bad)), str(bad), "model.decoder.heads")
    bad = _yaml_with(
        tmp_path, "hisem_levircc.yaml", {"model.encoder.pretrained": "nobody/clip", "model.encoder.config": None}
    )
    _assert_one_line_error(*_run(capsys, str(bad)), "model.encoder.config")
    bad = _yaml_with(tmp_path, "hisem_levircc.yaml", {"model.architecture": "transformer"})
    _assert_one_line_error(*_run(capsys, str(bad)), str(bad), "model.architecture")
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_one_line_error(*_run(capsys, str(empty)), "config.json")
    vocab = Vocabulary.build([[f"w{i}" for i in range(5)]], threshold=0, rule="ge")
    model = build_model(tiny_config(len(vocab), image_size=32, patch_size=8, dim=32))
    directory = save_model(model, model.config, vocab, tmp_path / "model")
    _assert_one_line_error(*_run(capsys, str(directory), "--vocab-size", "9"), "--vocab-size")
