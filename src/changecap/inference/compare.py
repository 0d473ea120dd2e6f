"""``changecap compare``: read prediction files and a dataset split's references, compare the systems, write reports.

The statistics are :func:`changecap.metrics.significance.compare_systems`; this module finds the references
(``--data``, ``--format``, ``--split``), reads the prediction files (``{pair name: caption}``, as ``changecap
evaluate`` writes ``predictions_<split>.json``), builds the optional sentence encoder and writes the JSON and the
HTML report (:mod:`changecap.inference.compare_report`), each atomically and never over an input file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from changecap.data.annotations import Layout, parse_annotations
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


def check_outputs(outputs: dict[str, str | os.PathLike[str] | None], inputs: Sequence[str | os.PathLike[str]]) -> None:
    """Fail before any work when an output would overwrite an input, another output, or cannot be written."""
    taken = {Path(p).resolve() for p in inputs}
    for option, value in outputs.items():
        if value is None:
            continue
        path = Path(value)
        if path.resolve() in taken:
            raise DataError(path, f"{option} would overwrite an input or another output; choose another file")
        taken.add(path.resolve())
        if path.is_dir():
            raise DataError(path, f"{option} is a folder, expected a file name")
        parent = path.parent
        if parent.exists() and not parent.is_dir():
            raise DataError(path, f"{option}: {parent} is not a folder")
        if parent.exists() and not os.access(parent, os.W_OK):
            raise DataError(path, f"{option}: the folder {parent} is not writable")


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write to a temporary name beside ``path`` and rename, so ``path`` never holds half a report."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
    except OSError as e:
        raise DataError(target, f"cannot write: {e.strerror or e}") from None
    return target


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
    return write_text_atomic(path, json.dumps(comparison.to_dict(), indent=1) + "\n")
