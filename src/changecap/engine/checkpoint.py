"""Atomic training checkpoints that resume a run exactly.

Layout under ``<output_dir>/checkpoint/``::

    LATEST                       name of the current checkpoint folder (one line)
    step-000001200-3f2a9c1e/
        model.safetensors        model weights and buffers (safetensors: loading never runs code)
        state.pt                 optimiser, LR scheduler, RNG states of every process, sampler position, global
                                 step, best metric, config, vocabulary — tensors and plain Python values only, read
                                 with ``torch.load(..., weights_only=True)``

**Atomicity.** A checkpoint is written into a fresh temporary folder (:func:`~changecap.data.files.make_temp_dir`),
its files flushed to disk and given the normal modes, and the folder renamed to its checkpoint name; then ``LATEST``
is replaced atomically (:func:`~changecap.data.files.atomic_write_text`). Only after that are older folders
deleted; the temporary folders of a killed save are removed by the next one. A crash at any moment therefore
leaves ``LATEST`` naming a complete checkpoint — the new one or the previous one — never a half-written file.

**Damage.** :func:`load_checkpoint` reads the checkpoint ``LATEST`` names and checks it (the safetensors header
covers the whole file, ``state.pt`` unpickles with ``weights_only`` into the expected fields). When ``LATEST`` is
missing, or names a folder that is missing or does not pass, the newest checkpoint folder that passes is used
instead, with a note the trainer prints as one warning line; when the folder holds checkpoints and none passes, the
run is refused with a one-line error. A run never starts over on top of existing checkpoints unless told to
(``resume=False``, ``changecap train --restart``).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model as load_safetensors_model
from safetensors.torch import save_model as save_safetensors_model
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from changecap.data.files import (
    atomic_write_text,
    fsync_dir,
    make_temp_dir,
    remove_stale_temps,
    replace_folder,
)
from changecap.errors import ModelError, first_line
from changecap.models.io import torch_load_weights_only

CHECKPOINT_DIRNAME = "checkpoint"
LATEST_FILE = "LATEST"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "state.pt"
FORMAT_VERSION = 1
#: A checkpoint folder's name: the global step (sorts the folders) and a random tag (two saves never collide).
FOLDER_NAME = re.compile(r"step-(\d+)-[0-9a-f]+")


@dataclass
class TrainProgress:
    """Where the loop stands: the next update is number ``step_in_epoch`` of ``epoch`` (both 0-indexed)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None


@dataclass
class Checkpoint:
    """A loaded checkpoint: where its weights are and everything else from ``state.pt``."""

    path: Path
    progress: TrainProgress
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: list[dict[str, Any]]  # one entry per process (rank order)
    config: dict[str, Any]
    vocab: list[str]
    note: str | None = None  # why this checkpoint and not the one LATEST names (None when it is that one)

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS_FILE


# ---------------------------------------------------------------------------------------------------------- RNG
def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA when initialised) generator states as tensors and plain values.

    ``weights_only`` unpickling accepts tensors, numbers, strings, lists and dicts, so the NumPy key array and the
    Python state tuple are stored as int64 tensors.
    """
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(
        (npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------------- files
def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP and :class:`~changecap.engine.objectives.base.TrainingStep` wrappers."""
    from changecap.engine.objectives.base import TrainingStep

    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif isinstance(model, TrainingStep):
            model = model.model
        else:
            return model


def checkpoint_root(output_dir: str | os.PathLike[str]) -> Path:
    return Path(output_dir) / CHECKPOINT_DIRNAME


