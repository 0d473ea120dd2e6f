"""Tiny configurations of the pretraining targets and their inputs, for CPU tests."""

from __future__ import annotations

from typing import Any

from changecap.data.pretrain_data import resolve_mean_std
from changecap.models.foundations.target import PretrainInputs

CAPTIONS: tuple[str, ...] = (
    "grass on the left and water on the right",
    "the left side is bare land , the right side buildings",
    "buildings to the right of grass",
    "two houses are built by the road at the bottom",
    "the scene is the same as before",
)

TINY_CLIP: dict[str, Any] = {
    "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "patch_size": 8},
    "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
    "projection_dim": 16,
    "tokenizer": {"vocab_size": 400, "max_length": 16},
}  # fmt: skip

TINY_LM: dict[str, Any] = {
    "llm": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64},
    "tokenizer": {"vocab_size": 400, "max_length": 32},
}  # fmt: skip


def inputs(image_size: int = 16, texts: tuple[str, ...] = CAPTIONS * 4) -> PretrainInputs:
    mean, std = resolve_mean_std("clip")
    return PretrainInputs(texts, image_size, "resize", mean, std, None, 0)
