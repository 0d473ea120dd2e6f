"""Damaged model directories and bad ``--device`` values through the CLI: each row ends in exit status 2, one line
``error: …`` naming the file and field (or the option and value), nothing on stdout and nothing left behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from changecap.cli.main import main
from changecap.models import io
from tests.inference.malformed_models import CASES, Case, make_model_dir
from tests.models.test_device import fake_gpus


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("cli_models") / "model")


def _images(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    paths = folder / "before.png", folder / "after.png"
    for p in paths:
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(p)
    return paths


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> None:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert out == ""


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_caption_json_with_damaged_model_exits_2(
    case: Case, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = shutil.copytree(tiny_model_dir, tmp_path / "m")
    case.damage(model)
    before, after = _images(tmp_path)
    files = _tree(tmp_path)
    assert main(["caption", str(before), str(after), "--model", str(model), "--json", "--device", "cpu"]) == 2
    assert_one_line_error(capsys, str(model), *case.expect)
    assert _tree(tmp_path) == files


COMMANDS = {
    "caption": ["caption", "{d}/before.png", "{d}/after.png", "--model", "{d}/model", "--json"],
    "caption-onnx": ["caption", "{d}/before.png", "{d}/after.png", "--model", "{d}/model", "--backend", "onnx"],
    "caption-pairs": ["caption", "--pairs", "{d}/pairs", "--model", "{d}/model", "--out", "{d}/out.jsonl"],
    "evaluate": ["evaluate", "--model", "{d}/model", "--data", "{d}", "--out", "{d}/eval"],
    "scene": ["scene", "{d}/before.png", "{d}/after.png", "--model", "{d}/model", "--out", "{d}/scene"],
    "serve": ["serve", "--model", "{d}/model", "--port", "8765"],
}
DEVICES = [  # (value, GPUs this machine pretends to have, what the error says)
    ("cuda", 0, "CUDA is not available"),
    ("cuda:7", 1, "this machine has 1 CUDA device(s)"),
    ("cdua", 1, "not a device name"),
]


@pytest.mark.parametrize(("device", "gpus", "words"), DEVICES, ids=[d[0] for d in DEVICES])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_bad_device_exits_2_before_anything_is_loaded_or_written(
    command: str,
    device: str,
    gpus: int,
    words: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if command == "serve":
        pytest.importorskip("uvicorn", reason="changecap serve needs the serve extra")
    shutil.copytree(tiny_model_dir, tmp_path / "model")
    before, after = _images(tmp_path)
    for side, image in (("A", before), ("B", after)):
        (tmp_path / "pairs" / side).mkdir(parents=True)
        shutil.copy(image, tmp_path / "pairs" / side / "x.png")
    files = _tree(tmp_path)
    fake_gpus(monkeypatch, gpus)
    loads: list[object] = []
    monkeypatch.setattr(io, "load_model_bundle", lambda *a, **k: loads.append(a))  # the check comes first
    argv = [arg.format(d=tmp_path) for arg in COMMANDS[command]]
    assert main([*argv, "--device", device]) == 2
    assert_one_line_error(capsys, f"--device '{device}'", words)
    assert _tree(tmp_path) == files and not loads


# ------------------------------------------------------------------------------------------------ train
def _checkpoint(run_dir: Path) -> Path:
    """A real checkpoint of the toy captioner in ``run_dir`` (the trainer refuses before building its own model)."""
    from tests.engine.test_checkpoint import save
    from tests.engine.toy import ToyCaptioner

    return save(run_dir, ToyCaptioner(5, 6), 3)


def _hostile_state(path: Path, marker: Path) -> None:
    """A state.pt whose unpickling would create ``marker`` (the damage check below shows it never ran)."""
    from tests.cli.test_malformed_inputs import hostile_pickle

    hostile_pickle(path, marker)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


TRAIN_CASES = [  # (id, damage(run folder, checkpoint folder), extra argv, GPUs, words)
    ("latest-deleted-weights-truncated",
     lambda r, c: ((r / "checkpoint" / "LATEST").unlink(), _truncate(c / "model.safetensors")), [], 0,
     ("no readable checkpoint to resume from", "LATEST: missing", "model.safetensors: cannot read", "--restart")),
    ("state-garbage", lambda r, c: (c / "state.pt").write_bytes(b"garbage"), [], 0,
     ("no readable checkpoint to resume from", "state.pt: cannot read the training state", "--restart")),
    ("state-hostile-pickle", lambda r, c: _hostile_state(c / "state.pt", r.parent / "pwned"), [], 0,
     ("state.pt: cannot read the training state", "pickles a Python object (os.makedirs), which is never run")),
    ("train-device-cuda-without-cuda", lambda r, c: None, ["--set", "train.device=cuda"], 0,
     ("cfg.yaml", "'train.device'", "CUDA is not available")),
    ("train-device-misspelt", lambda r, c: None, ["--set", "train.device=cdua"], 1,
     ("cfg.yaml", "'train.device'", "'cdua'")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "extra", "gpus", "words"), [c[1:] for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES]
)
def test_train_with_unreadable_checkpoint_or_bad_device_exits_2_and_keeps_everything(
    damage, extra: list[str], gpus: int, words: tuple[str, ...], tmp_path: Path, monkeypatch, capsys
) -> None:
    from tests.data.fakes import make_levir
    from tests.engine.test_train_real import write_config

    data = make_levir(tmp_path / "mci", "levir-mci", {"train": 2, "val": 1, "test": 1}, 32)
    config = write_config(tmp_path, data)
    damage(tmp_path / "run", _checkpoint(tmp_path / "run"))
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    fake_gpus(monkeypatch, gpus)
    assert main(["train", str(config), *extra]) == 2
    assert_one_line_error(capsys, *words)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files
    assert not (tmp_path / "pwned").exists()  # a pickled call in state.pt never runs
