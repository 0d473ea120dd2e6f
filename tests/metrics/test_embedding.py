"""Embedding similarity: best reference per pair, mean over pairs, each text embedded once, zero vectors, and its
place beside the standard scores in evaluate_captions."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest

from changecap.metrics import evaluate_captions
from changecap.metrics.embedding import EMBEDDING_KEY, embedding_similarity


class CountingEmbedder:
    """Bag of words over a fixed vocabulary; records every call's texts."""

    VOCAB = ["a", "house", "is", "built", "road", "trees", "removed", "no", "change", "there", "the", "scene"]

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), len(self.VOCAB)))
        for i, t in enumerate(texts):
            for w in t.split():
                if w in self.VOCAB:
                    out[i, self.VOCAB.index(w)] += 1
        return out


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    return 0.0 if nu == 0 or nv == 0 else float(u @ v / (nu * nv))


def test_best_reference_per_pair_and_mean() -> None:
    embed = CountingEmbedder()
    hyps = ["a house is built", "trees removed", "zzz"]
    refs = [["a road is built", "a house is built"], ["the trees", "road"], ["a house"]]
    score, items = embedding_similarity(hyps, refs, embed)
    (texts,) = embed.calls  # one call, each distinct text once
    assert len(texts) == len(set(texts)) == 7 and "a house is built" in texts
    vec = dict(zip(texts, CountingEmbedder()(texts)))
    expected = [max(cosine(vec[h], vec[r]) for r in rs) for h, rs in zip(hyps, refs)]
    assert items == pytest.approx(expected, abs=1e-12)
    assert items[0] == pytest.approx(1.0) and items[2] == 0.0  # identical text; a zero vector scores 0
    assert score == pytest.approx(sum(expected) / 3, abs=1e-12)


def test_wrong_embedding_shape_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"embed returned shape \(1, 3\) for 2 texts"):
        embedding_similarity(["a"], [["b"]], lambda texts: np.zeros((1, 3)))


def test_evaluate_captions_reports_it_beside_the_standard_scores() -> None:
    preds = {"p1": "a house is built", "p2": "there is no difference"}
    refs = {"p1": ["a house is built on the left", "a road is built"], "p2": ["there is no difference"]}
    plain = evaluate_captions(preds, refs, protocol="none", meteor="off")
    res = evaluate_captions(preds, refs, protocol="none", meteor="off", per_item=True, embed=CountingEmbedder(),
                            embed_label="bag-of-words test")  # fmt: skip
    assert res.scores == plain.scores and EMBEDDING_KEY not in res.scores  # never instead of a standard metric
    assert res.embedding is not None and res.embedding["model"] == "bag-of-words test"
    assert res.embedding["unchanged"] == pytest.approx(1.0) and 0 < res.embedding["changed"] < 1
    assert res.embedding["all"] == pytest.approx((res.embedding["changed"] + 1.0) / 2)
    assert res.per_item is not None and res.per_item["p2"][EMBEDDING_KEY] == pytest.approx(1.0)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["embedding_similarity"]["model"] == "bag-of-words test" and "note" in d["embedding_similarity"]
    table = res.format_table()
    assert f"{EMBEDDING_KEY}+" in table and "encoder: bag-of-words test" in table
    assert "embedding_similarity" not in plain.to_dict() and EMBEDDING_KEY not in plain.format_table()
