"""The byte-level BPE tokenizer the text parts train: special ids, lossless round trips, added tokens, save/load."""

from __future__ import annotations

from pathlib import Path

from changecap.models.foundations.tokenizer import TokenizerConfig, train_tokenizer
from tests.models.foundations.tiny_targets import CAPTIONS


def test_special_tokens_and_template() -> None:
    tok = train_tokenizer(CAPTIONS * 4, TokenizerConfig(vocab_size=400))
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    ids = tok("the scene")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok("the scene", add_special_tokens=False)["input_ids"] == ids[1:-1]


def test_frequent_words_are_single_tokens_and_any_text_round_trips() -> None:
    tok = train_tokenizer(CAPTIONS * 4, TokenizerConfig(vocab_size=400))
    assert len(tok("the scene is the same", add_special_tokens=False)["input_ids"]) == 5
    for text in ("a new roundabout near zürich!", "buildings to the right of grass"):
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text  # bytes: never <unk>
    assert tok.decode(tok("Grass ON the Left")["input_ids"], skip_special_tokens=True) == "grass on the left"


def test_added_tokens_are_one_token_and_pieces_concatenate() -> None:
    tok = train_tokenizer(CAPTIONS * 4, TokenizerConfig(vocab_size=400), added_tokens=["###"])
    (end,) = tok("###", add_special_tokens=False)["input_ids"]
    caption = tok("the scene###", add_special_tokens=False)["input_ids"]
    assert caption[-1] == end and tok("the scene", add_special_tokens=False)["input_ids"] == caption[:-1]
    prompt = tok("###Answer: ", add_special_tokens=False)["input_ids"]
    assert prompt[0] == end
    assert tok.decode(prompt + caption) == "###answer: the scene###"  # pieces join (lower-cased)


def test_deterministic_and_loadable(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    a = train_tokenizer(CAPTIONS * 4, TokenizerConfig(vocab_size=400))
    b = train_tokenizer(CAPTIONS * 4, TokenizerConfig(vocab_size=400))
    assert a.get_vocab() == b.get_vocab()
    a.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in CAPTIONS:
        assert loaded(text)["input_ids"] == a(text)["input_ids"]
    assert loaded.bos_token == "<s>" and loaded.eos_token_id == 3
