"""Text tokenizers of the pretrained foundations: a small byte-level BPE trained on the training captions.

Choice: byte-level BPE (the ``tokenizers`` library, as GPT-2's), wrapped as a ``transformers`` fast tokenizer and
saved with the model, so ``AutoTokenizer.from_pretrained(DIR)`` loads it anywhere. Byte-level because it never
produces an unknown token: a user's captions, Semantic-CC's prompt and a new place name always encode and decode
back to the same text; on a closed caption vocabulary such as SynthCC's the merges end with every frequent word a
single token, so it is as compact as a word-level vocabulary. Text is NFKC-normalised and lower-cased (as CLIP's
tokenizer); pieces keep their leading space (``Ġhouse``) and no space is added in front of a text, so a caption
encoded on its own (as Semantic-CC encodes its targets, after the prompt's tokens) gets the ids it was pretrained
with.

Special tokens: ``<pad>`` 0, ``<unk>`` 1 (never produced; present for code that expects one), ``<s>`` 2 (bos),
``</s>`` 3 (eos). Encoding with special tokens gives ``<s> … </s>`` (CLIP's text tower pools at the first ``</s>``;
its legacy rule for an eos id of 2 is avoided on purpose). ``added_tokens`` (e.g. Semantic-CC's end symbol
``###``) are always one token.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from changecap.schema import require

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<unk>", "<s>", "</s>")
PAD, UNK, BOS, EOS = SPECIAL_TOKENS


@dataclass
class TokenizerConfig:
    """The BPE tokenizer trained on the training captions (``model.tokenizer``).

    ``vocab_size`` is an upper bound (256 byte symbols and the 4 special tokens included): merges stop earlier when
    no pair occurs ``min_frequency`` times. ``max_length`` bounds an encoded caption, special tokens included.
    """

    vocab_size: int = 2048
    min_frequency: int = 2
    max_length: int = 48

    def validate(self, prefix: str = "model.tokenizer") -> None:
        require(self.vocab_size >= 300, f"{prefix}.vocab_size", f"must be >= 300 (256 bytes + specials), got "
                f"{self.vocab_size}")  # fmt: skip
        require(self.min_frequency >= 1, f"{prefix}.min_frequency", f"must be >= 1, got {self.min_frequency}")
        require(self.max_length >= 4, f"{prefix}.max_length", f"must be >= 4, got {self.max_length}")


def train_tokenizer(texts: Iterable[str], config: TokenizerConfig, added_tokens: Sequence[str] = ()) -> Any:
    """A ``transformers`` fast tokenizer (module docstring) trained on ``texts``; deterministic for the same texts
    in the same order."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}", special_tokens=[(BOS, bos), (EOS, eos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        model_max_length=config.max_length,
    )  # fmt: skip
    if added_tokens:
        fast.add_tokens([AddedToken(t, normalized=False, single_word=False) for t in added_tokens])
    return fast
