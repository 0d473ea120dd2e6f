"""Mixed precision: bf16 autocast on CPU and CUDA alike (no loss scaling is needed with bf16).

The precision names and the autocast context live in :mod:`changecap.models.precision`, shared with inference;
the engine re-exports them under their historical import path.
"""

from __future__ import annotations

from changecap.models.precision import PRECISIONS, autocast

__all__ = ["PRECISIONS", "autocast"]
