"""``--threads N``: every command that runs a model takes it, ``cli.main`` hands it to torch (and back afterwards)
and to onnxruntime sessions; the default never exceeds the idle CPUs; bad values are one-line errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from changecap.cli import threads
from changecap.cli.main import build_parser, main
from changecap.errors import ChangeCapError

MODEL_COMMANDS = {
    "caption": ["caption", "a.png", "b.png", "--model", "m"],
    "caption --pairs": ["caption", "--pairs", "d", "--model", "m"],
    "scene": ["scene", "a.tif", "b.tif", "--model", "m", "--out", "o"],
    "serve": ["serve", "--model", "m"],
    "evaluate": ["evaluate", "--model", "m", "--data", "d"],
    "export": ["export", "onnx", "--model", "m", "--out", "o"],
    "train": ["train", "c.yaml"],
    "pretrain": ["pretrain", "clip", "c.yaml"],
}


@pytest.mark.parametrize("command", list(MODEL_COMMANDS))
def test_every_model_command_takes_threads(command: str) -> None:
    args = build_parser().parse_args([*MODEL_COMMANDS[command], "--threads", "3"])
    assert threads.resolve_threads(args) == 3


def test_the_default_is_torchs_capped_by_the_idle_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(MODEL_COMMANDS["caption"])
    monkeypatch.setattr(threads, "idle_cpus", lambda: 1)  # a busy machine
    assert threads.resolve_threads(args) == 1
    monkeypatch.setattr(threads, "idle_cpus", lambda: 10_000)  # an idle one: torch's own default
    assert threads.resolve_threads(args) == torch.get_num_threads()
    # training keeps torch's default unless asked; commands without models take no threads
    assert threads.resolve_threads(build_parser().parse_args(MODEL_COMMANDS["train"])) is None
    assert threads.resolve_threads(build_parser().parse_args(MODEL_COMMANDS["pretrain"])) is None
    assert threads.resolve_threads(argparse.Namespace(command="info")) is None


def test_idle_cpus_subtracts_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.6, 0.0, 0.0), raising=False)
    assert threads.idle_cpus() == 1
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (11.0, 0.0, 0.0), raising=False)
    assert threads.idle_cpus() == 1  # never below one
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.2, 0.0, 0.0), raising=False)
    assert threads.idle_cpus() == 4


@pytest.mark.parametrize("value", ["0", "-2"])
def test_bad_thread_counts_are_one_line_errors(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*MODEL_COMMANDS["caption"], "--threads", value]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: --threads must be >= 1, got {value}"


def test_threads_reach_torch_and_are_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    from changecap.inference import ChangeCaptioner

    seen: dict[str, int] = {}

    def fake_load(*args: Any, **kwargs: Any) -> None:
        seen["threads"] = torch.get_num_threads()
        raise ChangeCapError("stop here")  # the command goes no further than loading the model

    monkeypatch.setattr(ChangeCaptioner, "from_pretrained", fake_load)
    before = torch.get_num_threads()
    target = 2 if before == 1 else 1
    assert main([*MODEL_COMMANDS["caption"], "--threads", str(target)]) == 2
    assert seen["threads"] == target
    assert torch.get_num_threads() == before


def test_threads_reach_the_onnxruntime_sessions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ort = pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime")
    from changecap.inference.onnx_export import META_FILE

    (tmp_path / META_FILE).write_text(json.dumps({"architecture": "hisem"}))
    seen: list[int] = []

    def fake_session(path: str, options: Any, providers: Any = None) -> None:
        seen.append(options.intra_op_num_threads)
        raise ChangeCapError("stop here")

    monkeypatch.setattr(ort, "InferenceSession", fake_session)
    argv = ["caption", "a.png", "b.png", "--model", str(tmp_path), "--backend", "onnx", "--threads", "3"]
    assert main(argv) == 2
    assert seen == [3]
