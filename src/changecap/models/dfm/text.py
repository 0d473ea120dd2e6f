"""TGCL's text side before the projection: a frozen sentence encoder (``sentence-transformers``; all-mpnet-base-v2 by
default, any Hub id or local directory; ``builtin:bag-of-words`` offline) and an on-disk cache of its caption
embeddings.

Caption embeddings never change (the encoder is frozen), so each distinct caption text is encoded once: the cache
holds one safetensors file per sentence model (``<cache>/<model slug>-<hash>.safetensors``: the embeddings [K, d] and,
in the file's metadata, the model name and the K texts in row order), written atomically. A second epoch, a resumed
run or another run on the same data only looks embeddings up; :attr:`CaptionEmbeddings.encoder_calls` counts the
encoder's batches, so that is testable.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from changecap.data.files import atomic_path
from changecap.errors import ModelError, first_line

DEFAULT_SENTENCE_MODEL = "sentence-transformers/all-mpnet-base-v2"
#: ``builtin:bag-of-words[-DIM]``: the offline stand-in (no weights to download), see :class:`BagOfWordsEncoder`
BUILTIN_PREFIX = "builtin:bag-of-words"


class BagOfWordsEncoder:
    """A sentence encoder that needs no weights: each lower-cased word gets a fixed pseudo-random Gaussian vector
    (seeded by a hash of the word), a sentence is the normalised mean of its words' vectors.

    For CPU runs and demos where no pretrained sentence model can be downloaded: identical captions get identical
    embeddings and captions sharing words get similar ones (a random projection of the bag of words), which is what
    TGCL's text side needs on templated captions. It has no notion of synonyms; real runs use all-mpnet-base-v2.
    """

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self._vectors: dict[str, torch.Tensor] = {}

    def _word(self, word: str) -> torch.Tensor:
        if word not in self._vectors:
            seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
            self._vectors[word] = torch.randn(self.dim, generator=torch.Generator().manual_seed(seed))
        return self._vectors[word]

    def get_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, sentences: Sequence[str], **_: Any) -> torch.Tensor:
        rows = []
        for sentence in sentences:
            words = re.findall(r"[a-z0-9]+", sentence.lower())
            v = torch.stack([self._word(w) for w in words]).mean(0) if words else torch.zeros(self.dim)
            rows.append(torch.nn.functional.normalize(v, dim=0))
        return torch.stack(rows)  # [N, dim]


def builtin_encoder(name: str, option: str = "loss.sentence_model") -> BagOfWordsEncoder | None:
    """``builtin:bag-of-words`` (256-d) or ``builtin:bag-of-words-DIM`` → the encoder; anything else → None.
    ``option`` names the setting in error messages."""
    if not name.startswith(BUILTIN_PREFIX):
        return None
    rest = name[len(BUILTIN_PREFIX) :]
    if rest and not (rest.startswith("-") and rest[1:].isdigit() and int(rest[1:]) > 0):
        raise ModelError(f"{option} '{name}': expected {BUILTIN_PREFIX} or {BUILTIN_PREFIX}-DIM")
    return BagOfWordsEncoder(int(rest[1:]) if rest else 256)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "changecap" / "caption_embeddings"


def cache_file(cache_dir: Path, model: str) -> Path:
    """``<cache_dir>/<readable slug>-<hash of the full name>.safetensors`` for one sentence model."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_")[-60:] or "model"
    return cache_dir / f"{slug}-{hashlib.sha1(model.encode()).hexdigest()[:10]}.safetensors"


