"""Captions, vocabularies and dataset readers."""

from changecap.data.text import (
    CANONICAL_NO_CHANGE,
    NO_CHANGE_SENTENCES,
    is_no_change,
    tokenize,
)
from changecap.data.vocab import END, NULL, SPECIAL_TOKENS, START, UNK, Vocabulary

__all__ = [
    "CANONICAL_NO_CHANGE",
    "NO_CHANGE_SENTENCES",
    "END",
    "NULL",
    "SPECIAL_TOKENS",
    "START",
    "UNK",
    "Vocabulary",
    "is_no_change",
    "tokenize",
]
