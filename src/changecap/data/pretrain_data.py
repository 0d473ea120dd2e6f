"""Single-date images, their captions and land-cover maps, for pretraining foundations (``changecap pretrain``).

Two sources (``docs/pretraining.md`` shows the layouts):

``synthcc``
    A SynthCC root with single-date descriptions, read with SynthCC's own reader (``changecap.data.single_date``,
    whose docstring gives the layout): ``scene_captions.json`` and the images ``images/train/{A,B}/<filename>``,
    with their land-cover maps ``images/train/landcover/{A,B}/<filename>`` when that folder exists. Both dates of
    every train pair become records; the two dates of a pair form one ``group``. The pair captions of
    ``LevirCCcaptions.json`` are read separately (:func:`read_pair_captions`) for text-only targets.
``folder``
    A user's own images: ``ROOT/images/`` (or the images directly in ``ROOT``) with captions in
    ``ROOT/captions.csv`` (rows ``filename,caption``, several rows per image, an optional ``filename,caption`` header)
    or ``ROOT/captions.jsonl`` (lines ``{"filename": ..., "captions": [...]}``), and/or segmentation maps in
    ``ROOT/maps/`` (the image's file name, or its stem with ``.png``; class ids, 255 = unlabelled) with the class
    names in ``ROOT/classes.txt`` (one per line, line ``i`` is class ``i``) or ``ROOT/classes.json`` (a list).

**Train split only.** Pretraining must never see a validation or test image or caption, so that the systems built
on the foundations are evaluated on data no part of them has seen. ``split`` must be ``train``; a root that is a
validation or test folder of a dataset (``images/val``, ``…/test`` beside a ``train`` folder) is refused, and so is a
captions file entry inside such a folder; SynthCC entries of other splits are skipped before their sentences are
looked at and their files are never opened. Each refusal is a one-line :class:`~changecap.errors.ConfigError` or
:class:`~changecap.errors.DataError`.

A sample of :class:`SingleDateDataset` is ``{"image": float [C, H, W], "caption": str (one of the captions, drawn
per epoch), "captions": [str], "name": str, "landcover": long [H, W] (only when the record has a map)}``;
:class:`CaptionTextDataset` yields ``{"text": str, "name": str}`` (one caption), :class:`CaptionDocumentDataset`
``{"texts": [str], "name": str}`` (every caption of one image or pair).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from changecap.data.annotations import IMAGE_SUFFIXES, LEVIR_ANNOTATION
from changecap.data.image_io import (
    NORMALIZATION,
    load_image,
    read_rgb,
    resize_image,
    resize_shorter_then_center_crop,
    to_tensor_normalized,
)
from changecap.data.single_date import (
    LANDCOVER_FOLDER,
    SCENE_CAPTIONS_FILE,
    read_landcover_classes,
    read_synthcc_single_dates,
)
from changecap.errors import ConfigError, DataError

Source = Literal["auto", "synthcc", "folder"]
ResizeMode = Literal["resize", "clip"]
SOURCES: tuple[str, ...] = ("auto", "synthcc", "folder")
CAPTION_FILES: tuple[str, ...] = ("captions.csv", "captions.jsonl")
CLASS_FILES: tuple[str, ...] = ("classes.txt", "classes.json")
TRAIN_SPLIT = "train"
#: folder names of held-out splits: refused as a root (beside a train folder) and inside one
HELD_OUT_NAMES = frozenset({"val", "valid", "validation", "test", "testing"})
TRAIN_NAMES = frozenset({"train", "training"})
IGNORE_CLASS = 255  # a map pixel without a label: the segmentation loss skips it


@dataclass(frozen=True)
class PretrainRecord:
    """One single-date image with what is known about it.

    ``group`` ties records that must stay on the same side of a hold-out split (the two dates of a SynthCC pair,
    which share most of their content); it is the image's name elsewhere.
    """

    image_path: Path
    split: str
    captions: tuple[str, ...]
    landcover_path: Path | None
    name: str
    group: str


@dataclass
class PretrainCorpus:
    """What a pretraining run may read: the train split's single-date records and where they came from."""

    root: Path
    source: str  # "synthcc" or "folder"
    records: list[PretrainRecord]
    landcover_classes: list[str] | None = None
    description: str = ""

    @property
    def has_captions(self) -> bool:
        return bool(self.records) and all(r.captions for r in self.records)

    @property
    def has_landcover(self) -> bool:
        return bool(self.records) and all(r.landcover_path is not None for r in self.records)


