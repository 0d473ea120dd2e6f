"""Checkpoints: RNG round trip, weights_only loading, and atomicity (a crash while writing keeps the old one)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from changecap.engine import checkpoint as ck
from changecap.engine.checkpoint import TrainProgress, capture_rng_state, load_checkpoint, restore_rng_state
from changecap.errors import ModelError
from tests.engine.toy import ToyCaptioner


def draws() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.rand(3)


def test_rng_state_round_trip() -> None:
    state = capture_rng_state()
    a = draws()
    restore_rng_state(state)
    b = draws()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def save(out: Path, model: torch.nn.Module, step: int) -> Path:
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(2, 2, 3, 8, 8), torch.randint(0, 5, (2, 6))).logits.sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return ck.save_checkpoint(
        out,
        model,
        opt,
        sched,
        TrainProgress(epoch=1, step_in_epoch=2, global_step=step, best_metric=0.5, best_epoch=0),
        [capture_rng_state()],
        {"train": {"batch_size": 4}},
        ["<NULL>", "<UNK>", "<START>", "<END>"],
    )


def test_save_and_load_with_weights_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ToyCaptioner(5, 6)
    folder = save(tmp_path, model, 7)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.path == folder
    assert ckpt.progress == TrainProgress(1, 2, 7, 0.5, 0)
    assert ckpt.vocab[:2] == ["<NULL>", "<UNK>"] and ckpt.config["train"]["batch_size"] == 4
    assert "state" in ckpt.optimizer and len(ckpt.rng) == 1
    fresh = ToyCaptioner(5, 6)
    ck.load_weights(fresh, ckpt.weights)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    # only one checkpoint folder is kept
    save(tmp_path, model, 8)
    assert len([p for p in (tmp_path / "checkpoint").iterdir() if p.is_dir()]) == 1
    with pytest.raises(ModelError, match="do not fit"):
        ck.load_weights(ToyCaptioner(7, 6), load_checkpoint(tmp_path).weights)


@pytest.mark.parametrize("where", ["weights", "state", "latest"])
def test_crash_while_writing_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    torch.manual_seed(0)
    model = ToyCaptioner(5, 6)
    save(tmp_path, model, 3)
    before = load_checkpoint(tmp_path)
    weights_before = (before.weights).read_bytes()

    def half_write(path: Path | str, payload: bytes = b"\x00" * 64) -> None:
        Path(path).write_bytes(payload)  # a partial file, then the process dies
        raise KeyboardInterrupt

    if where == "weights":
        monkeypatch.setattr(ck, "save_safetensors_model", lambda m, path: half_write(path))
    elif where == "state":
        monkeypatch.setattr(ck.torch, "save", lambda obj, path: half_write(path))
    else:
        real_replace = ck.os.replace

        def crash_on_latest(src: str, dst: str) -> None:
            if str(dst).endswith(ck.LATEST_FILE):
                raise KeyboardInterrupt
            real_replace(src, dst)

        monkeypatch.setattr(ck.os, "replace", crash_on_latest)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, model, 4)
    monkeypatch.undo()
    after = load_checkpoint(tmp_path)
    assert after is not None and after.path == before.path and after.progress.global_step == 3
    assert after.weights.read_bytes() == weights_before
    # the next successful save cleans up the debris of the crashed one
    save(tmp_path, model, 5)
    assert [p.name for p in (tmp_path / "checkpoint").iterdir() if p.is_dir()] == [load_checkpoint(tmp_path).path.name]


def test_corrupt_state_and_dangling_latest_are_one_line_errors(tmp_path: Path) -> None:
    model = ToyCaptioner(5, 6)
    folder = save(tmp_path, model, 1)
    (folder / ck.STATE_FILE).write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="cannot read the training state"):
        load_checkpoint(tmp_path)
    (tmp_path / "checkpoint" / ck.LATEST_FILE).write_text("step-missing\n")
    with pytest.raises(ModelError, match="missing or incomplete"):
        load_checkpoint(tmp_path)
