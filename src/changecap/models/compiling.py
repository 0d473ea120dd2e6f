"""``torch.compile`` of a model part, with a clean fallback to eager execution.

Inductor needs a working C++ compiler on CPU (Triton on CUDA) and does not support every op; a compile failure must
not end a captioning run. :func:`compile_with_fallback` replaces ``module.forward`` by its compiled version; the
first call that fails inside the compiler prints one warning and puts the eager ``forward`` back for good. Weights,
``state_dict`` keys and saving are untouched (the module is not wrapped).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def compile_with_fallback(module: nn.Module, name: str = "module", **options: Any) -> nn.Module:
    """Compile ``module.forward`` in place (``options`` go to ``torch.compile``); returns the module."""
    eager: Callable[..., Any] = module.forward
    compiled = torch.compile(eager, **options)

    def forward(*args: Any, **kwargs: Any) -> Any:
        try:
            return compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any compiler failure; a genuine input error re-raises from eager
            warnings.warn(
                f"torch.compile of {name} failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                "running it eagerly",
                RuntimeWarning,
                stacklevel=2,
            )
            module.forward = eager  # type: ignore[method-assign]
            return eager(*args, **kwargs)

    module.forward = forward  # type: ignore[method-assign]
    return module
