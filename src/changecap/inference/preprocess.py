"""How a trained model wants its images: size, resizing rule and normalisation.

Saved beside the weights as ``preprocess.json`` (like transformers' ``preprocessor_config.json``) so that
``ChangeCaptioner`` and ``changecap evaluate`` feed a model exactly what it was trained on.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from changecap.errors import ModelError

PREPROCESS_FILE = "preprocess.json"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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
    resize_mode: str = "clip"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        if self.image_size <= 0:
            raise ModelError(f"preprocess.image_size must be positive, got {self.image_size}")
        if self.resize_mode not in ("clip", "resize"):
            raise ModelError(f"preprocess.resize_mode must be 'clip' or 'resize', got {self.resize_mode!r}")
        self.mean = tuple(float(x) for x in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(x) for x in self.std)  # type: ignore[assignment]
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ModelError("preprocess.mean and preprocess.std need 3 values (RGB)")

    def save(self, model_dir: str | os.PathLike[str]) -> Path:
        p = Path(model_dir) / PREPROCESS_FILE
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str], default_image_size: int = 224) -> PreprocessConfig:
        """Read ``preprocess.json``; a model without one (e.g. a converted checkpoint) gets CLIP's preprocessing."""
        p = Path(model_dir) / PREPROCESS_FILE
        if not p.exists():
            return cls(image_size=default_image_size)
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ModelError(f"{p}: not valid JSON ({e})") from None
        unknown = set(data) - {"image_size", "resize_mode", "mean", "std"}
        if unknown:
            raise ModelError(f"{p}: unknown field(s) {sorted(unknown)}")
        return cls(**data)
