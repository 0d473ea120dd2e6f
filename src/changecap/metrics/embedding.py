"""Embedding similarity: a sentence encoder's cosine similarity between a hypothesis and its references.

Per pair the score is the **best** cosine similarity of the hypothesis to any of its references (a caption only has
to say what one annotator said), and the corpus score is the mean over pairs. It rewards paraphrases the n-gram
metrics miss ("a house is built" / "a new building appears") but depends on the encoder, so it is always reported
with the encoder's name, beside the standard metrics and never instead of them.

The metric takes an ``embed(texts) -> array [len(texts), d]`` callable and never loads a model itself: the
inference layer builds it (``changecap.inference.embedding.sentence_embedder``: any sentence-transformers model,
embeddings cached on disk). Texts are the captions as written (not the protocol's id strings), each distinct text
embedded once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from changecap.metrics.ngrams import check_pairs

Embedder = Callable[[Sequence[str]], np.ndarray]
EMBEDDING_KEY = "EmbedSim"


def embedding_similarity(
    hyps: Sequence[str], refs: Sequence[Sequence[str]], embed: Embedder
) -> tuple[float, list[float]]:
    """Mean over pairs of the best hypothesis-reference cosine similarity, and the per-pair values."""
    check_pairs(hyps, refs)
    texts = list(dict.fromkeys([*hyps, *(r for rs in refs for r in rs)]))
    vectors = np.asarray(embed(texts), dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise ValueError(f"embed returned shape {vectors.shape} for {len(texts)} texts; expected [{len(texts)}, d]")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)  # a zero vector: similarity 0
    row = {t: i for i, t in enumerate(texts)}
    ref_rows = np.array([row[r] for rs in refs for r in rs])  # [M] all references, pair after pair
    owner = np.repeat(np.arange(len(refs)), [len(rs) for rs in refs])  # [M] the pair of each reference
    hyp_rows = np.array([row[h] for h in hyps])  # [N]
    sims = np.einsum("md,md->m", unit[hyp_rows[owner]], unit[ref_rows])  # [M] cosine of each reference
    starts = np.concatenate([[0], np.cumsum([len(rs) for rs in refs])[:-1]])
    best = np.maximum.reduceat(sims, starts)  # [N] the best reference of each pair
    return float(best.mean()), best.tolist()
