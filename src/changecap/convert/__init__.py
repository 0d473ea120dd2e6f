"""Converters between published checkpoints and changecap model directories.

* :func:`convert_hisem_official` — official HiSem ``.pth`` (``encoder_dict`` / ``encoder_trans_dict`` /
  ``decoder_dict``) → changecap model directory (``changecap convert hisem-official``);
* :func:`export_hisem_official` — a changecap HiSem module → the official layout (round trip).
"""

from __future__ import annotations

from changecap.convert.hisem_official import (
    convert_hisem_official,
    export_hisem_official,
    official_to_changecap,
)
from changecap.convert.official_layout import (
    OfficialHiSemDims,
    infer_official_dims,
    load_official_checkpoint,
    synthetic_official_checkpoint,
    validate_official,
)
from changecap.convert.openai_clip import openai_clip_visual_to_hf

__all__ = [
    "OfficialHiSemDims",
    "convert_hisem_official",
    "export_hisem_official",
    "infer_official_dims",
    "load_official_checkpoint",
    "official_to_changecap",
    "openai_clip_visual_to_hf",
    "synthetic_official_checkpoint",
    "validate_official",
]
