"""Caption a folder of pairs: ``A/`` and ``B/`` with matching file names, or a CSV of ``before,after`` paths.

One record per pair, in a stable order (sorted names; CSV order). A pair that cannot be used — a file with no partner,
an unreadable or corrupt image, dates of different sizes — becomes a problem record instead of stopping the run:
problems are listed after the captions, in the output and on the terminal. Images are read one batch ahead in a
background thread, so reading overlaps the model.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from changecap.data.files import (
    AtomicFile,
    InputPaths,
    check_not_input,
    check_output_file,
    csv_safe,
    remove_stale_temps,
)
from changecap.data.image_io import save_mask_png
from changecap.errors import ChangeCapError, DataError
from changecap.models.contract import Sampling

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
FIELDS = ("name", "before", "after", "caption", "change_probability", "mask", "error")


@dataclass
class PairCaptionRecord:
    """One line of ``caption --pairs``' output: a captioned pair (``error`` None) or a problem (``caption`` None,
    ``error`` set). Not the dataset's ``data.annotations.PairRecord``, which describes a pair of a dataset."""

    name: str
    before: str | None
    after: str | None
    caption: str | None = None
    change_probability: float | None = None
    mask: str | None = None  # path of the written mask PNG
    error: str | None = None


@dataclass(frozen=True)
class Pair:
    name: str
    before: Path
    after: Path


