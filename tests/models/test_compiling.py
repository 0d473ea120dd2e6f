"""``compile_with_fallback`` of the part a model names for compilation (``compile_target``, the model contract)
reaches every architecture's image path: each model reads its images through that module's ``forward`` (the one
method the captioner's ``--compile`` replaces), never a side entry."""

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
    max_length = 8 if model.capabilities.captions else None
    with torch.inference_mode():
        expected = model.predict(images, max_length=max_length)
    monkeypatch.setattr(compiling.torch, "compile", recording)
    assert model.compile_target is model.encoder  # each system names its image encoder
    compile_with_fallback(model.compile_target, "the encoder")
    with torch.inference_mode():
        got = model.predict(images, max_length=max_length)
    assert calls, f"{name} never called its compiled encoder"
    assert (expected.texts, expected.tokens) == (got.texts, got.tokens)  # the wrapper changes nothing but the path
    assert expected.mask is None or torch.equal(expected.mask, got.mask)
