"""Captions, vocabularies and dataset readers."""

from changecap.data.annotations import FORMATS, SPLITS, Layout, PairRecord, parse_annotations
from changecap.data.collate import collate_pairs
from changecap.data.datasets import ChangeCaptionDataset, build_vocabulary, open_dataset
from changecap.data.single_date import (
    SingleDateRecord,
    read_landcover,
    read_landcover_classes,
    read_synthcc_single_dates,
)
from changecap.data.text import (
    CANONICAL_NO_CHANGE,
    NO_CHANGE_SENTENCES,
    is_no_change,
    tokenize,
)
from changecap.data.vocab import END, NULL, SPECIAL_TOKENS, START, UNK, Vocabulary

__all__ = [
    "CANONICAL_NO_CHANGE",
    "FORMATS",
    "NO_CHANGE_SENTENCES",
    "END",
    "NULL",
    "SPECIAL_TOKENS",
    "SPLITS",
    "START",
    "UNK",
    "ChangeCaptionDataset",
    "Layout",
    "PairRecord",
    "SingleDateRecord",
    "Vocabulary",
    "build_vocabulary",
    "collate_pairs",
    "is_no_change",
    "open_dataset",
    "parse_annotations",
    "read_landcover",
    "read_landcover_classes",
    "read_synthcc_single_dates",
    "tokenize",
]
