"""The one parser of device names (``--device`` of every command, ``train.device``, ``ChangeCaptioner``).

A device is checked against this machine before anything is loaded onto it, so ``cuda`` on a machine without CUDA,
a misspelt name (``cdua``) or an index past the last GPU (``cuda:7`` with one GPU) is a one-line error instead of
a traceback from deep inside torch.
"""

from __future__ import annotations

import torch

from changecap.errors import ChangeCapError

#: What a device name may be, for error messages.
DEVICE_FORMS = "auto, cpu, cuda, cuda:N or mps"


def device_problem(device: torch.device) -> str | None:
    """Why ``device`` cannot run a model on this machine (None when it can)."""
    kind = device.type
    if kind == "cpu":
        return None
    if kind == "meta":
        return "the meta device holds no data; use cpu or cuda"
    if kind == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available on this machine (torch.cuda.is_available() is False); use cpu"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})"
        return None
    if kind == "mps":
        return None if torch.backends.mps.is_available() else "MPS is not available on this machine; use cpu"
    backend = getattr(torch, kind, None)  # torch.xpu, torch.hpu, … when this torch build has them
    is_available = getattr(backend, "is_available", None)
    if not callable(is_available) or not is_available():
        return f"no {kind} device is available on this machine; use cpu or cuda"
    return None


def parse_device(name: str | torch.device | None, field: str = "device") -> torch.device:
    """``None`` or ``"auto"`` → ``cuda`` when available, else ``cpu``; any other name must be a device this machine
    has. Errors are one line naming ``field`` (``--device``, ``device``) and the value given."""
    if isinstance(name, torch.device):
        device = name
    else:
        text = "auto" if name is None else str(name).strip()
        if text == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(text)
        except (RuntimeError, ValueError):
            raise ChangeCapError(f"{field} {text!r}: not a device name (expected {DEVICE_FORMS})") from None
    problem = device_problem(device)
    if problem is not None:
        raise ChangeCapError(f"{field} {str(device)!r}: {problem}")
    return device
