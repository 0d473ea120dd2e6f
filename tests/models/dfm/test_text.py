"""CaptionEmbeddings: a real sentence-transformers folder, the on-disk cache (encoder calls counted), the built-in
bag-of-words encoder, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from changecap.errors import ModelError
from changecap.models.dfm.text import BagOfWordsEncoder, CaptionEmbeddings

CAPTIONS = ["a house is built on the left", "the scene is the same as before", "a road is built"]


def test_embeddings_are_cached_on_disk(tmp_path: Path, sentence_model: Path) -> None:
    first = CaptionEmbeddings(str(sentence_model), tmp_path, batch_size=2)
    assert first.ensure(CAPTIONS) == 3 and first.encoder_calls == 2  # batches of 2
    vectors = first.lookup(CAPTIONS[::-1])
    assert vectors.shape == (3, 16) and first.encoder_calls == 2  # looked up, not re-encoded
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)  # the model's Normalize module
    second = CaptionEmbeddings(str(sentence_model), tmp_path)
    assert second.ensure(CAPTIONS) == 0 and second.encoder_calls == 0
    assert torch.equal(second.lookup(CAPTIONS), first.lookup(CAPTIONS))
    second.lookup(["a new caption"])  # an unseen text is encoded once and added
    assert second.encoder_calls == 1 and len(CaptionEmbeddings(str(sentence_model), tmp_path).texts) == 4


def test_the_cache_is_per_sentence_model(tmp_path: Path, sentence_model: Path) -> None:
    a = CaptionEmbeddings(str(sentence_model), tmp_path)
    b = CaptionEmbeddings("builtin:bag-of-words-8", tmp_path)
    assert a.path != b.path
    b.ensure(CAPTIONS)
    assert b.lookup(CAPTIONS).shape == (3, 8) and a.ensure(CAPTIONS) == 3


def test_the_cache_file_is_written_atomically_with_the_umask_mode(tmp_path: Path) -> None:
    import os

    cache = CaptionEmbeddings("builtin:bag-of-words-8", tmp_path / "cache")
    victim = tmp_path / "victim"
    victim.write_text("precious")
    cache.path.parent.mkdir(parents=True, exist_ok=True)
    planted = cache.path.with_name(f".{cache.path.name}.{os.getpid()}.tmp")  # a name a writer could predict
    planted.symlink_to(victim)
    old_umask = os.umask(0o027)
    try:
        cache.ensure(CAPTIONS)
    finally:
        os.umask(old_umask)
    assert victim.read_text() == "precious" and cache.path.stat().st_mode & 0o777 == 0o640  # not safetensors' 0600
    assert sorted(p.name for p in cache.path.parent.iterdir()) == sorted([cache.path.name, planted.name])


def test_bag_of_words_encoder() -> None:
    enc = BagOfWordsEncoder(64)
    v = enc.encode(["a house is built", "A house is built!", "trees are removed", ""])
    assert v.shape == (4, 64) and torch.allclose(v[0], v[1])  # case and punctuation do not matter
    assert float(v[0] @ v[2]) < 0.6 and float(v[3].abs().sum()) == 0.0
    assert torch.equal(BagOfWordsEncoder(64).encode(["a house"]), enc.encode(["a house"]))  # fixed, not random


def test_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot load the sentence encoder"):
        CaptionEmbeddings(str(tmp_path / "missing"), tmp_path).ensure(["x"])
    with pytest.raises(ModelError, match="expected builtin:bag-of-words or"):
        CaptionEmbeddings("builtin:bag-of-words-x", tmp_path).ensure(["x"])
    damaged = CaptionEmbeddings("builtin:bag-of-words-8", tmp_path)
    damaged.path.parent.mkdir(parents=True, exist_ok=True)
    damaged.path.write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="unreadable caption-embedding cache"):
        CaptionEmbeddings("builtin:bag-of-words-8", tmp_path)
