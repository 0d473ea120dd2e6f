"""Single-date images with scene captions and land-cover maps: the readers of SynthCC's ``scene_captions.json``.

Layout (beside the pair files; see docs/synthcc.md)::

    DIR/scene_captions.json                              one record per image, two per pair (date A and B)
    DIR/images/{split}/{A,B}/<name>.png                  the images (A before, B after)
    DIR/images/{split}/landcover/{A,B}/<name>.png        land-cover map of each image, in that image's own frame

``scene_captions.json`` is ``{"format": "synthcc-scene-captions", "version": 1, "landcover_classes": [...],
"images": [{"filename", "split", "date", "sentences": [...], ...}]}``; a land-cover map is a single-channel 8-bit
PNG whose values index ``landcover_classes``. Every malformed file or field raises a one-line
:class:`~changecap.errors.DataError` naming the file and the field.

>>> records = read_synthcc_single_dates("data/synthcc_small", "train")   # doctest: +SKIP
>>> classes = read_landcover_classes("data/synthcc_small")                # doctest: +SKIP
>>> labels = read_landcover(records[0].landcover_path, len(classes))      # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from changecap.data.annotations import SPLITS
from changecap.data.image_io import load_image
from changecap.errors import ConfigError, DataError

SCENE_CAPTIONS_FILE = "scene_captions.json"
SCENE_CAPTIONS_FORMAT = "synthcc-scene-captions"
SCENE_CAPTIONS_VERSION = 1
LANDCOVER_FOLDER = "landcover"
DATES: tuple[str, ...] = ("A", "B")  # A = before image, B = after image of the pair


@dataclass(frozen=True)
class SingleDateRecord:
    """One image of a pair with its scene captions.

    Attributes:
        image_path: the RGB image (``images/{split}/{date}/<name>``).
        split: ``train`` / ``val`` / ``test``.
        date: ``"A"`` (before) or ``"B"`` (after).
        captions: the scene captions as written (lower case, no final period; RSICC-tokenisable).
        landcover_path: the land-cover map (``images/{split}/landcover/{date}/<name>``).
    """

    image_path: Path
    split: str
    date: str
    captions: tuple[str, ...]
    landcover_path: Path


def image_path(root: str | os.PathLike[str], split: str, date: str, filename: str) -> Path:
    """Where the image of one date of a pair lies."""
    return Path(root) / "images" / split / date / filename


def landcover_path(root: str | os.PathLike[str], split: str, date: str, filename: str) -> Path:
    """Where the land-cover map of one date of a pair lies."""
    return Path(root) / "images" / split / LANDCOVER_FOLDER / date / filename


def _load(path: Path) -> Any:
    if not path.is_file():
        state = "not found (generate the set again with this changecap)" if not path.exists() else "is a folder"
        raise DataError(path, state)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON (line {e.lineno} column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError:
        raise DataError(path, "not valid JSON (not UTF-8 text)") from None


def _header(path: Path, doc: Any) -> tuple[str, ...]:
    """Check the format, version and class list; return the land-cover classes."""
    if not isinstance(doc, dict):
        raise DataError(path, f"expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != SCENE_CAPTIONS_FORMAT:
        raise DataError(path, f"expected {SCENE_CAPTIONS_FORMAT!r}, got {doc.get('format')!r}", field="format")
    version = doc.get("version")
    if version != SCENE_CAPTIONS_VERSION or isinstance(version, bool):
        raise DataError(path, f"unsupported version {version!r}; this changecap reads version 1", field="version")
    classes = doc.get("landcover_classes")
    if (
        not isinstance(classes, list)
        or not classes
        or len(classes) > 256
        or not all(isinstance(c, str) and c.strip() for c in classes)
    ):
        raise DataError(path, "expected a list of 1 to 256 class names", field="landcover_classes")
    if len(set(classes)) != len(classes):
        raise DataError(path, "class names must be distinct", field="landcover_classes")
    if not isinstance(doc.get("images"), list):
        raise DataError(path, "expected a list of image records", field="images")
    return tuple(classes)


def _record(root: Path, path: Path, i: int, rec: Any) -> SingleDateRecord:
    at = f"images[{i}]"
    if not isinstance(rec, dict):
        raise DataError(path, f"expected an object, got {type(rec).__name__}", field=at)
    name = rec.get("filename")
    if not isinstance(name, str) or not name.strip() or "/" in name or "\\" in name or name in (".", ".."):
        raise DataError(path, f"expected a file name without folders, got {name!r}", field=f"{at}.filename")
    split = rec.get("split")
    if split not in SPLITS:
        raise DataError(path, f"unknown split {split!r}; expected train, val or test", field=f"{at}.split")
    date = rec.get("date")
    if date not in DATES:
        raise DataError(path, f"unknown date {date!r}; expected 'A' or 'B'", field=f"{at}.date")
    sentences = rec.get("sentences")
    if not isinstance(sentences, list) or not sentences:
        raise DataError(path, "expected a non-empty list of captions", field=f"{at}.sentences")
    for j, s in enumerate(sentences):
        if not isinstance(s, str) or not s.strip():
            raise DataError(path, f"expected a non-empty caption string, got {s!r}", field=f"{at}.sentences[{j}]")
    return SingleDateRecord(
        image_path(root, split, date, name), split, date, tuple(sentences), landcover_path(root, split, date, name)
    )


def read_landcover_classes(root: str | os.PathLike[str]) -> tuple[str, ...]:
    """The land-cover class names of a set (index = pixel value of its land-cover maps)."""
    path = Path(root) / SCENE_CAPTIONS_FILE
    return _header(path, _load(path))


def load_scene_captions(root: str | os.PathLike[str]) -> tuple[dict[str, Any], list[SingleDateRecord]]:
    """The whole ``scene_captions.json`` of a set (its extra fields included) and its records of every split, both
    in file order and validated (no file existence check)."""
    root_p = Path(root)
    path = root_p / SCENE_CAPTIONS_FILE
    doc = _load(path)
    _header(path, doc)
    records: list[SingleDateRecord] = []
    seen: dict[tuple[str, str, str], int] = {}
    for i, rec in enumerate(doc["images"]):
        r = _record(root_p, path, i, rec)
        key = (r.split, r.date, r.image_path.name)
        if key in seen:
            raise DataError(path, f"duplicate record (first at images[{seen[key]}])", field=f"images[{i}]")
        seen[key] = i
        records.append(r)
    return doc, records


def _split_records(root: Path, path: Path, split: str) -> list[tuple[int, SingleDateRecord]]:
    """``(index in the file, record)`` of the records of ``split`` only. A record of another split is skipped as soon
    as its ``split`` field is read: its file name, date and sentences are never looked at."""
    doc = _load(path)
    _header(path, doc)
    out: list[tuple[int, SingleDateRecord]] = []
    seen: dict[tuple[str, str], int] = {}
    for i, rec in enumerate(doc["images"]):
        other = rec.get("split") if isinstance(rec, dict) else None
        if other != split and other in SPLITS:
            continue
        r = _record(root, path, i, rec)
        key = (r.date, r.image_path.name)
        if key in seen:
            raise DataError(path, f"duplicate record (first at images[{seen[key]}])", field=f"images[{i}]")
        seen[key] = i
        out.append((i, r))
    return out


def read_synthcc_single_dates(
    root: str | os.PathLike[str],
    split: str,
    *,
    check_files: bool = True,
    other_splits: Literal["validate", "skip"] = "validate",
) -> list[SingleDateRecord]:
    """The single-date records of one split, in file order (two per pair: date A, then date B).

    ``other_splits="validate"``: every record of the file is validated, whatever its split; ``"skip"``: records of
    the other splits are skipped unread beyond their ``split`` field (pretraining reads ``split="train"`` this way,
    so that no validation or test caption is ever looked at). With ``check_files`` the image and land-cover map of
    each returned record must exist.
    """
    if split not in SPLITS:
        raise ConfigError("split", f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if other_splits not in ("validate", "skip"):
        raise ValueError(f"other_splits must be 'validate' or 'skip', got {other_splits!r}")
    path = Path(root) / SCENE_CAPTIONS_FILE
    if other_splits == "skip":
        indexed = _split_records(Path(root), path, split)
    else:
        _, records = load_scene_captions(root)
        indexed = [(i, r) for i, r in enumerate(records) if r.split == split]
    out: list[SingleDateRecord] = []
    for i, r in indexed:
        if check_files:
            for p, what in ((r.image_path, "image"), (r.landcover_path, "land-cover map")):
                if not p.is_file():
                    raise DataError(p, f"{what} not found (listed in {path.name} images[{i}])")
        out.append(r)
    return out


def read_landcover(path: str | os.PathLike[str], num_classes: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """A land-cover map as ``uint8 [H, W]`` class ids, checked: single-channel 8-bit, values < ``num_classes``, and
    ``(H, W) == size`` when given (the size of its image)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "land-cover map not found" if not p.exists() else "expected a file, found a folder")
    with load_image(p) as img:  # pixel bound, EXIF orientation (a transpose: the classes are kept exactly)
        mode = img.mode
        arr = np.asarray(img)
    if mode != "L":
        raise DataError(p, f"a land-cover map must be a single-channel 8-bit image, got mode {mode}")
    if size is not None and arr.shape != tuple(size):
        raise DataError(p, f"land-cover map is {arr.shape[0]}x{arr.shape[1]} px, its image {size[0]}x{size[1]} px")
    top = int(arr.max(initial=0))
    if top >= num_classes:
        raise DataError(p, f"value {top} is not a land-cover class (expected 0 to {num_classes - 1})")
    return arr
