"""Official HiSem checkpoint → changecap model directory (and back).

Placeholder while the model modules are being written; see :func:`convert_hisem_official`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def official_to_changecap(*args: Any, **kwargs: Any) -> Any:  # pragma: no cover - filled in below
    raise NotImplementedError


def export_hisem_official(*args: Any, **kwargs: Any) -> Any:  # pragma: no cover
    raise NotImplementedError


def convert_hisem_official(*args: Any, **kwargs: Any) -> Path:  # pragma: no cover
    raise NotImplementedError
