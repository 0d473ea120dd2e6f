"""A tiny random-init Semantic-CC (SAM 2 blocks at 64 px, 1 neck unit, tiny Q-Former and LLaMA) for CPU tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.models.changes import with_changes

WORDS = ["a", "house", "is", "built", "on", "the", "left", "scene", "same", "as", "before", "road"]

TINY: dict[str, Any] = {
    "architecture": "semantic_cc",
    "encoder": {
        "config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_dim": 64,
                   "output_channels": 16, "image_size": 64, "patch_size": 16, "window_size": 2,
                   "global_attn_indexes": [1]},
        "lora": {"r": 2, "alpha": 4},
    },
    "neck": {"units": 1, "cc_dim": 24, "cc_heads": 2, "cd_heads": 2},
    "cd_decoder": {"fpn_dim": 16},
    "caption": {
        "qformer": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32,
                    "encoder_hidden_size": 24},
        "num_query_tokens": 4,
        "llm_config": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 256,
                       "tokenizer_words": WORDS},
        "llm_lora": {"r": 2, "alpha": 4},
        "generation": {"max_new_tokens": 6},
    },
}  # fmt: skip


def tiny(**changes: Any) -> dict[str, Any]:
    """TINY with dotted-key changes, e.g. ``tiny(**{"encoder.bcsf_placement": "windowed"})``."""
    return with_changes(TINY, changes)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> Iterator[None]:
    yield
