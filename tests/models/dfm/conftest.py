"""A tiny random DFM (CLIP ViT 2 blocks at 32 px, 1 temporal layer, a random 2-level change detector as its prior)
and a tiny random sentence-transformers model saved to a folder, for CPU tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.models.changes import with_changes

TINY: dict[str, Any] = {
    "architecture": "dfm",
    "encoder": {"config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                           "num_attention_heads": 2, "image_size": 32, "patch_size": 8}, "trainable_layers": 1},
    "temporal": {"layers": 1, "heads": 2, "ffn_mult": 2},
    "prior": {"config": {"image_size": 32, "encoder": {"widths": [8, 16], "blocks": 1}, "decoder_dim": 8}},
    "jfm": {"heads": 2, "ffn_mult": 2},
    "decoder": {"dim": 32, "vocab_size": 16, "max_length": 12, "heads": 2},
    "text_dim": 16,
}  # fmt: skip

WORDS = ["a", "house", "is", "built", "on", "the", "left", "scene", "same", "as", "before", "road", "there", "no",
         "change", "right", "of", "many", "trees", "are", "removed", "difference", "nothing", "has"]  # fmt: skip


def tiny(**changes: Any) -> dict[str, Any]:
    """TINY with dotted-key changes, e.g. ``tiny(**{"jfm.bsa": "cross"})``."""
    return with_changes(TINY, changes)


def make_sentence_model(folder: Path, dim: int = 16) -> Path:
    """A random 1-layer BERT with mean pooling and normalisation, saved as a sentence-transformers folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    try:  # sentence-transformers >= 5.2
        from sentence_transformers.sentence_transformer import modules
    except ImportError:
        from sentence_transformers import models as modules

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=dim, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=2 * dim, max_position_embeddings=64)  # fmt: skip
    BertModel(config).save_pretrained(folder / "bert")
    BertTokenizerFast(str(vocab)).save_pretrained(folder / "bert")
    transformer = modules.Transformer(str(folder / "bert"))
    pooling = modules.Pooling(dim, "mean")
    SentenceTransformer(modules=[transformer, pooling, modules.Normalize()], device="cpu").save(str(folder / "st"))
    return folder / "st"


@pytest.fixture(scope="session")
def sentence_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sentence_model(tmp_path_factory.mktemp("sentence"))
