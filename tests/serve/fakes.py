"""A stand-in captioner for the server tests that need no model."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from changecap.models.contract import Capabilities


class FakeCaptioner:
    """Stands in for a ``ChangeCaptioner`` where the model's answer does not matter (hosts, docs, HTTP handling).

    With ``block=True`` each call waits until ``release`` is set (a forward pass that takes as long as the test
    wants); ``entered`` is set once a call has begun."""

    architecture = "fake"
    capabilities = Capabilities(captions=True, change_probability=True)

    def __init__(self, block: bool = False) -> None:
        self.block = block
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls = 0

    def __call__(self, before: Any, after: Any, attention_maps: bool = False) -> SimpleNamespace:
        self.calls += 1
        self.entered.set()
        if self.block:
            assert self.release.wait(60), "the test never released the model"
        return SimpleNamespace(caption=f"{before.shape[1]}x{before.shape[0]} pair", change_probability=0.5, mask=None,
                               attention=None, attention_box=None)  # fmt: skip
