"""Checkpoints: RNG round trip, weights_only loading, and atomicity (a crash while writing keeps the old one)."""

from __future__ import annotations

import random
import shutil
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


# ------------------------------------------------------------------------------------------------ damaged folders
def two_checkpoints(out: Path) -> tuple[Path, Path]:
    """An older complete checkpoint (update 3) beside the newest one LATEST names (update 5), as a crash between
    LATEST's update and the deletion of the old folder leaves them."""
    torch.manual_seed(0)
    model = ToyCaptioner(5, 6)
    older = save(out, model, 3)
    kept = shutil.copytree(older, out / "older")
    newer = save(out, model, 5)
    return kept.rename(older), newer


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_state(folder: Path, **fields: object) -> None:
    state = torch.load(folder / ck.STATE_FILE, weights_only=True)
    torch.save({**state, **fields}, folder / ck.STATE_FILE)


def _garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 8)


LATEST = Path("checkpoint") / ck.LATEST_FILE
# (id, damage(out, older, newer), the folder resumed: "older" / "newer", words of the warning note)
FALLBACKS = [
    ("latest-deleted", lambda o, a, b: (o / LATEST).unlink(), "newer", ("LATEST: missing",)),
    ("latest-deleted-newest-truncated", lambda o, a, b: ((o / LATEST).unlink(), _truncate(b / ck.WEIGHTS_FILE)),
     "older", ("LATEST: missing; ", "model.safetensors: cannot read safetensors file")),  # fmt: skip
    ("newest-weights-truncated", lambda o, a, b: _truncate(b / ck.WEIGHTS_FILE), "older",
     ("model.safetensors: cannot read safetensors file", "incomplete metadata")),  # fmt: skip
    ("newest-weights-garbage", lambda o, a, b: _garbage(b / ck.WEIGHTS_FILE), "older",
     ("model.safetensors: cannot read safetensors file",)),  # fmt: skip
    ("newest-weights-missing", lambda o, a, b: (b / ck.WEIGHTS_FILE).unlink(), "older",
     ("model.safetensors: missing",)),  # fmt: skip
    ("newest-state-truncated", lambda o, a, b: _truncate(b / ck.STATE_FILE), "older",
     ("state.pt: cannot read the training state",)),  # fmt: skip
    ("newest-state-garbage", lambda o, a, b: _garbage(b / ck.STATE_FILE), "older",
     ("state.pt: cannot read the training state",)),  # fmt: skip
    ("newest-state-foreign", lambda o, a, b: torch.save({"format_version": 1}, b / ck.STATE_FILE), "older",
     ("state.pt: not a changecap training state", "'progress' is not a dict")),  # fmt: skip
    ("newest-state-bad-progress", lambda o, a, b: _edit_state(b, progress={"epoch": "one"}), "older",
     ("state.pt: not a changecap training state", "progress.epoch is 'one'")),  # fmt: skip
    ("newest-state-unknown-progress-key", lambda o, a, b: _edit_state(b, progress={"epochs": 1}), "older",
     ("state.pt: not a changecap training state", "field 'progress'", "epochs")),  # fmt: skip
    ("latest-names-a-missing-folder", lambda o, a, b: (o / LATEST).write_text("step-000000009-0000abcd\n"),
     "newer", ("names checkpoint 'step-000000009-0000abcd', which is missing",)),  # fmt: skip
    ("latest-names-a-path", lambda o, a, b: (o / LATEST).write_text("../elsewhere\n"), "newer",
     ("LATEST: names '../elsewhere'",)),  # fmt: skip
    ("latest-not-text", lambda o, a, b: (o / LATEST).write_bytes(b"\xff\xfe\x00"), "newer",
     ("LATEST: cannot be read",)),  # fmt: skip
]


