"""Phase filters read the pair records, never the images."""

from __future__ import annotations

from pathlib import Path

import pytest

from changecap.data.datasets import open_dataset
from changecap.data.vocab import Vocabulary
from changecap.engine.objectives.filters import (
    changed_pairs,
    pairs_with_captions,
    pairs_with_mask,
    pairs_with_mask_and_captions,
    unchanged_pairs,
)
from tests.data.fakes import make_levir, make_second_cc


@pytest.mark.parametrize(("fmt", "masks"), [("levir-mci", True), ("levir-cc", False), ("second-cc", True)])
def test_filters_select_by_record(tmp_path: Path, fmt: str, masks: bool) -> None:
    pairs = {"train": 6, "val": 2, "test": 2}
    make = make_second_cc if fmt == "second-cc" else lambda r, p, s: make_levir(r, fmt, p, s)
    root = make(tmp_path / fmt, pairs, 16)
    vocab = Vocabulary.build([["a"]], threshold=0)
    ds = open_dataset(root, fmt, "train", vocab=vocab, max_length=20)
    for path in root.rglob("*.png"):
        path.unlink()  # the filters must not read any image
    assert [i for i in range(len(ds)) if changed_pairs(ds, i)] == [0, 2, 4]  # fakes: even items changed
    assert [i for i in range(len(ds)) if unchanged_pairs(ds, i)] == [1, 3, 5]
    assert all(pairs_with_captions(ds, i) for i in range(len(ds)))
    assert [pairs_with_mask(ds, i) for i in range(len(ds))] == [masks] * 6
    assert [pairs_with_mask_and_captions(ds, i) for i in range(len(ds))] == [masks] * 6


def test_a_dataset_without_records_is_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match="has no record"):
        changed_pairs([1, 2], 0)
