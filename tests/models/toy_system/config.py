"""The toy system's config: the grid of patches it reads and changecap's caption decoder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from changecap.models.parts.caption_decoder import CaptionDecoderConfig
from changecap.models.registry import ArchitectureConfig
from changecap.schema import require

NAME = "toy_system"


@dataclass
class ToyConfig(ArchitectureConfig):
    architecture: ClassVar[str] = NAME
    image_size: int = 32
    patch: int = 8  # one grid cell per patch: memory L = (image_size / patch)²
    decoder: CaptionDecoderConfig = field(default_factory=lambda: CaptionDecoderConfig(dim=16, vocab_size=4))

    @property
    def vocab_size(self) -> int:
        return self.decoder.vocab_size

    @property
    def max_length(self) -> int:
        return self.decoder.max_length

    def validate(self, prefix: str = "model") -> None:
        require(self.patch >= 1 and self.image_size % self.patch == 0, f"{prefix}.patch", "must divide image_size")
        self.decoder.validate(f"{prefix}.decoder")
