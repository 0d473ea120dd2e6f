"""What the pretraining modules share: loading a SAM vision encoder at a chosen size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from changecap.errors import ModelError, first_line
from changecap.models.semantic_cc.encoder import load_resized_sam_weights, sam_vision_config


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
