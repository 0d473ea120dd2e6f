"""What the pretraining modules share: atomic directory writes and loading a SAM vision encoder at a chosen size."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from changecap.errors import ModelError, first_line
from changecap.models.semantic_cc.encoder import load_resized_sam_weights, sam_vision_config


def write_directory(out_dir: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on an empty temporary folder beside ``out_dir``, then move its files into ``out_dir``.

    A new ``out_dir`` appears complete or not at all; into an existing one each file is replaced by a rename, so an
    interrupted save never leaves a half-written file. Other files already in ``out_dir`` are left alone.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ModelError(f"{out}: exists and is not a directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise ModelError(f"{out}: cannot write ({first_line(e)})") from None
    try:
        write(tmp)
        if not out.exists():
            os.replace(tmp, out)
            return out
        for path in sorted(tmp.iterdir()):
            os.replace(path, out / path.name)
    except OSError as e:
        raise ModelError(f"{out}: cannot write ({first_line(e)})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_sam_vision_encoder(name_or_dir: str, image_size: int | None, field: str) -> tuple[nn.Module, dict[str, Any]]:
    """A SAM checkpoint's vision encoder (``SamVisionModel`` or ``SamModel`` directory, or a Hub id) and its
    ``SamVisionConfig`` fields, at ``image_size`` (None: the checkpoint's own), with the position tables resized as
    Semantic-CC resizes them (``load_resized_sam_weights``)."""
    from transformers import SamVisionConfig, SamVisionModel

    name = str(name_or_dir)
    local = Path(name).expanduser()
    if name.startswith(("/", ".", "~")) and not local.is_dir():
        raise ModelError(f"{field} '{name}': no such directory")
    try:
        source = SamVisionConfig.from_pretrained(str(local) if local.is_dir() else name)
    except (OSError, ValueError) as e:
        reason = first_line(e)
        raise ModelError(f"{field} '{name}': not a SAM checkpoint, or not available offline ({reason})") from None
    known = set(SamVisionConfig().to_dict())
    fields = {k: v for k, v in source.to_dict().items() if k in known}
    if image_size is not None:
        fields["image_size"] = image_size
    cfg = sam_vision_config(fields, field)
    with torch.device("meta"):
        sam = SamVisionModel(cfg).vision_encoder  # allocated below; every weight is loaded next
    sam = sam.to_empty(device="cpu")
    load_resized_sam_weights(sam, str(local) if local.is_dir() else name)
    return sam, fields