# ---------------------------------------------------------------------------------------------------------- rules
def check_train_split(split: str, field: str = "data.split") -> str:
    """``train``, or a one-line ConfigError: pretraining never reads validation or test data."""
    if split != TRAIN_SPLIT:
        raise ConfigError(
            field,
            f"pretraining reads the train split only (validation and test images and captions stay unseen by every "
            f"foundation), got {split!r}",
        )
    return split


def check_not_held_out_folder(path: str | os.PathLike[str], field: str = "data.root") -> None:
    """Refuse a folder that is (or lies inside) a dataset's validation or test folder.

    A folder counts as one when it is named like a held-out split (``val``, ``test``, …) and either sits in an
    ``images`` folder (the LEVIR/SynthCC layout) or has a ``train``/``training`` sibling. A folder merely named
    ``test`` elsewhere (``/home/me/test/tiles``) is not refused.
    """
    resolved = Path(path).expanduser().resolve()
    for folder in (resolved, *resolved.parents):
        if folder.name.lower() not in HELD_OUT_NAMES:
            continue
        parent = folder.parent
        siblings = any((parent / name).is_dir() for name in TRAIN_NAMES) or any(
            (parent / name.capitalize()).is_dir() for name in TRAIN_NAMES
        )
        if parent.name.lower() == "images" or siblings:
            raise ConfigError(
                field,
                f"{path} is the {folder.name!r} split folder of a dataset; pretraining reads the train split only "
                "(point data.root at the dataset root or at a folder of training images)",
            )


def _check_relative_name(name: str, where: Path, line: str) -> str:
    """A captions-file entry: a relative path inside the images folder, not inside a held-out split folder."""
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts:
        raise DataError(where, f"file name {name!r} must be a relative path inside the images folder", field=line)
    held = [p for p in parts[:-1] if p.lower() in HELD_OUT_NAMES]
    if held:
        raise DataError(
            where,
            f"{name!r} lies in a {held[0]!r} folder; pretraining reads training images only",
            field=line,
        )
    return name


