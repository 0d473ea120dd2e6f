"""Word vocabulary in the peers' ``vocab.json`` convention (``docs/datasets.md``).

``<NULL>`` = 0 (padding), ``<UNK>`` = 1, ``<START>`` = 2, ``<END>`` = 3; every other kept word is numbered from 4 in
Python string order (so ``,`` sorts before letters). The file format is a flat JSON object ``{token: id}``, read
and written unchanged so that published vocabularies (LEVIR-CC 468 / 501 entries, WHU-CDC 568) load as they are.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch

from changecap.data.files import atomic_write_text
from changecap.data.text import tokenize
from changecap.errors import DataError

NULL, UNK, START, END = "<NULL>", "<UNK>", "<START>", "<END>"
SPECIAL_TOKENS: tuple[str, ...] = (NULL, UNK, START, END)
NULL_ID, UNK_ID, START_ID, END_ID = 0, 1, 2, 3
DEFAULT_MAX_LENGTH = 41  # longest LEVIR-CC caption (39 words) + <START> + <END>

ThresholdRule = Literal["gt", "ge"]


class Vocabulary:
    """Bidirectional token ↔ id map with encode/decode helpers."""

    def __init__(self, word_to_id: Mapping[str, int], *, source: str | None = None) -> None:
        where = source or "vocabulary"
        for i, tok in enumerate(SPECIAL_TOKENS):
            if word_to_id.get(tok) != i:
                raise DataError(source, f"special token {tok} must have id {i}", field=tok)
        ids = sorted(word_to_id.values())
        if ids != list(range(len(ids))):
            raise DataError(source, f"{where} ids must be 0..{len(ids) - 1} without gaps or duplicates")
        self.word_to_id: dict[str, int] = dict(word_to_id)
        self.id_to_word: list[str] = [""] * len(ids)
        for w, i in self.word_to_id.items():
            self.id_to_word[i] = w

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        token_lists: Iterable[Sequence[str]],
        threshold: int = 5,
        rule: ThresholdRule = "gt",
    ) -> Vocabulary:
        """Count words and keep those with ``count > threshold`` (``rule='gt'``) or ``>=`` (``rule='ge'``).

        ``token_lists`` are captions already tokenised (with or without ``<START>``/``<END>``; special tokens are
        never added twice). Which captions go in (train split only, or all splits as the published vocabularies
        did) is the caller's choice.
        """
        if rule not in ("gt", "ge"):
            raise ValueError(f"rule must be 'gt' or 'ge', got {rule!r}")
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        counts: Counter[str] = Counter()
        for toks in token_lists:
            counts.update(toks)
        keep = [w for w, c in counts.items() if (c > threshold if rule == "gt" else c >= threshold)]
        words = sorted(w for w in keep if w not in SPECIAL_TOKENS)
        mapping = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
        for w in words:
            mapping[w] = len(mapping)
        return cls(mapping)

    @classmethod
    def from_captions(
        cls, captions: Iterable[str], threshold: int = 5, rule: ThresholdRule = "gt", lower: bool = False
    ) -> Vocabulary:
        """Build from raw caption strings using the RSICC tokenisation rule."""
        return cls.build((tokenize(c, lower=lower) for c in captions), threshold=threshold, rule=rule)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocabulary:
        """Read a peers'-format ``vocab.json`` (``{token: id}``)."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(p, "vocabulary file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(p, f"not valid JSON ({e})") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in data.items()
        ):
            raise DataError(p, "expected a JSON object mapping token strings to integer ids")
        return cls(data, source=str(p))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``{token: id}`` in id order (the peers' format)."""
        ordered = {w: i for i, w in enumerate(self.id_to_word)}
        atomic_write_text(path, json.dumps(ordered))

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.id_to_word)

    def __contains__(self, word: object) -> bool:
        return word in self.word_to_id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.word_to_id == other.word_to_id

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)})"

    def id(self, word: str) -> int:
        return self.word_to_id.get(word, UNK_ID)

    # ------------------------------------------------------------------ encode / decode
    def encode(
        self,
        caption: str | Sequence[str],
        max_length: int = DEFAULT_MAX_LENGTH,
        *,
        lower: bool = False,
        allow_unk: bool = True,
        pad: bool = True,
    ) -> list[int]:
        """Caption (raw string or word tokens) → ``[<START>, w…, <END>, <NULL>…]`` of ``max_length`` ids.

        Captions longer than ``max_length - 2`` words are truncated (the ``<END>`` is kept).
        With ``allow_unk=False`` an unknown word raises ``KeyError``.
        """
        words = tokenize(caption, lower=lower) if isinstance(caption, str) else list(caption)
        words = [w for w in words if w not in (START, END)]
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        words = words[: max_length - 2]
        ids = [START_ID]
        for w in words:
            if w in self.word_to_id:
                ids.append(self.word_to_id[w])
            elif allow_unk:
                ids.append(UNK_ID)
            else:
                raise KeyError(f"word {w!r} not in vocabulary")
        ids.append(END_ID)
        if pad:
            ids += [NULL_ID] * (max_length - len(ids))
        return ids

    def encode_tensor(self, captions: Sequence[str], max_length: int = DEFAULT_MAX_LENGTH, **kw: bool) -> torch.Tensor:
        """Several captions → ``[R, max_length]`` long tensor."""
        return torch.tensor([self.encode(c, max_length, **kw) for c in captions], dtype=torch.long)

    def strip(self, ids: Iterable[int]) -> list[int]:
        """Drop ``<START>``/``<NULL>`` and cut at the first ``<END>`` (``<UNK>`` is kept)."""
        out: list[int] = []
        for i in ids:
            i = int(i)
            if i == END_ID:
                break
            if i in (NULL_ID, START_ID):
                continue
            out.append(i)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Ids → caption string (special tokens removed, stops at ``<END>``)."""
        return " ".join(self.id_to_word[i] if 0 <= i < len(self) else UNK for i in self.strip(ids))

    def id_string(self, caption: str | Sequence[str] | Sequence[int], lower: bool = False) -> str:
        """The ``rsicc`` evaluation form: space-joined vocabulary ids, specials removed, ``<UNK>`` kept.

        Accepts a raw caption, a word-token list or an id list.
        """
        if isinstance(caption, str):
            ids = self.encode(caption, max_length=10**6, lower=lower, pad=False)
        elif len(caption) and isinstance(caption[0], str):
            ids = self.encode(list(caption), max_length=10**6, pad=False)  # type: ignore[arg-type]
        else:
            ids = [int(i) for i in caption]  # type: ignore[arg-type]
        return " ".join(str(i) for i in self.strip(ids))
