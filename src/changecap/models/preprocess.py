"""How a trained model wants its images: size, resizing rule and normalisation (``preprocess.json``).

Saved beside the weights (like transformers' ``preprocessor_config.json``) by the trainer, read by
``ChangeCaptioner`` and ``changecap evaluate``, so a model is fed exactly what it was trained on. It belongs to the
model directory, so it lives here, next to ``save_model``/``load_model``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from changecap.data.files import atomic_write_text
from changecap.errors import ModelError
from changecap.schema import from_dict, require, to_dict

PREPROCESS_FILE = "preprocess.json"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: The largest model input side accepted: larger than any supported model's (224–1024 px), small enough that a
#: batch of pairs fits in memory; a bigger value in ``preprocess.json`` is a damaged file, not a model.
MAX_IMAGE_SIZE = 8192


@dataclass
class PreprocessConfig:
    """Image preprocessing of a model.

    Attributes:
        image_size: side of the square model input in pixels.
        resize_mode: ``"clip"`` (shorter side to ``image_size`` with bicubic resampling, then centre crop — CLIP's
            rule) or ``"resize"`` (plain bicubic resize to ``image_size × image_size``).
        mean: per-channel mean on the 0–1 scale.
        std: per-channel standard deviation on the 0–1 scale.
    """

    image_size: int = 224
    resize_mode: Literal["clip", "resize"] = "clip"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        self.mean = tuple(float(x) for x in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(x) for x in self.std)  # type: ignore[assignment]
        self.validate()

    def validate(self, prefix: str = "preprocess") -> None:
        size = self.image_size
        require(0 < size <= MAX_IMAGE_SIZE, f"{prefix}.image_size", f"must be in 1..{MAX_IMAGE_SIZE}, got {size}")
        require(
            self.resize_mode in ("clip", "resize"),
            f"{prefix}.resize_mode",
            f"must be 'clip' or 'resize', got {self.resize_mode!r}",
        )
        require(len(self.mean) == 3, f"{prefix}.mean", f"needs 3 values (RGB), got {list(self.mean)}")
        require(len(self.std) == 3, f"{prefix}.std", f"needs 3 values (RGB), got {list(self.std)}")
        require(all(math.isfinite(m) for m in self.mean), f"{prefix}.mean", f"must be finite, got {list(self.mean)}")
        # images are divided by std: 0 would divide by zero, NaN/inf would make every input NaN or 0
        ok = all(math.isfinite(s) and s > 0 for s in self.std)
        require(ok, f"{prefix}.std", f"must be finite and positive, got {list(self.std)}")

    def save(self, model_dir: str | os.PathLike[str]) -> Path:
        p = Path(model_dir) / PREPROCESS_FILE
        atomic_write_text(p, json.dumps(to_dict(self), indent=2))
        return p

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str], default_image_size: int = 224) -> PreprocessConfig:
        """Read ``preprocess.json``; a model without one (e.g. a converted checkpoint) gets CLIP's preprocessing."""
        p = Path(model_dir) / PREPROCESS_FILE
        if not p.exists():
            return cls(image_size=default_image_size)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))  # NaN / Infinity are read, then rejected by field
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelError(f"{p}: not valid JSON ({e})") from None
        except OSError as e:
            raise ModelError(f"{p}: cannot be read ({e.strerror or type(e).__name__})") from None
        return from_dict(cls, data, "preprocess", path=p)
