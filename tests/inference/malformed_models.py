"""Catalogue of damaged model directories: each case breaks one thing in a copy of a tiny saved model.

Shared by ``tests/inference/test_predictor.py`` (library errors) and ``tests/cli/test_model_inputs_cli.py`` (CLI
exit status). Every case must end in one line naming the file and, where there is one, the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from changecap.data.vocab import Vocabulary
from changecap.inference import PreprocessConfig
from changecap.models import build_model, save_model
from changecap.models.hisem import tiny_config

IMAGE_SIZE = 32
WORDS = ["a", "building", "road", "house", "the", "is", "are", "new", "built", "no", "change"]


def make_model_dir(out: Path) -> Path:
    """A tiny random-init HiSem (32 px) saved with its preprocess.json."""
    torch.manual_seed(0)
    vocab = Vocabulary.build([WORDS], threshold=0)
    model = build_model(tiny_config(len(vocab), image_size=IMAGE_SIZE, patch_size=8, dim=32, max_length=8)).eval()
    save_model(model, model.config, vocab, out)
    PreprocessConfig(image_size=IMAGE_SIZE, resize_mode="resize").save(out)
    return out


@dataclass(frozen=True)
class Case:
    """``damage(model_dir)`` breaks the directory; the error must mention every string in ``expect``."""

    id: str
    damage: Callable[[Path], None]
    expect: tuple[str, ...]


def _write(name: str, text: str | bytes) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)

    return damage


def _preprocess(**fields: Any) -> Callable[[Path], None]:
    """preprocess.json with ``fields`` replaced (NaN / Infinity written as Python's json writes them)."""

    def damage(folder: Path) -> None:
        path = folder / "preprocess.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))

    return damage


def _config(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / "config.json"
        payload = json.loads(path.read_text())
        edit(payload)
        path.write_text(json.dumps(payload))

    return damage


def _set(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(payload: dict[str, Any]) -> None:
        node = payload
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return edit


def _unlink(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).unlink()


def _truncate(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _corrupt_4kb(folder: Path) -> None:
    """4 KB of 0xFF (a float32 NaN pattern) in the middle of the tensor data: the header still parses."""
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = b"\xff" * 4096
    path.write_bytes(bytes(data))


def _infinite_tensor(folder: Path) -> None:
    path = folder / "model.safetensors"
    state = load_file(str(path))
    state["decoder.output_proj.bias"][3] = float("inf")
    save_file(state, str(path))


PP, CFG, W = "preprocess.json", "config.json", "model.safetensors"
CASES: list[Case] = [
    # preprocess.json
    Case("preprocess-not-json", _write(PP, "{not json"), (PP, "not valid JSON")),
    Case("preprocess-not-utf8", _write(PP, b"\xff\xfe\x00 garbage"), (PP, "not valid JSON")),
    Case("preprocess-not-a-mapping", _write(PP, "[224]"), (PP, "'preprocess'", "mapping")),
    Case("preprocess-unknown-key", _preprocess(size=32), (PP, "preprocess.size", "unknown key")),
    Case("preprocess-image-size-0", _preprocess(image_size=0), (PP, "preprocess.image_size", "1..8192")),
    Case("preprocess-image-size-huge", _preprocess(image_size=10**9), (PP, "preprocess.image_size", "1..8192")),
    Case("preprocess-image-size-string", _preprocess(image_size="32"), (PP, "preprocess.image_size", "int")),
    Case("preprocess-image-size-not-the-model's", _preprocess(image_size=48), (PP, "[image_size]", "32×32")),
    Case("preprocess-std-0", _preprocess(std=[0.0, 0.2, 0.2]), (PP, "preprocess.std", "finite and positive")),
    Case("preprocess-std-negative", _preprocess(std=[0.2, -0.2, 0.2]), (PP, "preprocess.std", "positive")),
    Case("preprocess-std-nan", _preprocess(std=[float("nan"), 0.2, 0.2]), (PP, "preprocess.std", "finite")),
    Case("preprocess-std-inf", _preprocess(std=[float("inf"), 0.2, 0.2]), (PP, "preprocess.std", "finite")),
    Case("preprocess-mean-nan", _preprocess(mean=[float("nan"), 0.5, 0.5]), (PP, "preprocess.mean", "finite")),
    Case("preprocess-mean-2-values", _preprocess(mean=[0.5, 0.5]), (PP, "preprocess.mean", "3 values")),
    Case("preprocess-std-4-values", _preprocess(std=[0.2] * 4), (PP, "preprocess.std", "3 values")),
    Case("preprocess-resize-mode", _preprocess(resize_mode="crop"), (PP, "preprocess.resize_mode", "'crop'")),
    # config.json
    Case("config-missing", _unlink(CFG), (CFG, "missing")),
    Case("config-not-json", _write(CFG, '{"format": '), (CFG, "not valid JSON")),
    Case("config-format-version-0", _config(_set("format_version", value=0)), (CFG, "format_version 0")),
    Case("config-no-model", _config(lambda p: p.pop("model")), (CFG, "'model'")),
    Case("config-heads-0", _config(_set("model", "decoder", "heads", value=0)), (CFG, "model.decoder.heads")),
    Case("config-dropout-nan", _config(_set("model", "decoder", "dropout", value=float("nan"))),
         (CFG, "model.decoder.dropout")),  # fmt: skip
    Case("config-patch-size-0", _config(_set("model", "encoder", "config", "patch_size", value=0)),
         (CFG, "model.encoder.config.patch_size")),  # fmt: skip
    Case("config-layer-norm-eps-nan", _config(_set("model", "encoder", "config", "layer_norm_eps", value=float("nan"))),
         (CFG, "model.encoder.config.layer_norm_eps")),  # fmt: skip
    Case("config-hidden-act", _config(_set("model", "encoder", "config", "hidden_act", value="gelu_typo")),
         (CFG, "model.encoder.config.hidden_act", "gelu_typo")),  # fmt: skip
    Case("config-unknown-architecture", _config(_set("architecture", value="hisemm")), (CFG, "architecture")),
    # model.safetensors
    Case("weights-missing", _unlink(W), (W, "missing")),
    Case("weights-empty", _write(W, b""), (W, "cannot read safetensors file")),
    Case("weights-garbage", _write(W, b"\x93NUMPY" + bytes(range(256)) * 16), (W, "cannot read safetensors file")),
    Case("weights-truncated", _truncate, (W, "cannot read safetensors file")),
    Case("weights-4kb-corrupted", _corrupt_4kb, (W, "tensor '", "non-finite")),
    Case("weights-inf", _infinite_tensor, (W, "'decoder.output_proj.bias'", "non-finite")),
    # vocab.json
    Case("vocab-missing", _unlink("vocab.json"), ("vocab.json", "missing")),
    Case("vocab-not-json", _write("vocab.json", "{"), ("vocab.json",)),
]
