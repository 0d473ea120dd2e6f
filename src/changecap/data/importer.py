"""``changecap data import``: the user's own pairs and captions → a dataset in the LEVIR-CC layout.

Inputs:

* **pairs** — a folder with ``A/`` (before) and ``B/`` (after) holding images of the same file name, or a CSV with a
  header and the columns ``before``, ``after`` (paths, relative to the CSV's folder) and optionally ``name`` (default:
  the before file's name without its suffix).
* **captions** — a CSV with a header and the columns ``name`` and ``caption`` (one row per caption, several rows per
  pair) and optionally ``split`` (``train`` / ``val`` / ``test``) and ``changed`` (``1``/``0``, ``true``/``false``,
  ``yes``/``no``); or JSON Lines, one pair per line: ``{"name": …, "captions": […], "split": …, "changed": …}``
  (the last two optional). A name matches a pair with or without its image suffix (``x`` or ``x.png``).
* **masks** (optional) — a folder with one change mask per pair, named like the pair (any image suffix). Values
  0 / 128 / 255 (LEVIR-MCI: none / road / building) are kept; a binary 0 / 1 mask is stored as 0 / 255.

Output (``OUT``): ``LevirCCcaptions.json`` (Karpathy style with ``changeflag``), ``images/{split}/{A,B}/<name>.png``
and, with masks, ``images/{split}/label/<name>.png`` — the ``levir-cc`` format, or ``levir-mci`` with masks; plus
``import.json`` (the inputs, the split rule and what was skipped) and, when tiling, ``tiles.json``.

Rules (documented choices):

* **Change flag**: the sheet's ``changed`` value when given (every row of a pair must agree), else derived from the
  captions with the readers' rule (:func:`~changecap.data.text.changed_from_captions`: unchanged iff a caption is
  ``the scene is the same as before`` or every caption is one of the five LEVIR-CC no-change sentences).
* **Splits**: the sheet's ``split`` column when it has one (then every pair needs a split, and ``split_ratios`` must
  not be given); otherwise ``split_ratios`` (default 0.7 / 0.1 / 0.2) over the pairs sorted by name and shuffled
  with ``seed``: the same pairs and seed always give the same split. Counts are the ratios times the number of pairs,
  rounded by largest remainder.
* **Files**: PNG inputs are hard-linked into ``OUT`` when it is on the same file system (no extra space; editing a
  source file in place then edits the dataset too: pass ``link=False`` / ``--copy`` to copy instead), else copied.
  Other formats (JPEG, TIFF, BMP) are decoded and written as PNG, so every pair is ``<name>.png``.
* **Validation** decodes every image and mask before anything is written: a missing or unreadable file, dates of
  different sizes, a mask of another size or with other values, an unknown, empty or duplicate name, an empty
  caption, a bad split or flag value are each a one-line :class:`~changecap.errors.DataError` naming the file, the
  row and the field. All problems are collected; with any, nothing is written (:class:`ImportRejected` lists them)
  unless ``skip_bad`` is set, which leaves out the bad rows and pairs and lists them in the report and ``import.json``.
* **Atomic output**: the dataset is built in a hidden temporary folder beside ``OUT`` and renamed to ``OUT`` at the
  end (:func:`~changecap.data.files.write_folder`); any failure removes the temporary folder, and a run killed
  outright leaves one that the next import into ``OUT`` removes. An existing ``OUT`` must be an empty folder; an
  ``OUT`` that cannot be written (a file, a read-only file system) is refused before any input is read.
* **Tiling** (``tile=N``): every input pair is a large (Geo)TIFF or image pair cut into non-overlapping ``N × N``
  tiles from the top-left corner, named ``r{row}_c{col}`` (``{pair}_r{row}_c{col}`` when there are several input
  pairs); partial tiles at the right and bottom edges are left out (a training pair must be real pixels; ``changecap
  scene`` pads its edge tiles instead). Only tiles named in the captions sheet are imported; masks are tiled alike.
  ``tiles.json`` records each tile's pixel window and, for georeferenced rasters (read with rasterio, the ``geo``
  extra), its bounds in the raster's CRS. The small windowing helper lives here because the data layer cannot use
  the inference layer's scene tiling.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from changecap.data.annotations import IMAGE_SUFFIXES, LEVIR_ANNOTATION, SPLITS
from changecap.data.files import check_output_dir, remove_stale_temps, write_folder
from changecap.data.image_io import image_header, load_image, read_rgb
from changecap.data.text import changed_from_captions, normalize_caption, tokenize
from changecap.errors import ChangeCapError, DataError

DEFAULT_SPLIT_RATIOS: tuple[float, float, float] = (0.7, 0.1, 0.2)
IMPORT_RECORD, TILES_INDEX = "import.json", "tiles.json"
_TRUE, _FALSE = frozenset({"1", "true", "yes", "y"}), frozenset({"0", "false", "no", "n"})
_LEVIR_MASK_VALUES = frozenset({0, 128, 255})


class ImportRejected(ChangeCapError):
    """The inputs have problems and nothing was written; ``problems`` holds one line per bad row or pair."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} problem(s) in the inputs, nothing written (skip_bad / --skip-bad imports the rest); "
            f"first: {self.problems[0]}"
        )