class CaptionEmbeddings:
    """Embeddings of caption texts by a frozen sentence encoder, computed once per text and kept on disk."""

    def __init__(
        self,
        model: str = DEFAULT_SENTENCE_MODEL,
        cache_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 64,
        encoder: Any = None,
        option: str = "loss.sentence_model",
        cache_key: str | None = None,
    ) -> None:
        """``encoder`` (anything with sentence-transformers' ``encode``) replaces loading ``model`` (tests);
        ``option`` names the setting that chose ``model`` in error messages; ``cache_key`` (default: ``model``)
        names the cache file and must change whenever the encoder's weights do."""
        self.option = option
        self.model = str(model)
        self.cache_key = self.model if cache_key is None else cache_key
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.path = cache_file(self.cache_dir, self.cache_key)
        self.batch_size = batch_size
        self._encoder = encoder
        self.encoder_calls = 0
        self.texts: list[str] = []
        self.index: dict[str, int] = {}
        self.vectors = torch.zeros(0, 0)
        self.reload()

    # ------------------------------------------------------------------ disk
    def reload(self) -> None:
        """Read the cache file (another process may have written it)."""
        if not self.path.exists():
            return
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), "pt") as f:
                meta = f.metadata() or {}
                vectors = f.get_tensor("embeddings")
            texts = json.loads(meta["texts"])
        except Exception as e:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            raise ModelError(f"{self.path}: unreadable caption-embedding cache ({first_line(e)}); delete it") from None
        if meta.get("model") != self.cache_key or len(texts) != vectors.shape[0]:
            raise ModelError(f"{self.path}: the cache does not belong to sentence model '{self.model}'; delete it")
        self.texts, self.vectors = texts, vectors
        self.index = {t: i for i, t in enumerate(texts)}

    def save(self) -> None:
        """Write the cache atomically (:func:`~changecap.data.files.atomic_path`): a reader never sees half a file."""
        from safetensors.torch import save_file

        with atomic_path(self.path) as tmp:
            save_file({"embeddings": self.vectors.contiguous()}, str(tmp),
                      metadata={"model": self.cache_key, "texts": json.dumps(self.texts)})  # fmt: skip

    # ------------------------------------------------------------------ encoding
    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            self._encoder = builtin_encoder(self.model, self.option)
        if self._encoder is None:
            try:
                from sentence_transformers import SentenceTransformer

                self._encoder = SentenceTransformer(self.model, device="cpu")
            except Exception as e:  # noqa: BLE001 - offline / unknown id / not a sentence-transformers folder
                raise ModelError(
                    f"{self.option} '{self.model}': cannot load the sentence encoder (not a local "
                    f"sentence-transformers folder, not cached offline, or not such a model): {first_line(e)}"
                ) from None
        return self._encoder

    @property
    def dim(self) -> int:
        if self.vectors.numel():
            return int(self.vectors.shape[1])
        get = getattr(self.encoder, "get_embedding_dimension", None) or self.encoder.get_sentence_embedding_dimension
        return int(get())

    def ensure(self, texts: Iterable[str], progress: bool = False) -> int:
        """Encode every text not cached yet (batched), add it and save the cache; returns how many were new."""
        missing = list(dict.fromkeys(t for t in texts if t not in self.index))
        if not missing:
            return 0
        from tqdm import tqdm

        chunks = []
        starts = range(0, len(missing), self.batch_size)
        for start in tqdm(starts, desc="encoding captions", unit="batch", disable=not progress, leave=False):
            batch = missing[start : start + self.batch_size]
            with torch.inference_mode():
                out = self.encoder.encode(batch, batch_size=self.batch_size, convert_to_tensor=True,
                                          show_progress_bar=False)  # fmt: skip
            self.encoder_calls += 1
            chunks.append(torch.as_tensor(out).detach().float().cpu())
        new = torch.cat(chunks)  # [M, d]
        self.vectors = new if not self.vectors.numel() else torch.cat([self.vectors, new])
        for t in missing:
            self.index[t] = len(self.texts)
            self.texts.append(t)
        self.save()
        return len(missing)

    def lookup(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings [B, d] of ``texts`` (any text not cached yet is encoded first)."""
        self.ensure(texts)
        return self.vectors[[self.index[t] for t in texts]]
