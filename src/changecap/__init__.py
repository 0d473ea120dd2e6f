"""changecap: remote sensing image change captioning (RSICC) toolkit.

>>> import changecap
>>> model = changecap.load_model("runs/hisem/best")   # a saved model directory or a Hub repo id  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from changecap.version import __version__

__all__ = ["__version__", "load_model"]


def load_model(path: str, **kwargs: Any) -> Any:
    """Load a saved changecap model directory (or Hugging Face Hub repo id) and return the model module.

    Imported lazily so ``import changecap`` stays light; no module of the package imports this root package, so the
    lazy import cannot form a cycle (``tests/test_layers.py`` checks both).
    """
    from changecap.models.io import load_model as _load_model

    return _load_model(path, **kwargs)