@dataclass
class ImportReport:
    """What an import wrote (``import.json`` holds the same)."""

    out: str
    format: str  # "levir-cc", or "levir-mci" with masks
    splits: dict[str, int]
    changed: dict[str, int]
    flags_from_sheet: int
    linked: int
    copied: int
    converted: int
    split_rule: str
    skipped: list[str] = field(default_factory=list)
    tiles_without_captions: int = 0

    @property
    def pairs(self) -> int:
        return sum(self.splits.values())

    def format_text(self) -> str:
        counts = ", ".join(f"{s} {n} ({self.changed.get(s, 0)} changed)" for s, n in self.splits.items())
        lines = [
            f"imported {self.pairs} pairs into {self.out} ({self.format}): {counts}",
            f"splits: {self.split_rule}; change flags: {self.flags_from_sheet} from the sheet, "
            f"{self.pairs - self.flags_from_sheet} from the captions",
            f"files: {self.linked} hard-linked, {self.copied} copied, {self.converted} converted to PNG",
        ]
        if self.tiles_without_captions:
            lines.append(f"{self.tiles_without_captions} tile(s) without captions left out")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} bad row(s) / pair(s) (listed in {IMPORT_RECORD})")
        lines.append(f"check it with: changecap data check --root {self.out} --format {self.format}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------- problems
@dataclass
class _Problem:
    line: str  # one line: file, row and field, then the message (a DataError's text)
    pairs: tuple[str, ...] = ()  # output pairs it rules out; empty: only its own row is dropped


class _Problems:
    def __init__(self) -> None:
        self.items: list[_Problem] = []

    def add(self, path: Path | str | None, message: str, field: str | None = None, pairs: Iterable[str] = ()) -> None:
        self.items.append(_Problem(str(DataError(path, message, field=field)), tuple(pairs)))

    def add_error(self, error: DataError, pairs: Iterable[str], note: str = "") -> None:
        self.items.append(_Problem(f"{error}{note}", tuple(pairs)))

    def bad_pairs(self) -> set[str]:
        return {name for p in self.items for name in p.pairs}

    def lines(self) -> list[str]:
        return [p.line for p in self.items]


# ---------------------------------------------------------------------------------------------------------- pairs
@dataclass
class _Source:
    """One input pair (a whole scene when tiling)."""

    name: str
    before: Path
    after: Path
    where: str  # where the pair was listed, for messages
    mask: Path | None = None


@dataclass
class _Pair:
    """One output pair: a source pair, or one tile of it."""

    name: str  # output file stem
    source: _Source
    window: tuple[int, int, int, int] | None = None  # x, y, width, height in the source's pixels (tiling)
    row_col: tuple[int, int] | None = None
    captions: list[str] = field(default_factory=list)
    splits: set[str] = field(default_factory=set)
    flags: set[bool] = field(default_factory=set)
    split: str = ""
    changed: bool = False


def _stem(name: str) -> str:
    """``x.png`` → ``x``; names without an image suffix stay as they are."""
    suffix = Path(name).suffix
    return name[: -len(suffix)] if suffix and suffix.lower() in IMAGE_SUFFIXES else name


def _bad_name(name: str) -> str | None:
    if not name:
        return "name is empty"
    if "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        return f"name {name!r} must be a plain file name (no folder, not hidden)"
    return None


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header (lower-cased) and the data rows with their line numbers (the header is row 1); blank rows dropped."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except UnicodeDecodeError:
        raise DataError(path, "not a UTF-8 text file") from None
    except (OSError, csv.Error) as e:
        raise DataError(path, f"cannot read the CSV ({' '.join(str(e).split())})") from None
    if not rows:
        raise DataError(path, "the CSV is empty (a header row is needed)")
    header = [c.strip().lower() for c in rows[0][1]]
    if len(set(header)) != len(header):
        raise DataError(path, "the header repeats a column name", field="row 1")
    return header, rows[1:]


def _need_columns(path: Path, header: list[str], needed: Sequence[str], optional: Sequence[str]) -> None:
    missing = [c for c in needed if c not in header]
    if missing:
        allowed = ", ".join([*needed, *(f"[{c}]" for c in optional)])
        raise DataError(path, f"missing column(s) {', '.join(missing)} (columns: {allowed})", field="row 1")


def _cell(header: list[str], row: list[str], column: str) -> str:
    i = header.index(column)
    return row[i].strip() if i < len(row) else ""


def _sources_from_folder(folder: Path, problems: _Problems) -> list[_Source]:
    a_dir, b_dir = folder / "A", folder / "B"
    if not (a_dir.is_dir() and b_dir.is_dir()):
        raise DataError(folder, "a folder of pairs needs the sub-folders A/ (before) and B/ (after)")

    def images(d: Path) -> dict[str, Path]:
        return {
            p.name: p
            for p in sorted(d.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")  # no ._x.png
        }

    before, after = images(a_dir), images(b_dir)
    if not before and not after:
        raise DataError(folder, f"no images ({', '.join(IMAGE_SUFFIXES)}) in A/ or B/")
    stems: dict[str, str] = {}
    for n in before:
        if _stem(n) in stems:
            problems.add(a_dir / n, f"two before images share the name {_stem(n)!r} ({stems[_stem(n)]}, {n})",
                         pairs=[_stem(n)])  # fmt: skip
        stems.setdefault(_stem(n), n)
    sources = []
    for n, path in before.items():
        if n not in after:
            problems.add(path, f"no after image B/{n}", pairs=[_stem(n)])
        sources.append(_Source(_stem(n), path, after.get(n, b_dir / n), f"{a_dir / n}"))
    for n, path in after.items():
        if n not in before:
            problems.add(path, f"no before image A/{n}", pairs=[_stem(n)])
    return sources


def _sources_from_csv(path: Path, problems: _Problems) -> list[_Source]:
    header, rows = _read_csv(path)
    _need_columns(path, header, ("before", "after"), ("name",))
    sources: list[_Source] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        files: dict[str, Path] = {}
        for col in ("before", "after"):
            value = _cell(header, row, col)
            if not value:
                problems.add(path, "path is empty", field=f"row {line}, {col}")
                continue
            p = Path(value).expanduser()
            files[col] = p if p.is_absolute() else path.parent / p
        name = _cell(header, row, "name") if "name" in header else ""
        if not name and "before" in files:
            name = files["before"].stem
        name = _stem(name)
        bad = _bad_name(name)
        if bad is not None:
            problems.add(path, bad, field=f"row {line}, name")
            continue
        if name in seen:
            problems.add(path, f"duplicate pair name {name!r} (first in row {seen[name]})", field=f"row {line}, name",
                         pairs=[name])  # fmt: skip
            continue
        seen[name] = line
        if len(files) < 2:
            problems.add(path, "the pair needs a before and an after path", field=f"row {line}", pairs=[name])
            continue
        for col, p in files.items():
            if not p.is_file():
                state = "file not found" if not p.exists() else "not a file"
                problems.add(path, f"{state}: {p}", field=f"row {line}, {col}", pairs=[name])
        sources.append(_Source(name, files["before"], files["after"], f"{path} [row {line}]"))
    return sources


def _attach_masks(folder: Path, sources: list[_Source], problems: _Problems, tiled: dict[str, list[str]]) -> None:
    """Find each source's mask in ``folder`` by name; a mask of no pair, or a pair without a mask, is a problem."""
    if not folder.is_dir():
        raise DataError(folder, "masks folder not found" if not folder.exists() else "--masks must be a folder")
    files: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            files.setdefault(p.stem, []).append(p)
    names = {s.name for s in sources}
    for stem, paths in files.items():
        if stem not in names:
            problems.add(paths[0], "mask of no pair (no pair has this name)")
    for s in sources:
        found = files.get(s.name, [])
        affected = tiled.get(s.name, [s.name])
        if not found:
            problems.add(folder / f"{s.name}.png", f"no mask for pair {s.name!r} (listed in {s.where})", pairs=affected)
        elif len(found) > 1:
            problems.add(found[1], f"two masks for pair {s.name!r} ({found[0].name}, {found[1].name})", pairs=affected)
        else:
            s.mask = found[0]


# ---------------------------------------------------------------------------------------------------------- captions
def _parse_split(value: str) -> str | None:
    return value if value in SPLITS else None


def _parse_flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return None


@dataclass
class _Sheet:
    has_split: bool = False
    has_flag: bool = False


def _add_caption_rows(
    path: Path, pairs: dict[str, _Pair], problems: _Problems, lower: bool, rows: Iterable[tuple[int, dict[str, Any]]],
    row_word: str,
) -> None:  # fmt: skip
    """Shared by the CSV and JSONL readers: ``rows`` yields (line, {name, captions, split?, changed?})."""
    for line, rec in rows:
        at = f"{row_word} {line}"
        name = _stem(str(rec["name"]).strip())
        if not name:
            problems.add(path, "name is empty", field=f"{at}, name")
            continue
        pair = pairs.get(name)
        if pair is None:
            problems.add(path, f"caption for an unknown pair {name!r} (no such pair in --pairs)", field=f"{at}, name")
            continue
        split = rec.get("split")
        if split is not None and split != "":
            if _parse_split(split) is None:
                problems.add(path, f"unknown split {split!r}; expected train, val or test", field=f"{at}, split",
                             pairs=[name])  # fmt: skip
            else:
                pair.splits.add(split)
        flag = rec.get("changed")
        if flag is not None and flag != "":
            parsed = _parse_flag(flag)
            if parsed is None:
                problems.add(path, f"changed must be 1/0, true/false or yes/no, got {flag!r}",
                             field=f"{at}, changed", pairs=[name])  # fmt: skip
            else:
                pair.flags.add(parsed)
        for where, raw in rec["captions"]:
            caption = normalize_caption(raw.lower() if lower else raw)
            if not caption:
                problems.add(path, "caption is empty", field=f"{at}, {where}")
                continue
            pair.captions.append(raw.strip().lower() if lower else raw.strip())


def _read_captions_csv(path: Path, pairs: dict[str, _Pair], problems: _Problems, lower: bool) -> _Sheet:
    header, rows = _read_csv(path)
    _need_columns(path, header, ("name", "caption"), ("split", "changed"))
    sheet = _Sheet("split" in header, "changed" in header)

    def records() -> Iterable[tuple[int, dict[str, Any]]]:
        for line, row in rows:
            caption = ("caption", _cell(header, row, "caption"))
            rec: dict[str, Any] = {"name": _cell(header, row, "name"), "captions": [caption]}
            if sheet.has_split:
                rec["split"] = _cell(header, row, "split")
            if sheet.has_flag:
                rec["changed"] = _cell(header, row, "changed")
            yield line, rec

    _add_caption_rows(path, pairs, problems, lower, records(), "row")
    return sheet


def _read_captions_jsonl(path: Path, pairs: dict[str, _Pair], problems: _Problems, lower: bool) -> _Sheet:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise DataError(path, "not a UTF-8 text file") from None
    sheet = _Sheet()
    seen: dict[str, int] = {}

    def records() -> Iterable[tuple[int, dict[str, Any]]]:
        for n, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            at = f"line {n}"
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                problems.add(path, f"not valid JSON ({e.msg}, column {e.colno})", field=at)
                continue
            if not isinstance(obj, dict):
                problems.add(path, f"expected a JSON object, got {type(obj).__name__}", field=at)
                continue
            name, caps = obj.get("name"), obj.get("captions")
            if not isinstance(name, str):
                problems.add(path, "missing or not a string", field=f"{at}, name")
                continue
            if name in seen:
                problems.add(path, f"duplicate pair name {name!r} (first on line {seen[name]})", field=f"{at}, name",
                             pairs=[_stem(name)])  # fmt: skip
                continue
            seen[name] = n
            if not isinstance(caps, list) or not caps:
                problems.add(path, "expected a non-empty list of caption strings", field=f"{at}, captions")
                continue
            good = []
            for k, c in enumerate(caps):
                if isinstance(c, str):
                    good.append((f"captions[{k}]", c))
                else:
                    problems.add(path, f"expected a string, got {type(c).__name__}", field=f"{at}, captions[{k}]")
            rec: dict[str, Any] = {"name": name, "captions": good}
            for key in ("split", "changed"):
                if key in obj:
                    sheet.has_split |= key == "split"
                    sheet.has_flag |= key == "changed"
                    rec[key] = obj[key] if key == "changed" or isinstance(obj[key], str) else repr(obj[key])
            yield n, rec

    _add_caption_rows(path, pairs, problems, lower, records(), "line")
    return sheet


def _read_captions(path: Path, pairs: dict[str, _Pair], problems: _Problems, lower: bool) -> _Sheet:
    if not path.is_file():
        raise DataError(path, "captions file not found" if not path.exists() else "captions must be a file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_captions_csv(path, pairs, problems, lower)
    if suffix in (".jsonl", ".ndjson"):
        return _read_captions_jsonl(path, pairs, problems, lower)
    raise DataError(path, "captions must be a .csv (name,caption rows) or a .jsonl file ({name, captions} lines)")


# ---------------------------------------------------------------------------------------------------------- pixels
def _read_mask_values(path: Path) -> np.ndarray:
    """A mask file as ``uint8 [H, W]`` raw values (channel 0 of a colour file, as the mask reader does)."""
    if not path.exists():
        raise DataError(path, "mask file not found")
    with load_image(path) as img:  # pixel bound, EXIF orientation as for the images (values kept exactly)
        if img.mode == "P":
            img = img.convert("RGB")
        elif img.mode == "1":
            img = img.convert("L")
        arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., 0]  # [H, W, C] → [H, W]
    if arr.dtype != np.uint8:
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
            raise DataError(path, f"mask values span [{int(arr.min())}, {int(arr.max())}]; expected 0/128/255 or 0/1")
        arr = arr.astype(np.uint8)
    return arr


def _mask_to_levir(arr: np.ndarray, path: Path) -> tuple[np.ndarray, bool]:
    """Raw mask values → LEVIR-MCI values (0 / 128 / 255) and whether they had to be rewritten (0 / 1 masks)."""
    values = {int(v) for v in np.unique(arr)}
    if values <= _LEVIR_MASK_VALUES:
        return arr, False
    if values <= {0, 1}:
        return (arr * 255).astype(np.uint8), True
    bad = sorted(values - _LEVIR_MASK_VALUES - {1})
    shown = ", ".join(str(v) for v in bad[:5]) + (", ..." if len(bad) > 5 else "")
    raise DataError(path, f"invalid mask value(s) {shown}; masks hold 0/128/255 (none/road/building) or 0/1")


def _validate_source(src: _Source) -> tuple[int, int]:
    """Decode both dates (and the mask) of a source pair; return its ``(height, width)``."""
    a, b = read_rgb(src.before), read_rgb(src.after)
    if a.shape != b.shape:
        raise DataError(
            src.after,
            f"size {b.shape[1]}×{b.shape[0]} differs from the before image {src.before} ({a.shape[1]}×{a.shape[0]})",
        )
    if src.mask is not None:
        m = _read_mask_values(src.mask)
        if m.shape != a.shape[:2]:
            raise DataError(
                src.mask, f"mask size {m.shape[1]}×{m.shape[0]} differs from the image {src.before} "
                f"({a.shape[1]}×{a.shape[0]})",
            )  # fmt: skip
        _mask_to_levir(m, src.mask)
    return a.shape[0], a.shape[1]


# ---------------------------------------------------------------------------------------------------------- tiling
def tile_windows(height: int, width: int, tile: int) -> list[tuple[int, int, tuple[int, int, int, int]]]:
    """Non-overlapping ``tile × tile`` windows from the top-left corner, row-major: ``(row, col, (x, y, w, h))``.

    Partial tiles at the right and bottom edges are left out.
    """
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    return [
        (r, c, (c * tile, r * tile, tile, tile)) for r in range(height // tile) for c in range(width // tile)
    ]


@dataclass
class _Georef:
    crs: str | None
    transform: tuple[float, ...] | None  # affine a, b, c, d, e, f (x = a*col + b*row + c; y = d*col + e*row + f)


def _georef(path: Path) -> _Georef:
    """CRS and affine transform of a raster (rasterio, the ``geo`` extra); empty when unavailable or absent."""
    try:
        import rasterio
    except ImportError:
        return _Georef(None, None)
    try:
        with rasterio.open(path) as ds:
            crs = ds.crs.to_string() if ds.crs else None
            t = ds.transform
            transform = (t.a, t.b, t.c, t.d, t.e, t.f) if crs else None
    except Exception:  # noqa: BLE001 - not a raster rasterio reads: no georeferencing, the pixels were read already
        return _Georef(None, None)
    return _Georef(crs, transform)


def _bounds(g: _Georef, window: tuple[int, int, int, int]) -> list[float] | None:
    if g.transform is None:
        return None
    a, b, c, d, e, f = g.transform
    x0, y0, w, h = window
    corners = [(col, row) for col in (x0, x0 + w) for row in (y0, y0 + h)]
    xs = [a * col + b * row + c for col, row in corners]
    ys = [d * col + e * row + f for col, row in corners]
    return [min(xs), min(ys), max(xs), max(ys)]


# ---------------------------------------------------------------------------------------------------------- splits
def parse_split_ratios(text: str | Sequence[float]) -> tuple[float, float, float]:
    """``"0.7,0.1,0.2"`` (or three numbers) → train / val / test ratios; a one-line error for anything else."""
    try:
        values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        raise ChangeCapError(f"--split-ratios: expected three numbers like 0.7,0.1,0.2, got {text!r}") from None
    if len(values) != 3:
        raise ChangeCapError(f"--split-ratios: expected three numbers (train,val,test), got {len(values)}")
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ChangeCapError(f"--split-ratios: ratios must be finite and >= 0, got {values}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ChangeCapError(f"--split-ratios: ratios must sum to 1, got {sum(values):g}")
    if values[0] <= 0:
        raise ChangeCapError("--split-ratios: the train ratio must be > 0")
    return values[0], values[1], values[2]


def assign_splits(names: Sequence[str], ratios: Sequence[float], seed: int) -> dict[str, str]:
    """Deterministic split of ``names``: sorted, shuffled with ``seed``, cut by ``ratios`` (largest remainder)."""
    ordered = sorted(names)
    n = len(ordered)
    exact = [r * n for r in ratios]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    order = np.random.default_rng(seed).permutation(n)
    out: dict[str, str] = {}
    start = 0
    for split, count in zip(SPLITS, counts, strict=True):
        for k in order[start : start + count]:
            out[ordered[int(k)]] = split
        start += count
    return out


# ---------------------------------------------------------------------------------------------------------- output
def _check_out(out: Path) -> None:
    """``out`` can be written (:func:`~changecap.data.files.check_output_dir`) and is new or an empty folder."""
    check_output_dir(out, "--out")
    if out.exists() and any(out.iterdir()):
        raise DataError(out, "is not empty; choose a new folder (an import never writes into existing data)",
                        field="--out")  # fmt: skip


class _Writer:
    """Places files into the temporary dataset folder: hard link, copy, or PNG conversion."""

    def __init__(self, link: bool) -> None:
        self.link = link
        self.linked = self.copied = self.converted = 0

    def place(self, src: Path, dst: Path) -> None:
        if src.suffix.lower() != ".png":
            Image.fromarray(read_rgb(src)).save(dst)
            self.converted += 1
            return
        if self.link:
            try:
                os.link(src, dst)
                self.linked += 1
                return
            except OSError:  # another file system, or links not allowed there: copy
                pass
        shutil.copyfile(src, dst)
        self.copied += 1

    def place_mask(self, src: Path, dst: Path) -> None:
        values, rewrite = _mask_to_levir(_read_mask_values(src), src)
        if rewrite or src.suffix.lower() != ".png":
            Image.fromarray(values).save(dst)
            self.converted += 1
        else:
            self.place(src, dst)

    def array(self, arr: np.ndarray, dst: Path) -> None:
        Image.fromarray(arr).save(dst)
        self.converted += 1


def _entry(pair: _Pair, imgid: int, sentid: int) -> dict[str, Any]:
    filename = f"{pair.name}.png"
    sentids = list(range(sentid, sentid + len(pair.captions)))
    return {
        "filepath": pair.split,
        "filename": filename,
        "imgid": imgid,
        "split": pair.split,
        "changeflag": int(pair.changed),
        "sentids": sentids,
        "sentences": [
            {"tokens": tokenize(c), "raw": c, "imgid": imgid, "sentid": k} for c, k in zip(pair.captions, sentids)
        ],
    }


def _write_dataset(
    tmp: Path, pairs: list[_Pair], writer: _Writer, masks: bool, tiled: bool, progress: bool
) -> list[dict[str, Any]]:
    """Images, masks and the captions JSON into ``tmp``; returns the tile index entries (empty without tiling)."""
    from tqdm import tqdm

    for split in {p.split for p in pairs}:
        for sub in ("A", "B", "label") if masks else ("A", "B"):
            (tmp / "images" / split / sub).mkdir(parents=True, exist_ok=True)
    index: list[dict[str, Any]] = []
    if tiled:
        by_source: dict[str, list[_Pair]] = {}
        for p in pairs:
            by_source.setdefault(p.source.name, []).append(p)
        for src_pairs in tqdm(list(by_source.values()), desc="tiling", unit="scene", disable=not progress):
            src = src_pairs[0].source
            before, after = read_rgb(src.before), read_rgb(src.after)
            mask = None if src.mask is None else _mask_to_levir(_read_mask_values(src.mask), src.mask)[0]
            geo = _georef(src.before)
            for p in src_pairs:
                assert p.window is not None and p.row_col is not None
                x, y, w, h = p.window
                folder = tmp / "images" / p.split
                writer.array(before[y : y + h, x : x + w], folder / "A" / f"{p.name}.png")  # [h, w, 3]
                writer.array(after[y : y + h, x : x + w], folder / "B" / f"{p.name}.png")
                if mask is not None:
                    writer.array(mask[y : y + h, x : x + w], folder / "label" / f"{p.name}.png")  # [h, w]
                index.append({"name": f"{p.name}.png", "split": p.split, "source": src.name, "row": p.row_col[0],
                              "col": p.row_col[1], "window": list(p.window), "bounds": _bounds(geo, p.window),
                              "crs": geo.crs})  # fmt: skip
    else:
        for p in tqdm(pairs, desc="writing", unit="pair", disable=not progress):
            folder = tmp / "images" / p.split
            writer.place(p.source.before, folder / "A" / f"{p.name}.png")
            writer.place(p.source.after, folder / "B" / f"{p.name}.png")
            if p.source.mask is not None:
                writer.place_mask(p.source.mask, folder / "label" / f"{p.name}.png")
    return index


# ---------------------------------------------------------------------------------------------------------- import
def _read_sources(pairs: Path, problems: _Problems) -> list[_Source]:
    if pairs.is_dir():
        return _sources_from_folder(pairs, problems)
    if pairs.is_file() and pairs.suffix.lower() == ".csv":
        return _sources_from_csv(pairs, problems)
    if pairs.exists():
        raise DataError(pairs, "--pairs must be a folder with A/ and B/, or a .csv of before,after paths")
    raise DataError(pairs, "no such file or folder")


def _output_pairs(
    sources: list[_Source], tile: int | None, problems: _Problems
) -> tuple[dict[str, _Pair], dict[str, list[str]]]:
    """The pairs to write: the sources, or their tiles (named from the raster headers, before any caption is read);
    and the tile names of each source."""
    if tile is None:
        return {src.name: _Pair(src.name, src) for src in sources}, {}
    out: dict[str, _Pair] = {}
    tiles_of: dict[str, list[str]] = {}
    bad = problems.bad_pairs()
    for src in sources:
        if src.name in bad:
            continue
        try:
            w, h, _ = image_header(src.before)
        except DataError as e:
            problems.add_error(e, [src.name])
            continue
        geo_a, geo_b = _georef(src.before), _georef(src.after)
        if geo_a.crs and geo_b.crs and (geo_a.crs, geo_a.transform) != (geo_b.crs, geo_b.transform):
            message = ("its grid (CRS, origin or pixel size) differs from the before raster's; tiles would not "
                       "cover the same ground (resample it onto the before grid first)")  # fmt: skip
            problems.add(src.after, message, pairs=[src.name])
        prefix = "" if len(sources) == 1 else f"{src.name}_"
        windows = tile_windows(h, w, tile)
        if not windows:
            problems.add(src.before, f"{w}×{h} is smaller than one {tile}×{tile} tile", pairs=[src.name])
        for r, c, window in windows:
            name = f"{prefix}r{r}_c{c}"
            out[name] = _Pair(name, src, window, (r, c))
            tiles_of.setdefault(src.name, []).append(name)
    for p in problems.items:  # a problem of a scene rules out all its tiles
        p.pairs = tuple(t for name in p.pairs for t in tiles_of.get(name, [name]))
    return out, tiles_of


def _check_pairs(out_pairs: dict[str, _Pair], sheet: _Sheet, captions: Path, tiled: bool, problems: _Problems) -> int:
    """Every pair needs a caption, one split (with a split column) and one flag; returns the uncaptioned tiles."""
    uncaptioned = 0
    bad = problems.bad_pairs()  # e.g. an unknown split value: reported once, not again as a missing split
    for name, p in out_pairs.items():
        if not p.captions:
            if tiled:
                uncaptioned += 1  # tiles the sheet does not caption are not imported
                continue
            problems.add(captions, f"pair {name!r} has no caption (listed in {p.source.where})", pairs=[name])
        if len(p.splits) > 1:
            problems.add(captions, f"pair {name!r} has rows in several splits ({', '.join(sorted(p.splits))})",
                         field="split", pairs=[name])  # fmt: skip
        elif sheet.has_split and not p.splits and p.captions and name not in bad:
            problems.add(captions, f"pair {name!r} has no split value", field="split", pairs=[name])
        if len(p.flags) > 1:
            problems.add(captions, f"pair {name!r} has rows with different changed values", field="changed",
                         pairs=[name])  # fmt: skip
    return uncaptioned


def _check_pixels(
    wanted: list[_Pair], tiles_of: dict[str, list[str]], problems: _Problems, progress: bool
) -> None:
    """Decode every source still in use once (both dates, the mask)."""
    from tqdm import tqdm

    bad = problems.bad_pairs()
    used: dict[str, _Source] = {}
    for p in wanted:
        if p.name not in bad:
            used.setdefault(p.source.name, p.source)
    for src in tqdm(list(used.values()), desc="checking", unit="pair", disable=not progress):
        try:
            _validate_source(src)
        except DataError as e:
            problems.add_error(e, tiles_of.get(src.name, [src.name]), note=f" (pair {src.name!r})")


def _build(
    out: Path, kept: list[_Pair], report: ImportReport, record: dict[str, Any], tile: int | None, link: bool,
    progress: bool,
) -> None:  # fmt: skip
    """Write everything into a temporary folder beside ``out`` and put it in place
    (:func:`~changecap.data.files.write_folder`): a new ``out`` appears whole by one rename, an empty one gets the
    captions file last; the temporary folder is removed on any failure."""

    def write(tmp: Path) -> list[Path]:
        writer = _Writer(link)
        index = _write_dataset(tmp, kept, writer, report.format == "levir-mci", tile is not None, progress)
        report.linked, report.copied, report.converted = writer.linked, writer.copied, writer.converted
        entries, sentid = [], 0
        for imgid, p in enumerate(kept):
            entries.append(_entry(p, imgid, sentid))
            sentid += len(p.captions)
        (tmp / LEVIR_ANNOTATION).write_text(json.dumps({"images": entries}), encoding="utf-8")
        written = [tmp / "images"]
        if tile is not None:
            (tmp / TILES_INDEX).write_text(json.dumps({"tile": tile, "tiles": index}, indent=1), encoding="utf-8")
            written.append(tmp / TILES_INDEX)
        (tmp / IMPORT_RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")
        _check_out(out)  # nobody wrote there meanwhile
        return [*written, tmp / IMPORT_RECORD, tmp / LEVIR_ANNOTATION]  # the readers' entry point last

    write_folder(out, write)


def import_dataset(
    pairs: str | os.PathLike[str],
    captions: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    masks: str | os.PathLike[str] | None = None,
    split_ratios: Sequence[float] | str | None = None,
    seed: int = 0,
    tile: int | None = None,
    skip_bad: bool = False,
    link: bool = True,
    lower: bool = False,
    progress: bool = False,
) -> ImportReport:
    """Build a LEVIR-CC-layout dataset in ``out`` from a folder or CSV of pairs and a captions sheet (module doc).

    Raises :class:`ImportRejected` (nothing written) when a row or pair is bad and ``skip_bad`` is false, and a
    one-line :class:`~changecap.errors.ChangeCapError` for problems that concern the whole import (unreadable
    sheet, missing columns, bad ratios, a non-empty ``out``).
    """
    pairs_p, captions_p, out_p = Path(pairs).expanduser(), Path(captions).expanduser(), Path(out).expanduser()
    ratios = None if split_ratios is None else parse_split_ratios(split_ratios)
    if tile is not None and tile < 8:
        raise ChangeCapError(f"--tile must be >= 8 pixels, got {tile}")
    if seed < 0:
        raise ChangeCapError(f"--seed must be >= 0, got {seed}")
    remove_stale_temps(out_p.parent, out_p.name)  # a killed import's temporary folder
    _check_out(out_p)
    problems = _Problems()
    sources = _read_sources(pairs_p, problems)
    out_pairs, tiles_of = _output_pairs(sources, tile, problems)
    if masks is not None:
        _attach_masks(Path(masks).expanduser(), sources, problems, tiles_of)
    sheet = _read_captions(captions_p, out_pairs, problems, lower)
    if sheet.has_split and ratios is not None:
        raise ChangeCapError(f"--split-ratios conflicts with the split column of {captions_p}; give one of the two")
    uncaptioned = _check_pairs(out_pairs, sheet, captions_p, tile is not None, problems)
    wanted = [p for p in out_pairs.values() if p.captions]
    _check_pixels(wanted, tiles_of, problems, progress)
    if problems.items and not skip_bad:
        raise ImportRejected(problems.lines())

    bad = problems.bad_pairs()
    kept = sorted((p for p in wanted if p.name not in bad), key=lambda p: p.name)
    if not kept:
        raise DataError(captions_p, "no pair left to import" + (" (all were skipped)" if problems.items else ""))
    for p in kept:
        p.split = next(iter(p.splits)) if sheet.has_split else ""
        p.changed = next(iter(p.flags)) if p.flags else changed_from_captions(p.captions)
    if sheet.has_split:
        split_rule = f"split column of {captions_p.name}"
    else:
        chosen = ratios or DEFAULT_SPLIT_RATIOS
        for name, split in assign_splits([p.name for p in kept], chosen, seed).items():
            out_pairs[name].split = split
        split_rule = f"ratios {','.join(f'{r:g}' for r in chosen)} with seed {seed}"
    kept.sort(key=lambda p: (SPLITS.index(p.split), p.name))
    report = ImportReport(
        out=str(out_p),
        format="levir-cc" if masks is None else "levir-mci",
        splits={s: n for s in SPLITS if (n := sum(p.split == s for p in kept))},
        changed={s: n for s in SPLITS if (n := sum(p.split == s and p.changed for p in kept))},
        flags_from_sheet=sum(bool(p.flags) for p in kept),
        linked=0,
        copied=0,
        converted=0,
        split_rule=split_rule,
        skipped=problems.lines(),
        tiles_without_captions=uncaptioned,
    )
    record = {
        "pairs": str(pairs_p),
        "captions": str(captions_p),
        "masks": None if masks is None else str(masks),
        "tile": tile,
        "seed": seed,
        "split_rule": split_rule,
        "lower": lower,
        "splits": report.splits,
        "changed": report.changed,
        "skipped": report.skipped,
    }
    _build(out_p, kept, report, record, tile, link, progress)
    return report