@pytest.mark.parametrize(("damage", "resumed", "words"), [r[1:] for r in FALLBACKS], ids=[r[0] for r in FALLBACKS])
def test_damaged_or_missing_latest_falls_back_to_the_newest_readable_checkpoint(
    tmp_path: Path, damage, resumed: str, words: tuple[str, ...]
) -> None:
    older, newer = two_checkpoints(tmp_path)
    damage(tmp_path, older, newer)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.path == {"older": older, "newer": newer}[resumed]
    assert ckpt.progress.global_step == {"older": 3, "newer": 5}[resumed]
    assert ckpt.note is not None and "\n" not in ckpt.note and ckpt.path.name in ckpt.note
    for w in words:
        assert w in ckpt.note, (w, ckpt.note)


def test_checkpoint_latest_names_has_no_note(tmp_path: Path) -> None:
    _, newer = two_checkpoints(tmp_path)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.path == newer and ckpt.note is None


# (id, damage(out, only checkpoint folder), words of the error)
REFUSALS = [
    ("only-one-weights-truncated", lambda o, f: _truncate(f / ck.WEIGHTS_FILE),
     ("model.safetensors: cannot read safetensors file",)),  # fmt: skip
    ("latest-deleted-only-one-state-garbage", lambda o, f: ((o / LATEST).unlink(), _garbage(f / ck.STATE_FILE)),
     ("LATEST: missing; ", "state.pt: cannot read the training state")),  # fmt: skip
    ("latest-deleted-only-one-incomplete", lambda o, f: ((o / LATEST).unlink(), (f / ck.STATE_FILE).unlink()),
     ("LATEST: missing; ", "state.pt: missing (checkpoint step-000000004-")),  # fmt: skip
    ("latest-names-missing-and-no-other", lambda o, f: shutil.rmtree(f), ("which is missing or incomplete",)),
]


@pytest.mark.parametrize(("damage", "words"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_no_readable_checkpoint_is_a_one_line_refusal(tmp_path: Path, damage, words: tuple[str, ...]) -> None:
    folder = save(tmp_path, ToyCaptioner(5, 6), 4)
    damage(tmp_path, folder)
    with pytest.raises(ModelError) as info:
        load_checkpoint(tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and "checkpoint: no readable checkpoint to resume from (" in msg and "--restart" in msg
    for w in words:
        assert w in msg, (w, msg)


@pytest.mark.parametrize("layout", ["no folder", "empty folder", "stray temporary file"])
def test_a_run_without_checkpoints_starts_afresh(tmp_path: Path, layout: str) -> None:
    if layout != "no folder":
        (tmp_path / "checkpoint").mkdir()
    if layout == "stray temporary file":
        (tmp_path / "checkpoint" / ".LATEST.tmp-123").write_text("step-000000001-00000000")
    assert load_checkpoint(tmp_path) is None


def test_weights_damaged_after_the_check_are_a_one_line_error(tmp_path: Path) -> None:
    folder = save(tmp_path, ToyCaptioner(5, 6), 2)
    _garbage(folder / ck.WEIGHTS_FILE)
    with pytest.raises(ModelError, match="model.safetensors: cannot read safetensors file") as info:
        ck.load_weights(ToyCaptioner(5, 6), folder / ck.WEIGHTS_FILE)
    assert "\n" not in str(info.value)


def test_checkpoint_files_get_the_umask_modes_and_a_killed_save_leaves_nothing_named(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    old_umask = os.umask(0o027)
    try:
        torch.manual_seed(0)
        folder = save(tmp_path, ToyCaptioner(5, 6), 3)
    finally:
        os.umask(old_umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (folder, *folder.iterdir())}
    assert modes == {folder.name: 0o750, ck.WEIGHTS_FILE: 0o640, ck.STATE_FILE: 0o640}  # safetensors writes 0600
    # what a save killed mid-write leaves: a temporary folder (never a checkpoint name); the next save removes it
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    stale = folder.parent / f".step-000000004-0a1b2c3d.{proc.pid}.x1.tmp"
    stale.mkdir()
    (stale / ck.WEIGHTS_FILE).write_bytes(b"\x00" * 8)
    assert ck.checkpoint_folders(tmp_path) == [folder]
    newer = save(tmp_path, ToyCaptioner(5, 6), 5)
    assert sorted(p.name for p in folder.parent.iterdir()) == sorted([ck.LATEST_FILE, newer.name])
