"""``compile_with_fallback`` of the encoder reaches every architecture's image path: each model reads its images
through ``encoder.forward`` (the one method the captioner's ``--compile`` replaces), never a side entry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from changecap.models import compiling
from changecap.models.compiling import compile_with_fallback
from tests.models.test_precision import _build


@pytest.mark.parametrize("name", ["hisem", "plain", "dfm", "semantic_cc", "change_detection"])
def test_the_compiled_encoder_is_what_the_model_runs(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def recording(fn: Callable[..., Any], **options: Any) -> Callable[..., Any]:  # stands in for torch.compile
        def run(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            return fn(*args, **kwargs)

        return run

    model, size = _build(name)
    model.eval()
    images = torch.randn(2, 2, 3, size, size, generator=torch.Generator().manual_seed(1))  # [B, 2, 3, S, S]
    with torch.inference_mode():
        expected = model.predict(images) if hasattr(model, "predict") else model.caption(images, max_length=8)
    monkeypatch.setattr(compiling.torch, "compile", recording)
    compile_with_fallback(model.encoder, "the encoder")
    with torch.inference_mode():
        got = model.predict(images) if hasattr(model, "predict") else model.caption(images, max_length=8)
    assert calls, f"{name} never called its compiled encoder"
    first = next(iter(expected.values())) if isinstance(expected, dict) else expected[0]
    again = next(iter(got.values())) if isinstance(got, dict) else got[0]
    assert str(first) == str(again)  # the wrapper changes nothing but the path
