"""SynthCC: a procedural bi-temporal change-captioning benchmark written in the LEVIR-MCI layout.

>>> from changecap.synth import generate_synthcc
>>> root = generate_synthcc("data/synthcc", preset="tiny", progress=False)   # doctest: +SKIP
"""

from __future__ import annotations

from changecap.synth.figure import render_figure
from changecap.synth.generate import ANNOTATION_FILE, META_FILE, SYNTHCC_VERSION, generate_synthcc, render_pair
from changecap.synth.landcover import LANDCOVER_CLASSES
from changecap.synth.presets import PRESETS, Preset, resolve_settings, split_sizes
from changecap.synth.stats import format_statistics, synthcc_statistics

__all__ = [
    "ANNOTATION_FILE",
    "LANDCOVER_CLASSES",
    "META_FILE",
    "PRESETS",
    "SYNTHCC_VERSION",
    "Preset",
    "format_statistics",
    "generate_synthcc",
    "render_figure",
    "render_pair",
    "resolve_settings",
    "split_sizes",
    "synthcc_statistics",
]
