"""Device resolution of a training run (``train.device`` and the process's local rank)."""

from __future__ import annotations

import pytest
import torch

from changecap.engine.distributed import resolve_device
from changecap.errors import ConfigError
from tests.models.test_device import fake_gpus


@pytest.mark.parametrize(
    ("name", "gpus", "local_rank", "expect"),
    [
        ("cuda", 0, 0, r"cuda \(process 0 of this machine needs cuda:0\): CUDA is not available"),
        ("cuda", 1, 1, r"cuda \(process 1 of this machine needs cuda:1\): this machine has 1 CUDA device"),
        ("auto", 2, 3, r"auto \(process 3 of this machine needs cuda:3\): this machine has 2 CUDA device"),
    ],
)
def test_train_device_errors_name_the_config_field_and_file(
    monkeypatch: pytest.MonkeyPatch, name: str, gpus: int, local_rank: int, expect: str
) -> None:
    fake_gpus(monkeypatch, gpus)
    with pytest.raises(ConfigError, match=f"^cfg.yaml: config field 'train.device': {expect}"):
        resolve_device(name, local_rank, path="cfg.yaml")


def test_train_device_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 0)
    assert resolve_device("auto", 0) == torch.device("cpu")
    fake_gpus(monkeypatch, 2)
    assert resolve_device("auto", 1) == torch.device("cuda", 1)
    assert resolve_device("cuda", 0) == torch.device("cuda", 0)
    assert resolve_device("cpu", 5) == torch.device("cpu")