# ---------------------------------------------------------------------------------------------------------- reading
def read_pretrain_corpus(
    root: str | os.PathLike[str],
    source: str = "auto",
    split: str = TRAIN_SPLIT,
    captions_file: str | os.PathLike[str] | None = None,
    check_files: bool = True,
) -> PretrainCorpus:
    """The train split's single-date records of ``root`` (module docstring); ``source="auto"`` picks ``synthcc``
    when the root holds ``scene_captions.json``, else ``folder``. ``check_files`` stats every image and map."""
    check_train_split(split)
    if source not in SOURCES:
        raise ConfigError("data.source", f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    root_p = Path(root).expanduser()
    if not root_p.is_dir():
        raise DataError(root_p, "data folder not found" if not root_p.exists() else "expected a folder, found a file")
    check_not_held_out_folder(root_p)
    if source == "auto":
        source = "synthcc" if (root_p / SCENE_CAPTIONS_FILE).is_file() else "folder"
    if source == "synthcc":
        corpus = _read_synthcc(root_p, check_files)
    else:
        corpus = _read_folder(root_p, None if captions_file is None else Path(captions_file), check_files)
    if not corpus.records:
        raise DataError(root_p, "no training images found")
    return corpus


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read the file ({e.__class__.__name__})") from None
    except json.JSONDecodeError as e:
        raise DataError(path, f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None


def _sentences(path: Path, where: str, value: Any) -> tuple[str, ...]:
    """Caption strings of one entry: strings, or ``{"raw": ...}`` objects (the LEVIR-CC sentence form)."""
    if not isinstance(value, list) or not value:
        raise DataError(path, "expected a non-empty list of captions", field=where)
    out = []
    for k, s in enumerate(value):
        text = s.get("raw") if isinstance(s, dict) else s
        if not isinstance(text, str) or not text.strip():
            raise DataError(path, "expected a non-empty caption string", field=f"{where}[{k}]")
        out.append(" ".join(text.split()))
    return tuple(out)


def _read_synthcc(root: Path, check_files: bool) -> PretrainCorpus:
    """The train split's single dates through SynthCC's own reader (``changecap.data.single_date``): records of the
    other splits are skipped unread beyond their ``split`` field. Maps are used when the train split has its
    ``landcover`` folder."""
    records = read_synthcc_single_dates(root, TRAIN_SPLIT, check_files=False, other_splits="skip")
    has_maps = (root / "images" / TRAIN_SPLIT / LANDCOVER_FOLDER).is_dir()
    classes = list(read_landcover_classes(root)) if has_maps else None
    out = [
        PretrainRecord(
            r.image_path,
            TRAIN_SPLIT,
            tuple(" ".join(c.split()) for c in r.captions),
            r.landcover_path if has_maps else None,
            f"{r.date}/{r.image_path.name}",
            r.image_path.name,  # the pair: both dates stay on one side of the hold-out split
        )
        for r in records
    ]
    if check_files:
        _check_exist(out)
    return PretrainCorpus(root, "synthcc", out, classes, f"SynthCC single dates at {root} (train split)")


def _check_exist(records: Iterable[PretrainRecord]) -> None:
    for r in records:
        for p, what in ((r.image_path, "image"), (r.landcover_path, "land-cover map")):
            if p is not None and not p.is_file():
                raise DataError(p, f"{what} file not found")


def _read_folder(root: Path, captions_file: Path | None, check_files: bool) -> PretrainCorpus:
    images_dir = root / "images" if (root / "images").is_dir() else root
    if captions_file is None:
        found = [root / n for n in CAPTION_FILES if (root / n).is_file()]
        if len(found) > 1:
            raise DataError(root, f"both {CAPTION_FILES[0]} and {CAPTION_FILES[1]}; keep one", field="captions")
        captions_file = found[0] if found else None
    elif not captions_file.is_file():
        raise DataError(captions_file, "captions file not found")
    maps_dir = root / "maps"
    has_maps = maps_dir.is_dir()
    classes = _read_classes(root) if has_maps else None
    if captions_file is not None:
        check_not_held_out_folder(captions_file.parent, "data.captions")
        captions = _read_captions_file(captions_file)
    else:
        if not has_maps:
            raise DataError(
                root, f"no captions ({' or '.join(CAPTION_FILES)}) and no segmentation maps (maps/) in the folder"
            )
        captions = {p.relative_to(images_dir).as_posix(): () for p in _image_files(images_dir)}
    records = []
    for name, caps in captions.items():
        lc = _map_for(maps_dir, name) if has_maps else None
        records.append(PretrainRecord(images_dir / name, TRAIN_SPLIT, caps, lc, name, name))
    if check_files:
        _check_exist(records)
    what = " and ".join(
        w for w, on in (("captions", captions_file is not None), ("segmentation maps", has_maps)) if on
    )  # fmt: skip
    return PretrainCorpus(root, "folder", records, classes, f"images with {what} at {root}")


def _image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (sorted by name); sub-folders are not searched."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _map_for(maps_dir: Path, name: str) -> Path:
    """The map of image ``name``: the same relative name, or the same stem with ``.png`` (e.g. for a JPEG)."""
    same = maps_dir / name
    if same.is_file():
        return same
    png = same.with_suffix(".png")
    return png if png.is_file() else same  # a missing map is reported with the image's own name


def _read_classes(root: Path) -> list[str]:
    found = [root / n for n in CLASS_FILES if (root / n).is_file()]
    if not found:
        raise DataError(root, f"segmentation maps need their class names in {' or '.join(CLASS_FILES)}")
    path = found[0]
    if path.suffix == ".json":
        data = _load_json(path)
        if isinstance(data, dict):
            data = data.get("classes")
        if not isinstance(data, list) or not data or not all(isinstance(c, str) and c for c in data):
            raise DataError(path, "expected a non-empty list of class names", field="classes")
        names = list(data)
    else:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise DataError(path, "no class names")
    if len(names) > IGNORE_CLASS:
        raise DataError(path, f"{len(names)} classes; at most {IGNORE_CLASS} (255 marks unlabelled pixels)")
    return names


def _read_captions_file(path: Path) -> dict[str, tuple[str, ...]]:
    """``{file name: captions}`` in the order of first appearance, from a CSV or JSONL captions file."""
    out: dict[str, list[str]] = {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read the captions file ({e.__class__.__name__})") from None
    if path.suffix.lower() == ".jsonl":
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"line {n}"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, f"invalid JSON: {e.msg}", field=where) from None
            if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
                raise DataError(path, 'expected {"filename": ..., "captions": [...]}', field=where)
            caps = entry.get("captions", [entry["caption"]] if "caption" in entry else None)
            name = _check_relative_name(entry["filename"], path, where)
            out.setdefault(name, []).extend(_sentences(path, f"{where}.captions", caps))
    else:
        for n, row in enumerate(csv.reader(text.splitlines()), start=1):
            if not row or (n == 1 and [c.strip().lower() for c in row] == ["filename", "caption"]):
                continue
            where = f"line {n}"
            if len(row) < 2:
                raise DataError(path, "expected 'filename,caption'", field=where)
            # an unquoted comma inside a caption splits it: the columns after the first are the caption
            name, caption = row[0].strip(), ",".join(row[1:]).strip()
            _check_relative_name(name, path, where)
            if not caption:
                raise DataError(path, "empty caption", field=where)
            out.setdefault(name, []).append(" ".join(caption.split()))
    if not out:
        raise DataError(path, "no captions")
    return {k: tuple(v) for k, v in out.items()}


def read_pair_captions(root: str | os.PathLike[str], split: str = TRAIN_SPLIT) -> list[tuple[str, str]]:
    """``(pair file name, caption)`` for the train pairs of ``ROOT/LevirCCcaptions.json`` (SynthCC's change
    captions), or ``[]`` when the root has none. Entries of other splits are skipped unread."""
    check_train_split(split)
    path = Path(root) / LEVIR_ANNOTATION
    if not path.is_file():
        return []
    data = _load_json(path)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise DataError(path, "expected an object with an 'images' list", field="images")
    out = []
    for i, entry in enumerate(images):
        if not isinstance(entry, dict) or entry.get("split") != TRAIN_SPLIT:
            continue
        name = entry.get("filename")
        if not isinstance(name, str):
            raise DataError(path, "missing or non-string 'filename'", field=f"images[{i}].filename")
        out.extend((name, c) for c in _sentences(path, f"images[{i}].sentences", entry.get("sentences")))
    return out


# ---------------------------------------------------------------------------------------------------------- hold-out
def held_out_groups(groups: Iterable[str], fraction: float, seed: int) -> set[str]:
    """A seeded ``fraction`` of the distinct groups (at least one when ``fraction`` > 0 and there are two or more),
    kept out of pretraining to measure it: a pure function of the set of groups and ``seed``."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError("data.holdout", f"must be in [0, 1), got {fraction}")
    distinct = sorted(set(groups))
    if fraction == 0.0 or len(distinct) < 2:
        return set()
    n = min(len(distinct) - 1, max(1, round(fraction * len(distinct))))
    order = np.random.default_rng(np.random.SeedSequence((seed, 0x401D))).permutation(len(distinct))
    return {distinct[i] for i in order[:n]}


# ---------------------------------------------------------------------------------------------------------- images
def resolve_mean_std(normalize: Any, field: str = "data.normalize") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A statistics name of ``image_io.NORMALIZATION`` (``clip``, ``imagenet``, …), ``none``, or ``[mean, std]``."""
    if isinstance(normalize, str):
        if normalize == "none":
            return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        if normalize in NORMALIZATION:
            return NORMALIZATION[normalize]
        names = ", ".join(["none", *NORMALIZATION])
        raise ConfigError(field, f"unknown statistics {normalize!r}; expected one of {names} or [mean, std]")
    try:
        mean, std = (tuple(float(x) for x in v) for v in normalize)
    except (TypeError, ValueError):
        raise ConfigError(field, "expected a statistics name or [[mean r, g, b], [std r, g, b]]") from None
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise ConfigError(field, "mean and std need 3 values each and std must be positive")
    return mean, std


def read_class_map(path: Path, num_classes: int | None) -> np.ndarray:
    """A segmentation map as ``uint8 [H, W]`` class ids (mode L, or P read as its indices); values must be below
    ``num_classes`` or 255 (unlabelled)."""
    if not path.exists():
        raise DataError(path, "land-cover map file not found")
    with load_image(path) as img:  # pixel bound, EXIF orientation (a transpose: the ids are kept exactly)
        if img.mode not in ("L", "P"):
            raise DataError(path, f"expected a single-band 8-bit class map (mode L or P), got mode {img.mode}")
        arr = np.array(img, dtype=np.uint8)  # a P map's palette indices, never its colours
    if num_classes is not None:
        bad = np.unique(arr[(arr >= num_classes) & (arr != IGNORE_CLASS)])
        if bad.size:
            raise DataError(path, f"class id {int(bad[0])} is not below the {num_classes} classes (255: unlabelled)")
    return arr


@dataclass
class _Cached:
    image: np.ndarray
    landcover: np.ndarray | None


class SingleDateDataset(Dataset):
    """Single-date records as model inputs (sample contract in the module docstring).

    Images are read with ``image_io.read_rgb`` and brought to ``image_size`` the way the systems read theirs
    (``resize``: bicubic to a square; ``clip``: shorter side, then a centred crop); maps follow with nearest
    neighbour. ``cache`` keeps each resized image and map in memory after its first read (the SynthCC CPU scale:
    3,248 images of 64 px are 40 MB), which makes every epoch after the first read-free. The caption of an item is
    drawn from ``numpy.random.default_rng((seed, epoch, index))``: a pure function of those three numbers.
    """

    def __init__(
        self,
        records: Sequence[PretrainRecord],
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        resize_mode: ResizeMode = "resize",
        num_classes: int | None = None,
        seed: int = 0,
        cache: bool = True,
    ) -> None:
        self.records = list(records)
        self.image_size = int(image_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.resize_mode = resize_mode
        self.num_classes = num_classes
        self.seed = seed
        self.epoch = 0
        self.cache = cache
        self._cache: dict[int, _Cached] = {}

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _fit(self, arr: np.ndarray, resample: Literal["bicubic", "nearest"]) -> np.ndarray:
        if self.resize_mode == "clip":
            return resize_shorter_then_center_crop(arr, self.image_size, resample=resample)
        return resize_image(arr, self.image_size, resample=resample)

    def _load(self, index: int) -> _Cached:
        hit = self._cache.get(index)
        if hit is not None:
            return hit
        rec = self.records[index]
        image = self._fit(read_rgb(rec.image_path), "bicubic")  # [S, S, 3]
        landcover = None
        if rec.landcover_path is not None:
            raw = read_class_map(rec.landcover_path, self.num_classes)
            landcover = self._fit(raw, "nearest")  # [S, S]
        item = _Cached(image, landcover)
        if self.cache:
            self._cache[index] = item
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        item = self._load(index)
        sample: dict[str, Any] = {
            "image": to_tensor_normalized(item.image, self.mean, self.std),  # [3, S, S]
            "captions": list(rec.captions),
            "caption": "",
            "name": rec.name,
        }
        if rec.captions:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            sample["caption"] = rec.captions[int(rng.integers(len(rec.captions)))]
        if item.landcover is not None:
            sample["landcover"] = torch.from_numpy(item.landcover.astype(np.int64))  # [S, S]
        return sample


@dataclass
class TextItem:
    """One caption, its hold-out group and the document it belongs to (the image or pair it describes)."""

    text: str
    group: str
    document: str = ""


@dataclass
class CaptionTextDataset(Dataset):
    """Caption text only (language-model targets): ``{"text", "name"}`` per caption; no image is opened."""

    items: list[TextItem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        return {"text": item.text, "name": item.group}


class CaptionDocumentDataset(Dataset):
    """Caption text as documents: one item per image or pair, ``{"texts": [str], "name": str}`` with all its
    captions, in an order drawn from ``numpy.random.default_rng((seed, epoch, index))`` (a pure function of those
    numbers, so a resumed run sees the same orders). Paraphrases of one scene in one sequence are what teaches a
    small language model to use its context, as documents teach a real one."""

    def __init__(self, items: Sequence[TextItem], seed: int = 0) -> None:
        documents: dict[str, list[str]] = {}
        groups: dict[str, str] = {}
        for item in items:
            documents.setdefault(item.document or item.group, []).append(item.text)
            groups.setdefault(item.document or item.group, item.group)
        self.documents = list(documents.values())
        self.groups = list(groups.values())
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.documents)

    def __getitem__(self, index: int) -> dict[str, Any]:
        texts = self.documents[index]
        order = np.random.default_rng((self.seed, self.epoch, index)).permutation(len(texts))
        return {"texts": [texts[i] for i in order], "name": self.groups[index]}


def caption_texts(records: Iterable[PretrainRecord], pairs: Iterable[tuple[str, str]] = ()) -> list[TextItem]:
    """Every caption of the records, then the pair captions, each with its hold-out group and its document (the
    record's name; ``pair:`` and the pair's name for change captions)."""
    items = [TextItem(c, r.group, r.name) for r in records for c in r.captions]
    items += [TextItem(text, group, f"pair:{group}") for group, text in pairs]
    return items


def collate_single_dates(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples: ``image [B, C, H, W]`` and ``landcover [B, H, W]`` (only when every sample has one) as tensors,
    ``caption``, ``captions``, ``text`` and ``name`` as lists."""
    if not samples:
        raise ValueError("collate_single_dates needs at least one sample")
    batch: dict[str, Any] = {}
    for key, value in samples[0].items():
        if isinstance(value, torch.Tensor):
            if all(key in s for s in samples):
                batch[key] = torch.stack([s[key] for s in samples])
        else:
            batch[key] = [s.get(key) for s in samples]
    return batch