def checkpoint_folders(output_dir: str | os.PathLike[str]) -> list[Path]:
    """The run's checkpoint folders (complete or not), newest first: by global step, then modification time."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = FOLDER_NAME.fullmatch(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p.stat().st_mtime_ns, p))
    return [p for *_, p in sorted(found, key=lambda x: x[:2], reverse=True)]


def latest_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """Folder named by ``LATEST`` (None when there is no ``LATEST``); it may be missing or damaged."""
    latest = checkpoint_root(output_dir) / LATEST_FILE
    if not latest.is_file():
        return None
    try:
        name = latest.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"{latest}: cannot be read ({first_line(e)})") from None
    if not name or name in (".", "..") or Path(name).name != name:  # never a path: a folder beside LATEST
        raise ModelError(f"{latest}: names {name!r}, which is not a checkpoint folder name")
    return latest.parent / name


def save_checkpoint(
    output_dir: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: TrainProgress,
    rng: list[dict[str, Any]],
    config: Mapping[str, Any],
    vocab: list[str],
) -> Path:
    """Write a complete checkpoint atomically (module docstring) and delete the previous ones. Rank 0 only."""
    root = checkpoint_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(root)  # checkpoints half written by a killed run
    folder = root / f"step-{progress.global_step:09d}-{uuid.uuid4().hex[:8]}"
    tmp = make_temp_dir(folder)  # a checkpoint name is only ever given to a complete checkpoint
    try:
        _write_checkpoint(tmp, model, optimizer, scheduler, progress, rng, config, vocab)
        replace_folder(tmp, folder)  # normal modes (safetensors writes its file 0600), then the rename
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / LATEST_FILE, folder.name + "\n")  # the commit point
    for old in root.iterdir():
        if old.is_dir() and old.name != folder.name:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def _write_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: TrainProgress,
    rng: list[dict[str, Any]],
    config: Mapping[str, Any],
    vocab: list[str],
) -> None:
    save_safetensors_model(unwrap(model), str(folder / WEIGHTS_FILE))
    state = {
        "format_version": FORMAT_VERSION,
        "progress": asdict(progress),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng,
        "config": dict(config),
        "vocab": list(vocab),
    }
    torch.save(state, folder / STATE_FILE)
    for name in (WEIGHTS_FILE, STATE_FILE):
        _fsync_file(folder / name)
    fsync_dir(folder)


def read_checkpoint(folder: Path) -> Checkpoint:
    """Read one checkpoint folder, checking both files; a one-line ModelError naming the file when one is missing,
    damaged (truncated, not safetensors / not a torch file) or not a changecap training state."""
    from safetensors import SafetensorError, safe_open

    weights, state_file = folder / WEIGHTS_FILE, folder / STATE_FILE
    for path in (weights, state_file):
        if not path.is_file():
            raise ModelError(f"{path}: missing (checkpoint {folder.name} is incomplete)")
    try:
        with safe_open(str(weights), "pt") as f:  # the header check covers the file's length: truncation is caught
            f.keys()
    except (SafetensorError, OSError) as e:
        raise ModelError(f"{weights}: cannot read safetensors file ({first_line(e)[:200]})") from None
    state = torch_load_weights_only(state_file, "the training state")
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{state_file}: not a changecap training state (format {FORMAT_VERSION})")
    kinds = {"progress": dict, "optimizer": dict, "scheduler": dict, "rng": list, "config": dict, "vocab": list}
    for key, kind in kinds.items():
        if not isinstance(state.get(key), kind):
            raise ModelError(f"{state_file}: not a changecap training state (field '{key}' is not a {kind.__name__})")
    try:
        progress = TrainProgress(**state["progress"])
    except TypeError as e:  # an unknown or missing key
        raise ModelError(f"{state_file}: not a changecap training state (field 'progress': {first_line(e)})") from None
    for key in ("epoch", "step_in_epoch", "global_step"):
        value = getattr(progress, key)  # a field of the saved training position
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ModelError(f"{state_file}: not a changecap training state (progress.{key} is {value!r})")
    fields = {k: state[k] for k in kinds if k != "progress"}
    return Checkpoint(path=folder, progress=progress, **fields)


def load_checkpoint(output_dir: str | os.PathLike[str]) -> Checkpoint | None:
    """The checkpoint to resume from: the one ``LATEST`` names, else the newest readable one (module docstring);
    None when the run has no checkpoint. A ModelError when it has checkpoints and none can be read."""
    root = checkpoint_root(output_dir)
    folders = checkpoint_folders(output_dir)
    problems: list[str] = []
    named: Path | None = None
    try:
        named = latest_checkpoint(output_dir)
    except ModelError as e:
        problems.append(str(e))
    if named is not None:
        try:
            return read_checkpoint(named)
        except ModelError as e:
            gone = f"{root / LATEST_FILE}: names checkpoint {named.name!r}, which is missing or incomplete"
            problems.append(str(e) if named.is_dir() else gone)
    elif not problems:
        if not folders:
            return None
        problems.append(f"{root / LATEST_FILE}: missing")
    for folder in folders:
        if folder == named:
            continue
        try:
            ckpt = read_checkpoint(folder)
        except ModelError as e:
            problems.append(str(e))
            continue
        ckpt.note = f"{_summary(problems)}; resuming from the newest readable checkpoint, {folder.name}"
        return ckpt
    raise ModelError(
        f"{root}: no readable checkpoint to resume from ({_summary(problems)}); restore it, choose another "
        "train.output_dir, or start afresh with --restart (resume=False), which deletes the checkpoints"
    )


def _summary(problems: list[str]) -> str:
    """The first two problems and how many more, for one line."""
    more = f"; {len(problems) - 2} more" if len(problems) > 2 else ""
    return "; ".join(problems[:2]) + more


def load_weights(model: nn.Module, path: str | os.PathLike[str], device: torch.device | str = "cpu") -> None:
    """Load safetensors weights into ``model`` (strict), with a one-line error on a mismatch."""
    from safetensors import SafetensorError

    try:
        load_safetensors_model(unwrap(model), str(path), strict=True, device=str(device))
    except RuntimeError as e:
        first = first_line(e)
        raise ModelError(f"{path}: weights do not fit the configured model ({first[:200]})") from None
    except (SafetensorError, OSError) as e:  # changed or damaged since the checkpoint was chosen
        raise ModelError(f"{path}: cannot read safetensors file ({first_line(e)[:200]})") from None
