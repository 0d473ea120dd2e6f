from __future__ import annotations

import json
from pathlib import Path

import pytest

from changecap.data import Vocabulary, tokenize
from changecap.data.text import changed_from_captions, is_no_change
from changecap.errors import DataError
from tests.conftest import require_shared


def test_tokenize_rule() -> None:
    assert tokenize(" the road, on the left; is built .") == [
        "the",
        "road",
        ",",
        "on",
        "the",
        "left",
        ";",
        "is",
        "built",
    ]
    assert tokenize("Is it?  two  t-junction.") == ["Is", "it", "two", "t-junction"]
    assert tokenize("Is IT", lower=True) == ["is", "it"]
    assert tokenize("") == []


def test_build_alphabetical_and_thresholds() -> None:
    toks = [["b", "a", ","]] * 5 + [["c"]] * 6
    gt = Vocabulary.build(toks, threshold=5, rule="gt")
    ge = Vocabulary.build(toks, threshold=5, rule="ge")
    assert gt.id_to_word == ["<NULL>", "<UNK>", "<START>", "<END>", "c"]
    assert ge.id_to_word == ["<NULL>", "<UNK>", "<START>", "<END>", ",", "a", "b", "c"]


def test_encode_decode_roundtrip() -> None:
    v = Vocabulary.from_captions(["a house is built", "a road is built"], threshold=0)
    ids = v.encode("a house is built .")
    assert len(ids) == 41 and ids[0] == 2 and ids[5] == 3 and ids[6:] == [0] * 35
    assert v.decode(ids) == "a house is built"
    assert v.encode("a tree is built", pad=False)[2] == 1  # <UNK>
    with pytest.raises(KeyError):
        v.encode("a tree", allow_unk=False)
    assert v.id_string("a house") == f"{v.id('a')} {v.id('house')}"
    assert v.id_string([2, 5, 1, 3, 0]) == "5 1"
    long = v.encode(" ".join(["a"] * 60), max_length=10)
    assert len(long) == 10 and long[-1] == 3


def test_save_load_roundtrip(tmp_path: Path) -> None:
    v = Vocabulary.from_captions(["x y z"], threshold=0)
    v.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == v
    assert json.loads((tmp_path / "vocab.json").read_text())["<END>"] == 3


def test_load_errors(tmp_path: Path) -> None:
    bad = tmp_path / "v.json"
    bad.write_text("{broken")
    with pytest.raises(DataError, match="v.json"):
        Vocabulary.load(bad)
    bad.write_text(json.dumps({"<NULL>": 0, "<UNK>": 1, "<START>": 3, "<END>": 2}))
    with pytest.raises(DataError, match="<START>"):
        Vocabulary.load(bad)
    with pytest.raises(DataError, match="not found"):
        Vocabulary.load(tmp_path / "missing.json")


def test_change_flag_from_text() -> None:
    assert is_no_change("the two scenes seem identical .")
    assert not is_no_change("a house is built")
    assert changed_from_captions(["a house is built", "houses appear"])
    assert not changed_from_captions(["there is no difference", "the scene is the same as before"])


@pytest.mark.shared
def test_legacy_vocabulary_reproduces_shipped_levir_cc_vocab() -> None:
    root = require_shared("levir-cc-tokens")
    names: dict[str, list[str]] = {s: (root / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}

    def toks(split_names: list[str]) -> list[list[str]]:
        out: list[list[str]] = []
        for n in split_names:
            out += json.loads((root / "tokens" / (Path(n).stem + ".txt")).read_text())
        return out

    all_toks = toks(names["train"] + names["val"] + names["test"])
    legacy = Vocabulary.build(all_toks, threshold=5, rule="gt")
    shipped = Vocabulary.load(root / "vocab.json")
    assert len(shipped) == 468
    assert legacy.word_to_id == shipped.word_to_id
    assert len(Vocabulary.build(all_toks, threshold=5, rule="ge")) == 501
    train_toks = toks(names["train"])
    assert len(Vocabulary.build(train_toks, threshold=5, rule="gt")) == 404
    assert len(Vocabulary.build(train_toks, threshold=5, rule="ge")) == 436
