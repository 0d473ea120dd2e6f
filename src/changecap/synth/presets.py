"""SynthCC presets, split proportions and argument validation.

The presets trade size for speed: ``tiny`` feeds unit tests (seconds), ``small`` is meant for CPU training of a
small model within minutes, ``full`` mirrors LEVIR-CC (10,077 pairs of 256 px). Scenes are laid out in a resolution
free unit square (one unit = 128 m, the ground extent of a 256 px LEVIR-CC tile at 0.5 m/px), so the same seed gives
the same scenes at every ``size``; only the pixel density changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from changecap.errors import ConfigError

SPLITS: tuple[str, ...] = ("train", "val", "test")
# LEVIR-CC pairs per split: the generator keeps these proportions for any number of pairs.
LEVIR_SPLIT_PAIRS: dict[str, int] = {"train": 6815, "val": 1333, "test": 1929}
LEVIR_TOTAL_PAIRS = sum(LEVIR_SPLIT_PAIRS.values())  # 10,077

MIN_SIZE = 32  # below this a house is 2-3 px wide and the captions stop being checkable by eye
MAX_SIZE = 1024  # the renderer keeps a few float32 canvases per pair; larger tiles are not useful for RSICC
MAX_PAIRS = 1_000_000


@dataclass(frozen=True)
class Preset:
    """Default number of pairs and tile size of a named preset."""

    name: str
    pairs: int
    size: int
    description: str


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", 60, 64, "unit tests: 60 pairs of 64 px, a few seconds"),
    "small": Preset("small", 2400, 128, "CPU training: 2,400 pairs of 128 px (objects stay visible at 64 px)"),
    "full": Preset("full", LEVIR_TOTAL_PAIRS, 256, "LEVIR-CC sized: 10,077 pairs of 256 px"),
}


@dataclass(frozen=True)
class SynthSettings:
    """Resolved generation settings (preset defaults with explicit overrides applied and validated)."""

    preset: str
    pairs: int
    size: int
    seed: int
    workers: int


def resolve_settings(
    *, preset: str = "small", pairs: int | None = None, size: int | None = None, seed: int = 0, workers: int = 1
) -> SynthSettings:
    """Apply the preset defaults and validate every value; user mistakes raise :class:`ConfigError`."""
    if preset not in PRESETS:
        raise ConfigError("preset", f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    n = p.pairs if pairs is None else pairs
    s = p.size if size is None else size
    for field, value in (("pairs", n), ("size", s), ("seed", seed), ("workers", workers)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(field, f"must be an integer, got {value!r}")
    if not 1 <= n <= MAX_PAIRS:
        raise ConfigError("pairs", f"must be between 1 and {MAX_PAIRS}, got {n}")
    if not MIN_SIZE <= s <= MAX_SIZE:
        raise ConfigError("size", f"must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {s}")
    if seed < 0:
        raise ConfigError("seed", f"must be >= 0, got {seed}")
    if workers < 1:
        raise ConfigError("workers", f"must be >= 1, got {workers}")
    return SynthSettings(preset=preset, pairs=n, size=s, seed=seed, workers=workers)


def split_sizes(pairs: int) -> dict[str, int]:
    """Pairs per split in LEVIR-CC proportions (exactly 6815/1333/1929 for 10,077 pairs).

    Val and test are rounded from their shares and train takes the rest, so every pair lands in a split and tiny
    sets still get a val and a test pair once there are a handful of pairs.
    """
    val = round(pairs * LEVIR_SPLIT_PAIRS["val"] / LEVIR_TOTAL_PAIRS)
    test = round(pairs * LEVIR_SPLIT_PAIRS["test"] / LEVIR_TOTAL_PAIRS)
    if pairs >= 3:
        val, test = max(val, 1), max(test, 1)
    else:
        val, test = 0, 0
    return {"train": pairs - val - test, "val": val, "test": test}