def _images_in(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


def find_pairs(source: str | os.PathLike[str]) -> tuple[list[Pair], list[PairCaptionRecord]]:
    """``source`` (a folder with ``A/`` and ``B/``, or a CSV file) → the pairs and the unmatched files as problems.

    CSV: one pair per row, ``before,after`` (a header row with those names is optional); relative paths are relative
    to the CSV's folder; the name of a pair is its before file's name (``row<N>:`` prefixed when names repeat).
    """
    src = Path(source).expanduser()
    if src.is_dir():
        a_dir, b_dir = src / "A", src / "B"
        if not (a_dir.is_dir() and b_dir.is_dir()):
            raise DataError(src, "a folder of pairs needs the sub-folders A/ (before) and B/ (after)")
        before, after = _images_in(a_dir), _images_in(b_dir)
        pairs = [Pair(n, before[n], after[n]) for n in sorted(before) if n in after]
        problems = [PairCaptionRecord(n, str(before[n]), None, error="no after image with this name in B/")
                    for n in sorted(before) if n not in after]  # fmt: skip
        problems += [PairCaptionRecord(n, None, str(after[n]), error="no before image with this name in A/")
                     for n in sorted(after) if n not in before]  # fmt: skip
        if not pairs and not problems:
            raise DataError(src, f"no images ({', '.join(IMAGE_SUFFIXES)}) in A/ or B/")
        return pairs, problems
    if src.is_file() and src.suffix.lower() == ".csv":
        return _pairs_from_csv(src)
    if src.exists():
        raise DataError(src, "expected a folder with A/ and B/, or a .csv of before,after paths")
    raise DataError(src, "no such file or folder")


def _pairs_from_csv(path: Path) -> tuple[list[Pair], list[PairCaptionRecord]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            text = f.read()
        if "\x00" in text:  # no path holds one: a binary file, not a CSV of paths
            raise csv.Error("it holds a NUL character")
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(path, f"cannot read the CSV ({' '.join(str(e).split())})") from None
    first = 1  # row numbers are the file's (blank lines aside)
    if rows and [c.strip().lower() for c in rows[0]] == ["before", "after"]:
        rows, first = rows[1:], 2
    if not rows:
        raise DataError(path, "no pairs (one 'before,after' row per pair)")
    pairs: list[Pair] = []
    problems: list[PairCaptionRecord] = []
    seen: set[str] = set()
    for i, row in enumerate(rows, start=first):
        if len(row) != 2:
            problem = f"row {i}: expected 2 columns (before,after)"
            problems.append(PairCaptionRecord(f"row{i}", None, None, error=problem))
            continue
        b, a = (Path(c.strip()).expanduser() for c in row)
        b, a = (p if p.is_absolute() else path.parent / p for p in (b, a))
        name = b.name if b.name not in seen else f"row{i}:{b.name}"
        seen.add(name)
        pairs.append(Pair(name, b, a))
    return pairs, problems


def mask_path_for(mask_dir: str | os.PathLike[str], pair: Pair) -> Path:
    """Where ``--mask-dir`` puts a pair's mask: ``<mask_dir>/<name stem>.png``."""
    return Path(mask_dir) / f"{Path(pair.name).stem}.png"


def check_outputs_spare_inputs(
    pairs: Sequence[Pair],
    source: str | os.PathLike[str],
    out: str | os.PathLike[str] | None,
    mask_dir: str | os.PathLike[str] | None,
) -> None:
    """Refuse, before any work, outputs that would overwrite an input (``--out`` naming the CSV of pairs or an
    image, a mask written over an image of ``--mask-dir``'s folder) or each other (two pairs whose names share a
    stem, ``a.png`` and ``a.jpg``, would get the same mask file)."""
    inputs = InputPaths([*(p for pair in pairs for p in (pair.before, pair.after)), source])
    if out is not None:
        check_not_input(out, inputs, "--out", "is one of the inputs; choose another output file")
    if mask_dir is None:
        return
    seen: dict[Path, str] = {}
    flag = "--mask-dir"
    for pair in pairs:
        target = mask_path_for(Path(mask_dir).expanduser(), pair).resolve()
        check_not_input(target, inputs, flag, "a mask would overwrite this input image; choose another folder")
        if target in seen:
            raise DataError(target, f"pairs {seen[target]} and {pair.name} would both write this mask", field=flag)
        seen[target] = pair.name


def _load(pair: Pair, captioner: Any) -> torch.Tensor | PairCaptionRecord:
    """A pair → its model input [2, 3, S, S] (and its size), or a problem record naming the file."""
    from changecap.inference.predictor import prepare_pair_and_size

    for path in (pair.before, pair.after):
        if not path.is_file():
            return PairCaptionRecord(pair.name, str(pair.before), str(pair.after), error=f"{path}: no such file")
    try:
        return prepare_pair_and_size(pair.before, pair.after, captioner.preprocess, (str(pair.before), str(pair.after)))
    except ChangeCapError as e:
        return PairCaptionRecord(pair.name, str(pair.before), str(pair.after), error=str(e))


def caption_pairs(
    captioner: Any,
    pairs: Sequence[Pair],
    *,
    batch_size: int = 16,
    beam_size: int | None = None,
    max_length: int | None = None,
    sampling: Sampling | None = None,
    mask_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Iterator[PairCaptionRecord]:
    """Caption ``pairs`` in batches (reading the next batch while the model runs) → one record per pair, in order.
    With ``mask_dir`` (models with a CD head) each mask is written there as ``<name stem>.png``. ``beam_size``,
    ``max_length`` and ``sampling`` reach the model's ``predict`` (None: its own decoding). Arguments are checked
    at the call, before anything is read or written."""
    if batch_size < 1:
        raise ChangeCapError(f"--batch-size must be >= 1, got {batch_size}")
    if mask_dir is not None:
        remove_stale_temps(mask_dir)  # masks half written by a killed run
    decoding = {"beam_size": beam_size, "max_length": max_length, "sampling": sampling}
    return _caption_batches(captioner, pairs, batch_size, decoding, mask_dir, progress)


def _caption_batches(
    captioner: Any,
    pairs: Sequence[Pair],
    batch_size: int,
    decoding: dict[str, Any],
    mask_dir: str | os.PathLike[str] | None,
    progress: bool,
) -> Iterator[PairCaptionRecord]:
    batches = [list(pairs[i : i + batch_size]) for i in range(0, len(pairs), batch_size)]
    bar = tqdm(total=len(pairs), desc="captioning", unit="pair", disable=not progress)
    with ThreadPoolExecutor(max_workers=1) as pool:

        def read(batch: list[Pair]) -> list[Any]:
            return [_load(p, captioner) for p in batch]

        pending = pool.submit(read, batches[0]) if batches else None
        for k, batch in enumerate(batches):
            assert pending is not None
            loaded = pending.result()
            pending = pool.submit(read, batches[k + 1]) if k + 1 < len(batches) else None
            ok = [(p, x) for p, x in zip(batch, loaded, strict=True) if not isinstance(x, PairCaptionRecord)]
            results = {}
            if ok:
                inputs = torch.stack([x[0] for _, x in ok])  # [b, 2, 3, S, S]
                for (p, (_, size)), res in zip(ok, captioner.caption_tensor(inputs, **decoding), strict=True):
                    results[p.name] = (res, size)
            for p, x in zip(batch, loaded, strict=True):
                if isinstance(x, PairCaptionRecord):
                    yield x
                    continue
                res, size = results[p.name]
                mask_path = None
                if mask_dir is not None and res.mask is not None:
                    mask_path = mask_path_for(mask_dir, p)
                    save_mask_png(captioner.mask_at_size(res.mask, size), mask_path)
                yield PairCaptionRecord(p.name, str(p.before), str(p.after), res.caption, res.change_probability,
                                 None if mask_path is None else str(mask_path))  # fmt: skip
            bar.update(len(batch))
    bar.close()


def check_records_path(path: str | os.PathLike[str]) -> Path:
    """Check ``--out`` before any work: a ``.jsonl`` or ``.csv`` file that can be written (see
    :func:`~changecap.data.files.check_output_file`)."""
    p = Path(path).expanduser()
    if p.suffix.lower() not in (".jsonl", ".csv"):
        raise DataError(p, "the output must end in .jsonl or .csv", field="--out")
    return check_output_file(p, "--out")


def _csv_cell(value: Any) -> Any:
    return "" if value is None else csv_safe(value) if isinstance(value, str) else value


def partial_path(path: Path) -> Path:
    """Where an interrupted run keeps the records it wrote: ``captions.csv`` → ``captions.partial.csv``."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


class RecordWriter:
    """Records → ``.jsonl`` (one JSON object per line) or ``.csv`` (columns :data:`FIELDS`), written to a temporary
    ``.<name>.<pid>.<random>.part`` file next to ``path`` as they come and renamed over ``path`` at :meth:`close`,
    so a finished file is never half written. ``path`` None: JSON lines on stdout.

    CSV text cells that a spreadsheet would run as a formula (beginning with ``=``, ``+``, ``-``, ``@``, a tab or a
    carriage return) get a leading single quote (:func:`~changecap.data.files.csv_safe`); JSON lines are exact.
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else check_records_path(path)
        self.count = 0
        self._csv: Any = None
        self._out: AtomicFile | None = None
        if self.path is None:
            import sys

            self._file: Any = sys.stdout
            return
        self._out = AtomicFile(self.path, suffix=".part", newline="")
        self._file = self._out.file
        if self.path.suffix.lower() == ".csv":
            self._csv = csv.DictWriter(self._file, fieldnames=FIELDS)
            self._csv.writeheader()

    def write(self, record: PairCaptionRecord) -> None:
        row = asdict(record)
        if self._csv is not None:
            self._csv.writerow({k: _csv_cell(v) for k, v in row.items()})
        else:
            self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        """Rename the finished records over ``path``; then drop what earlier runs left for it (the ``.part`` files
        of killed runs, the ``.partial`` file of an interrupted one): this run has every record."""
        if self.path is None or self._out is None:
            return
        self._out.commit()
        remove_stale_temps(self.path.parent, self.path.name)
        partial_path(self.path).unlink(missing_ok=True)

    def abort(self) -> Path | None:
        """Stop without touching ``path``: the records written so far are kept in :func:`partial_path` (returned);
        with none written, nothing is kept (None). No temporary file is left either way."""
        if self._out is None or self._out.done:
            return None
        if self.count == 0:
            self._out.discard()
            return None
        return self._out.keep_as(partial_path(self._out.path))
