"""changecap: remote sensing image change captioning (RSICC) toolkit."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_model"]


def load_model(path: str, **kwargs: Any) -> Any:
    """Load a saved changecap model directory and return the model module (e.g. ``HiSem``)."""
    from changecap.models.io import load_model as _load_model

    return _load_model(path, **kwargs)
