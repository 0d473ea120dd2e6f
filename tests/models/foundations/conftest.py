"""Tiny inputs for the pretraining targets: SAM configs, a saved SAM, a word-level tokenizer, synthetic batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

#: a SAM vision encoder small enough for unit tests (32 px, patch 8 → 4×4 tokens, one windowed and one global block)
TINY_SAM: dict[str, Any] = {
    "hidden_size": 24,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "mlp_dim": 32,
    "output_channels": 8,
    "image_size": 32,
    "patch_size": 8,
    "window_size": 2,
    "global_attn_indexes": [1],
}

WORDS = ["a", "house", "road", "pond", "woods", "on", "the", "left", "right", "top", "bottom", "with", "two", "and"]


def colour_batch(n: int, num_classes: int, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """Images whose 8×8-pixel blocks are coloured by their land-cover class (plus noise), and the class maps."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(num_classes, (n, size // 8, size // 8), generator=g)
    landcover = blocks.repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)  # [n, size, size]
    palette = torch.randn(num_classes, 3, generator=g)  # [K, 3]
    image = palette[landcover].permute(0, 3, 1, 2) + 0.1 * torch.randn(n, 3, size, size, generator=g)
    landcover[:, :2, :2] = 255  # a few unlabelled pixels
    return {"image": image, "landcover": landcover}


def save_tokenizer(folder: Path) -> Path:
    """A word-level ``PreTrainedTokenizerFast`` over WORDS, saved as ``from_pretrained`` reads it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<pad>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>").save_pretrained(folder)
    return folder


def save_sam(folder: Path, seed: int = 0, **fields: Any) -> Path:
    """A randomly initialised tiny ``SamVisionModel`` saved with ``save_pretrained`` (the real weights' format)."""
    from transformers import SamVisionConfig, SamVisionModel

    torch.manual_seed(seed)
    SamVisionModel(SamVisionConfig(**{**TINY_SAM, "initializer_range": 0.02, **fields})).save_pretrained(folder)
    return folder


@pytest.fixture
def tokenizer_dir(tmp_path: Path) -> Path:
    return save_tokenizer(tmp_path / "tokenizer")


@pytest.fixture
def sam_dir(tmp_path: Path) -> Path:
    return save_sam(tmp_path / "sam")
