"""``changecap compare``: read prediction files and a dataset split's references, compare the systems, write reports.

The statistics are :func:`changecap.metrics.significance.compare_systems`; this module finds the references
(``--data``, ``--format``, ``--split``), reads the prediction files (``{pair name: caption}``, as ``changecap
evaluate`` writes ``predictions_<split>.json``), builds the optional sentence encoder and writes the JSON and the
HTML report (:mod:`changecap.inference.compare_report`), each atomically (:mod:`changecap.data.files`; the CLI
checks them with :func:`~changecap.data.files.check_output_files` first, so neither replaces an input file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from changecap.data.annotations import Layout, parse_annotations
from changecap.data.files import atomic_write_text
from changecap.data.vocab import Vocabulary
from changecap.errors import ChangeCapError, DataError
from changecap.metrics.caption_eval import CaptionProtocol
from changecap.metrics.embedding import Embedder
from changecap.metrics.meteor import MeteorScorer
from changecap.metrics.ptb import PtbMode
from changecap.metrics.significance import (
    CompareMeteor,
    Comparison,
    SystemPredictions,
    compare_systems,
    load_system,
    system_label,
)


def split_references(
    root: str | os.PathLike[str], fmt: str, split: str, layout: Layout | None = None
) -> dict[str, list[str]]:
    """``{pair name: [reference, ...]}`` of one split, as ``evaluate`` scores them (no image is read)."""
    records = parse_annotations(root, fmt, split, layout=layout, check_files=False)
    if not records:
        raise DataError(root, f"the {fmt} dataset has no pairs in split {split!r}", field="split")
    refs = {r.name: list(r.captions) for r in records if r.captions}
    if not refs:
        raise DataError(root, f"no pair of split {split!r} has reference captions (format {fmt})", field="split")
    return refs


def compare_files(
    data_root: str | os.PathLike[str],
    predictions: Sequence[tuple[str | None, str | os.PathLike[str]]],
    runs: Sequence[tuple[str, Sequence[str | os.PathLike[str]]]] = (),
    *,
    fmt: str = "levir-cc",
    split: str = "test",
    layout: Layout | None = None,
    protocol: CaptionProtocol = "rsicc",
    vocab_path: str | os.PathLike[str] | None = None,
    ptb: PtbMode = "auto",
    meteor: CompareMeteor | MeteorScorer = "off",
    embed: tuple[Embedder, str] | None = None,
    resamples: int = 1000,
    permutations: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Compare single-run systems (``predictions``: ``(label or None, file)``, the label defaulting to the file's
    name made unique) and multi-run systems (``runs``: ``(label, files)``) on ``split`` of the dataset."""
    files = [Path(p) for _, p in predictions]
    systems: list[SystemPredictions] = []
    for label, path in predictions:
        systems.append(load_system(label or system_label(path, files), [path]))
    for label, paths in runs:
        systems.append(load_system(label, list(paths)))
    if len(systems) < 2:
        raise ChangeCapError(f"compare needs at least two systems (prediction files or --runs), got {len(systems)}")
    refs = split_references(data_root, fmt, split, layout)
    vocab = Vocabulary.load(vocab_path) if vocab_path is not None else None
    comparison = compare_systems(
        systems,
        refs,
        protocol=protocol,
        vocab=vocab,
        ptb=ptb,
        meteor=meteor,
        embed=None if embed is None else embed[0],
        embed_label="" if embed is None else embed[1],
        resamples=resamples,
        permutations=permutations,
        seed=seed,
        refs_source=f"the {split} split of {data_root}",
    )
    comparison.split = split
    comparison.data = str(data_root)
    return comparison


def write_json(comparison: Comparison, path: str | os.PathLike[str]) -> Path:
    """The full result as JSON, written atomically (:func:`~changecap.data.files.atomic_write_text`)."""
    return atomic_write_text(path, json.dumps(comparison.to_dict(), indent=1) + "\n")
