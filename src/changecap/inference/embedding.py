"""The sentence encoder behind the optional embedding-similarity metric (``--embedding-model``).

:func:`sentence_embedder` turns a sentence-transformers model (a Hub id such as ``all-mpnet-base-v2``, a local
folder, or ``builtin:bag-of-words`` which needs no weights) into the ``embed(texts) -> [len(texts), d]`` callable
that :mod:`changecap.metrics.embedding` takes. Embeddings are cached on disk per model
(:class:`~changecap.models.dfm.text.CaptionEmbeddings`, default ``~/.cache/changecap/caption_embeddings``), so a
caption is encoded once across evaluations and comparisons. Loading honours ``HF_HUB_OFFLINE``: offline, a Hub id
loads only when it is in the local Hugging Face cache; otherwise the error says so in one line.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from changecap.metrics.embedding import Embedder
from changecap.models.dfm.text import CaptionEmbeddings

OPTION = "--embedding-model"


def _folder_fingerprint(folder: Path) -> str:
    """A short hash of the folder's files (relative names, sizes, modification times): a re-saved model gets a
    new cache file instead of stale embeddings."""
    h = hashlib.sha1()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def cache_key(model: str) -> str:
    """The cache identity of ``model``: a local folder by its absolute path and content fingerprint, anything else
    (a Hub id, ``builtin:...``) by its name."""
    path = Path(model).expanduser()
    if path.is_dir():
        resolved = path.resolve()
        return f"{resolved}@{_folder_fingerprint(resolved)}"
    return model


def sentence_embedder(
    model: str, cache_dir: str | os.PathLike[str] | None = None, batch_size: int = 64
) -> tuple[Embedder, str]:
    """``(embed, label)``: the encoder as a callable returning float arrays, and the label results carry (the model
    as given). Nothing is loaded until the first call."""
    folder = Path(model).expanduser()
    load = str(folder) if folder.is_dir() else model
    embeddings = CaptionEmbeddings(load, cache_dir, batch_size, option=OPTION, cache_key=cache_key(model))

    def embed(texts: Sequence[str]) -> np.ndarray:
        return embeddings.lookup(list(texts)).numpy().astype(np.float64)  # [len(texts), d]

    return embed, model
