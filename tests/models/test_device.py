"""Device names: one parser for every ``--device``, ``train.device`` and ``ChangeCaptioner``; a device this machine
lacks is a one-line error naming the option and the value."""

from __future__ import annotations

import pytest
import torch

from changecap.errors import ChangeCapError
from changecap.models.device import parse_device


def fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Pretend this machine has ``count`` CUDA devices (the checks only ask torch.cuda, nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.parametrize(
    ("name", "gpus", "expect"),
    [
        ("cuda", 0, "'cuda': CUDA is not available"),
        ("cuda:0", 0, "'cuda:0': CUDA is not available"),
        ("cuda:7", 1, r"'cuda:7': this machine has 1 CUDA device\(s\) \(cuda:0 to cuda:0\)"),
        ("cdua", 1, "'cdua': not a device name"),
        ("cuda:x", 1, "'cuda:x': not a device name"),
        ("", 1, "'': not a device name"),
        ("meta", 0, "'meta': the meta device holds no data"),
    ],
)
def test_bad_device_is_one_line_error_naming_option_and_value(
    monkeypatch: pytest.MonkeyPatch, name: str, gpus: int, expect: str
) -> None:
    fake_gpus(monkeypatch, gpus)
    with pytest.raises(ChangeCapError, match=f"^--device {expect}") as info:
        parse_device(name, "--device")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "gpus", "expect"),
    [(None, 0, "cpu"), ("auto", 0, "cpu"), ("auto", 2, "cuda"), ("cpu", 2, "cpu"), ("cuda:1", 2, "cuda:1")],
)
def test_good_device_names(monkeypatch: pytest.MonkeyPatch, name: str | None, gpus: int, expect: str) -> None:
    fake_gpus(monkeypatch, gpus)
    assert parse_device(name) == torch.device(expect)
    assert parse_device(torch.device(expect)) == torch.device(expect)  # a torch.device passes through the checks
