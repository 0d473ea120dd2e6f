"""Parsers of the on-disk RSICC dataset formats → ``list[PairRecord]`` (spec ``data-and-metrics.md`` §1–5).

Supported formats (``FORMATS``):

``levir-cc``
    ``LevirCCcaptions.json`` (Karpathy style, ``images[].{filename, split, filepath, changeflag, sentences[].raw}``)
    and ``images/{split}/{A,B}/<filename>``. ``raw`` is read and re-tokenised; ``tokens`` is the fall-back when an
    entry has no ``raw``.
``levir-mci``
    ``levir-cc`` plus change masks in ``images/{split}/label/<filename>`` (required).
``whu-cdc``
    The LEVIR layout (masks used when ``label/`` exists), or — when the root has no captions JSON — the
    MaskApproxNet preprocessed lists (``train.txt`` with ``name.png-k`` lines, ``tokens/`` or ``tokens.zip``) read
    like ``tokens``. WHU-CD labels mark building change with 255, which the mask reader maps to class 2
    (building), consistent with LEVIR-MCI (``binary_mask=True`` gives 0/1 as MaskApproxNet uses).
``dubai-cc``
    Caption JSONs named ``Train_*`` / ``Validation_*`` / ``Test_*`` (the prefix sets the split) in a captions folder
    (``description_jsontr_te_val/``, discovered under the root), 50×50 ``.tif`` tiles in ``500_2000/`` (before) and
    ``500_2010/`` (after), discovered under the root. Captions keep their case.
``levir-cd``
    Change-detection pairs without captions (LEVIR-CD, DSIFN-CD, WHU-CD crops): ``{split}/{A,B,label}/`` below the
    root (the official LEVIR-CD layout), or ``A/``, ``B/``, ``label/`` directly in the root, whose pairs then form
    the ``train`` split. Every pair needs its label; the change flag is read from it (any non-zero pixel). Used to
    train and evaluate change detection, alone or mixed with caption datasets (``data.extra``).
``second-cc``
    SECOND-CC: ``SECOND-CC-AUG.json`` (Karpathy style like ``LevirCCcaptions.json``; ``filepath`` and
    ``changeflag`` are read when present) and ``{split}/rgb/{A,B}/<filename>`` images with per-date SECOND
    semantic maps in ``{split}/sem/{A,B}/<filename>`` (required). The change mask is where the two maps differ
    (:mod:`changecap.data.semantic_maps`); records carry both map paths in ``semantic_paths``.
``tokens``
    The peers' preprocessed layout: ``{train,val,test}.txt`` (names, or ``name.png-k`` lines, deduplicated),
    ``tokens/<stem>.txt`` (JSON list of token lists with ``<START>``/``<END>``), optional ``images/{split}/{A,B}/``.
    Without ``images/`` the records have no image paths (caption-only use: vocabularies, text baselines,
    caption statistics); :class:`~changecap.data.datasets.ChangeCaptionDataset` then yields samples without
    ``image``.

Validation is strict: every problem raises a one-line :class:`~changecap.errors.DataError` naming the file and the
field (``images[12].sentences``). File existence is checked when ``check_files`` is true (a ``stat`` per file);
decoding images is left to the readers and to ``changecap data check --deep``.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from changecap.data.text import changed_from_captions, dubai_changed_from_captions, normalize_caption
from changecap.data.vocab import END, START
from changecap.errors import ConfigError, DataError

FORMATS: tuple[str, ...] = ("levir-cc", "levir-mci", "whu-cdc", "dubai-cc", "tokens", "levir-cd", "second-cc")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SPLITS: tuple[str, ...] = ("train", "val", "test")
LEVIR_ANNOTATION = "LevirCCcaptions.json"
SECOND_CC_ANNOTATION = "SECOND-CC-AUG.json"
DUBAI_CAPTIONS_DIR = "description_jsontr_te_val"
DUBAI_BEFORE_DIR, DUBAI_AFTER_DIR = "500_2000", "500_2010"
# Dubai-CC file-name prefix → split (compared case-insensitively).
DUBAI_PREFIXES: dict[str, str] = {"train_": "train", "validation_": "val", "test_": "test"}
# ``train_000001.png-3`` → name ``train_000001.png``, caption index 3 (Chg2Cap / MaskApproxNet per-caption lists).
_LIST_LINE = re.compile(r"^(?P<name>.+\.[A-Za-z0-9]+)-(?P<k>\d+)$")
_DISCOVERY_DEPTH = 4  # how deep below the root Dubai-CC folders are searched
MaskPolicy = Literal["required", "optional", "none"]


@dataclass
class PairRecord:
    """One before/after pair with its reference captions.

    Attributes:
        name: file name of the pair (e.g. ``train_000001.png``), unique within a split.
        split: ``train`` / ``val`` / ``test``.
        before_path / after_path: image files (None for caption-only datasets).
        mask_path: change mask file (LEVIR-MCI, WHU-CDC with labels), else None.
        captions: reference captions, normalised (RSICC-tokenised and joined with single spaces).
        changed: change flag.
        changed_from: ``"json"`` when read from ``changeflag``, ``"captions"`` when derived from the text.
        source: where the captions were read (file and field), for messages.
        caption_changed: the flag derived from the captions (for consistency checks), None without captions.
        semantic_paths: before and after semantic maps (``second-cc``), else None; the change mask is derived from
            them (:func:`changecap.data.semantic_maps.read_change_mask`).
    """

    name: str
    split: str
    before_path: Path | None
    after_path: Path | None
    mask_path: Path | None
    captions: list[str]
    changed: bool
    changed_from: Literal["json", "captions"]
    source: str = ""
    caption_changed: bool | None = field(default=None, repr=False)  # flag derived from text (for consistency checks)
    semantic_paths: tuple[Path, Path] | None = field(default=None, repr=False)

    @property
    def has_images(self) -> bool:
        return self.before_path is not None and self.after_path is not None

    @property
    def has_mask(self) -> bool:
        """A change mask is available: a mask file, or two semantic maps to derive it from."""
        return self.mask_path is not None or self.semantic_paths is not None


@dataclass
class Layout:
    """Optional overrides of where a dataset's files are; unset fields are discovered from the root.

    Attributes:
        annotation: captions JSON of the LEVIR-style formats (default ``LevirCCcaptions.json``, or the only
            ``*.json`` in the root other than ``vocab.json``).
        image_root: folder holding ``{split}/{A,B,label}/`` (default ``<root>/images``).
        captions_dir: Dubai-CC folder with ``Train_*``/``Validation_*``/``Test_*`` JSON files.
        before_dir / after_dir: Dubai-CC image folders (default: ``500_2000`` / ``500_2010`` found under the root).
    """

    annotation: Path | None = None
    image_root: Path | None = None
    captions_dir: Path | None = None
    before_dir: Path | None = None
    after_dir: Path | None = None


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError("format", f"unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def _check_splits(splits: Iterable[str] | str | None) -> tuple[str, ...]:
    if splits is None:
        return SPLITS
    chosen = (splits,) if isinstance(splits, str) else tuple(splits)
    for s in chosen:
        if s not in SPLITS:
            raise ConfigError("split", f"unknown split {s!r}; expected one of {', '.join(SPLITS)}")
    return chosen


def parse_annotations(
    root: str | os.PathLike[str],
    fmt: str,
    splits: Iterable[str] | str | None = None,
    *,
    layout: Layout | None = None,
    lower: bool = False,
    check_files: bool = True,
    keep_empty: bool = False,
) -> list[PairRecord]:
    """Read a dataset's annotations and return its pairs (all splits, or only ``splits``), in file order.

    The whole annotation is validated even when only some splits are returned (cheap, and a broken val entry should
    not wait until evaluation day). ``check_files`` checks that every image / mask of the returned splits exists.
    ``keep_empty`` keeps empty captions (as ``""``) and empty caption lists instead of rejecting them, so that
    ``changecap data audit`` can list every such pair; training and evaluation never set it.
    """
    root_p = Path(root)
    check_format(fmt)
    wanted = _check_splits(splits)
    lay = layout or Layout()
    if not root_p.is_dir():
        raise DataError(root_p, "dataset root not found" if not root_p.exists() else "dataset root is not a folder")
    if fmt == "dubai-cc":
        return _parse_dubai(root_p, wanted, lay, lower, check_files, keep_empty)
    if fmt == "tokens":
        return _parse_token_lists(root_p, wanted, lay, lower, check_files, masks="optional", keep_empty=keep_empty)
    if fmt == "levir-cd":
        return _parse_cd_folders(root_p, wanted)
    if fmt == "second-cc":
        return _parse_second_cc(root_p, wanted, lay, lower, check_files)
    annotation = _find_annotation(root_p, lay, allow_missing=fmt == "whu-cdc")
    if annotation is None:  # whu-cdc without a captions JSON: MaskApproxNet list files
        return _parse_token_lists(root_p, wanted, lay, lower, check_files, masks="optional", keep_empty=keep_empty)
    masks: MaskPolicy = "required" if fmt == "levir-mci" else "optional" if fmt == "whu-cdc" else "none"
    return _parse_levir_json(root_p, annotation, wanted, lay, lower, check_files, masks, keep_empty)


# ---------------------------------------------------------------------------------------------------------- JSON
def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(path, "file not found" if not path.exists() else "expected a file, found a folder")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON (line {e.lineno} column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError:
        raise DataError(path, "not valid JSON (not UTF-8 text)") from None


def _find_annotation(
    root: Path, lay: Layout, allow_missing: bool, default_name: str = LEVIR_ANNOTATION
) -> Path | None:
    if lay.annotation is not None:
        return Path(lay.annotation)
    default = root / default_name
    if default.exists():
        return default
    candidates = sorted(p for p in root.glob("*.json") if p.name != "vocab.json")
    if len(candidates) == 1:
        return candidates[0]
    if allow_missing and any((root / f"{s}.txt").exists() for s in SPLITS):
        return None
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates[:4])
        raise DataError(root, f"several caption JSON files ({names}); choose one with --annotation")
    raise DataError(default, f"annotation file not found (expected {default_name} in the dataset root)")


@dataclass
class _Entry:
    """One validated ``images[i]`` entry of a Karpathy-style captions JSON."""

    index: int
    filename: str
    split: str
    folder: str
    captions: list[str]
    changeflag: bool | None


def _images_list(path: Path, data: Any) -> list[Any]:
    if not isinstance(data, dict):
        raise DataError(path, f"expected a JSON object with an 'images' list, got {type(data).__name__}")
    if "images" not in data:
        raise DataError(path, "missing top-level key", field="images")
    images = data["images"]
    if not isinstance(images, list):
        raise DataError(path, f"expected a list, got {type(images).__name__}", field="images")
    return images


def _parse_sentences(path: Path, where: str, sentences: Any, lower: bool, keep_empty: bool = False) -> list[str]:
    if not isinstance(sentences, list):
        raise DataError(path, f"expected a list of sentences, got {type(sentences).__name__}", field=where)
    if not sentences and not keep_empty:
        raise DataError(path, "caption list is empty", field=where)
    captions: list[str] = []
    for j, sent in enumerate(sentences):
        at = f"{where}[{j}]"
        if isinstance(sent, str):  # lenient: a bare caption string
            raw: Any = sent
        elif isinstance(sent, dict):
            raw = sent.get("raw")
            if raw is None:  # older copies / RSICCformer-style entries carry only the token list
                toks = sent.get("tokens")
                if toks is None:
                    raise DataError(path, "sentence has neither 'raw' nor 'tokens'", field=at)
                if not isinstance(toks, list) or not all(isinstance(t, str) for t in toks):
                    raise DataError(path, "expected a list of strings", field=f"{at}.tokens")
                raw = " ".join(t for t in toks if t not in (START, END))
            elif not isinstance(raw, str):
                raise DataError(path, f"expected a string, got {type(raw).__name__}", field=f"{at}.raw")
        else:
            raise DataError(path, f"expected a sentence object, got {type(sent).__name__}", field=at)
        caption = normalize_caption(raw, lower=lower)
        if not caption and not keep_empty:
            raise DataError(path, "caption is empty after tokenisation", field=at)
        captions.append(caption)
    return captions


def _parse_entries(
    path: Path, images: list[Any], lower: bool, forced_split: str | None = None, keep_empty: bool = False
) -> list[_Entry]:
    """Validate every entry; ``forced_split`` (Dubai-CC: from the file name) replaces the ``split`` field."""
    entries: list[_Entry] = []
    seen: dict[tuple[str, str], int] = {}
    for i, img in enumerate(images):
        at = f"images[{i}]"
        if not isinstance(img, dict):
            raise DataError(path, f"expected an object, got {type(img).__name__}", field=at)
        filename = img.get("filename")
        if filename is None:
            raise DataError(path, "missing field", field=f"{at}.filename")
        if not isinstance(filename, str) or not filename.strip():
            raise DataError(path, "expected a non-empty file name string", field=f"{at}.filename")
        if "/" in filename or "\\" in filename or filename in (".", ".."):
            raise DataError(path, f"file name {filename!r} must not contain a folder", field=f"{at}.filename")
        if forced_split is not None:
            split = forced_split
        else:
            split = img.get("split")
            if split is None:
                raise DataError(path, "missing field", field=f"{at}.split")
            if split not in SPLITS:
                raise DataError(path, f"unknown split {split!r}; expected train, val or test", field=f"{at}.split")
        folder = img.get("filepath", split) if forced_split is None else split
        if not isinstance(folder, str) or not folder or "/" in folder or folder in (".", ".."):
            raise DataError(path, f"invalid image folder {folder!r}", field=f"{at}.filepath")
        if "sentences" not in img:
            raise DataError(path, "missing field", field=f"{at}.sentences")
        captions = _parse_sentences(path, f"{at}.sentences", img["sentences"], lower, keep_empty)
        flag = img.get("changeflag")
        if flag is not None:
            if isinstance(flag, bool) or flag in (0, 1):
                flag = bool(flag)
            else:
                raise DataError(path, f"changeflag must be 0 or 1, got {flag!r}", field=f"{at}.changeflag")
        key = (split, filename)
        if key in seen:
            raise DataError(
                path,
                f"duplicate filename {filename!r} in split {split!r} (first at images[{seen[key]}])",
                field=f"{at}.filename",
            )
        seen[key] = i
        entries.append(_Entry(i, filename, split, folder, captions, flag))
    return entries


def _require_file(path: Path, what: str, source: str) -> None:
    if not path.is_file():
        state = "not found" if not path.exists() else "is not a file"
        raise DataError(path, f"{what} {state} (listed in {source})")


def _parse_levir_json(
    root: Path,
    annotation: Path,
    wanted: tuple[str, ...],
    lay: Layout,
    lower: bool,
    check_files: bool,
    masks: MaskPolicy,
    keep_empty: bool = False,
) -> list[PairRecord]:
    images = _images_list(annotation, _load_json(annotation))
    entries = _parse_entries(annotation, images, lower, keep_empty=keep_empty)
    image_root = Path(lay.image_root) if lay.image_root is not None else root / "images"
    records: list[PairRecord] = []
    label_dirs: dict[str, bool] = {}
    for e in entries:
        if e.split not in wanted:
            continue
        folder = image_root / e.folder
        source = f"{annotation.name} [images[{e.index}]]"
        mask_path: Path | None = None
        if masks != "none":
            label_dir = folder / "label"
            if e.folder not in label_dirs:
                label_dirs[e.folder] = label_dir.is_dir()
                if masks == "required" and check_files and not label_dirs[e.folder]:
                    raise DataError(label_dir, "label folder not found (levir-mci needs change masks)")
            if label_dirs[e.folder] or masks == "required":
                mask_path = label_dir / e.filename
        rec = _make_record(
            e.filename,
            e.split,
            folder / "A" / e.filename,
            folder / "B" / e.filename,
            mask_path,
            e.captions,
            e.changeflag,
            source,
            changed_from_captions,
        )
        if check_files:
            _check_record_files(rec)
        records.append(rec)
    return records


def _make_record(
    name: str,
    split: str,
    before: Path | None,
    after: Path | None,
    mask: Path | None,
    captions: list[str],
    flag: bool | None,
    source: str,
    derive: Callable[[list[str]], bool],
) -> PairRecord:
    from_text = bool(derive(captions))
    if flag is not None:
        return PairRecord(name, split, before, after, mask, captions, flag, "json", source, from_text)
    return PairRecord(name, split, before, after, mask, captions, from_text, "captions", source, from_text)


def _check_record_files(rec: PairRecord) -> None:
    if rec.before_path is not None:
        _require_file(rec.before_path, "before image (A)", rec.source)
    if rec.after_path is not None:
        _require_file(rec.after_path, "after image (B)", rec.source)
    if rec.mask_path is not None:
        _require_file(rec.mask_path, "label image", rec.source)
    if rec.semantic_paths is not None:
        _require_file(rec.semantic_paths[0], "before semantic map (sem/A)", rec.source)
        _require_file(rec.semantic_paths[1], "after semantic map (sem/B)", rec.source)


# ---------------------------------------------------------------------------------------------------------- SECOND-CC
def _parse_second_cc(
    root: Path, wanted: tuple[str, ...], lay: Layout, lower: bool, check_files: bool
) -> list[PairRecord]:
    """``SECOND-CC-AUG.json`` + ``{split}/rgb/{A,B}/`` + ``{split}/sem/{A,B}/`` (the split folders in the root)."""
    annotation = _find_annotation(root, lay, allow_missing=False, default_name=SECOND_CC_ANNOTATION)
    assert annotation is not None  # allow_missing=False: raises instead
    entries = _parse_entries(annotation, _images_list(annotation, _load_json(annotation)), lower)
    image_root = Path(lay.image_root) if lay.image_root is not None else root
    records: list[PairRecord] = []
    checked_dirs: set[str] = set()
    for e in entries:
        if e.split not in wanted:
            continue
        folder = image_root / e.folder
        if check_files and e.folder not in checked_dirs:
            checked_dirs.add(e.folder)
            for sub in ("rgb/A", "rgb/B", "sem/A", "sem/B"):
                if not (folder / sub).is_dir():
                    what = "semantic map" if sub.startswith("sem") else "image"
                    raise DataError(folder / sub, f"{what} folder not found (second-cc needs {{split}}/{sub}/)")
        rec = _make_record(
            e.filename,
            e.split,
            folder / "rgb" / "A" / e.filename,
            folder / "rgb" / "B" / e.filename,
            None,
            e.captions,
            e.changeflag,
            f"{annotation.name} [images[{e.index}]]",
            changed_from_captions,
        )
        rec.semantic_paths = (folder / "sem" / "A" / e.filename, folder / "sem" / "B" / e.filename)
        if check_files:
            _check_record_files(rec)
        records.append(rec)
    return records


# ---------------------------------------------------------------------------------------------------------- LEVIR-CD
def _parse_cd_folders(root: Path, wanted: tuple[str, ...]) -> list[PairRecord]:
    """``{split}/{A,B,label}/`` or a flat ``A/B/label/`` (= the train split); no captions, flags from the labels."""
    from changecap.data.image_io import read_mask

    split_dirs = {s: root / s for s in SPLITS if (root / s / "A").is_dir()}
    if not split_dirs:
        if not (root / "A").is_dir():
            raise DataError(root, "no A/ folder (expected {split}/A,B,label/ or A/, B/, label/ below the root)")
        split_dirs = {"train": root}
    records: list[PairRecord] = []
    for split, folder in split_dirs.items():
        if split not in wanted:
            continue
        for before in sorted(p for p in (folder / "A").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            after, label = folder / "B" / before.name, folder / "label" / before.name
            source = f"{folder / 'A'} [{before.name}]"
            _require_file(after, "after image (B)", source)
            _require_file(label, "label image", source)
            changed = bool((read_mask(label) > 0).any())
            records.append(PairRecord(before.name, split, before, after, label, [], changed, "json", source, None))
    return records


# ---------------------------------------------------------------------------------------------------------- Dubai-CC
def _walk_dirs(root: Path, depth: int) -> Iterable[Path]:
    """Folders below ``root`` up to ``depth`` levels, breadth-first and sorted (deterministic discovery)."""
    level = [root]
    for _ in range(depth):
        nxt: list[Path] = []
        for d in level:
            try:
                children = sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))
            except OSError:
                continue
            yield from children
            nxt.extend(children)
        level = nxt


def _dubai_split_of(path: Path) -> str | None:
    low = path.name.lower()
    return next((split for prefix, split in DUBAI_PREFIXES.items() if low.startswith(prefix)), None)


def find_dubai_captions_dir(root: Path, lay: Layout) -> Path:
    if lay.captions_dir is not None:
        d = Path(lay.captions_dir)
        if not d.is_dir():
            raise DataError(d, "Dubai-CC captions folder not found")
        return d
    if any(_dubai_split_of(p) for p in root.glob("*.json")):
        return root
    for d in _walk_dirs(root, _DISCOVERY_DEPTH):
        if d.name == DUBAI_CAPTIONS_DIR or any(_dubai_split_of(p) for p in d.glob("*.json")):
            return d
    raise DataError(
        root / DUBAI_CAPTIONS_DIR,
        "Dubai-CC captions folder not found (expected Train_*/Validation_*/Test_* JSON files; set captions_dir)",
    )


def find_dubai_image_dirs(root: Path, lay: Layout) -> tuple[Path | None, Path | None]:
    before = Path(lay.before_dir) if lay.before_dir is not None else None
    after = Path(lay.after_dir) if lay.after_dir is not None else None
    if before is None:
        before = next((d for d in _walk_dirs(root, _DISCOVERY_DEPTH + 2) if d.name == DUBAI_BEFORE_DIR), None)
    if after is None and before is not None:
        sibling = before.parent / DUBAI_AFTER_DIR
        after = sibling if sibling.is_dir() else None
    if after is None:
        after = next((d for d in _walk_dirs(root, _DISCOVERY_DEPTH + 2) if d.name == DUBAI_AFTER_DIR), None)
    return before, after


def _parse_dubai(
    root: Path, wanted: tuple[str, ...], lay: Layout, lower: bool, check_files: bool, keep_empty: bool = False
) -> list[PairRecord]:
    cap_dir = find_dubai_captions_dir(root, lay)
    files = sorted(cap_dir.glob("*.json"))
    if not files:
        raise DataError(cap_dir, "no caption JSON files (expected Train_*.json, Validation_*.json, Test_*.json)")
    before_dir, after_dir = find_dubai_image_dirs(root, lay)
    if check_files:
        if before_dir is None or not before_dir.is_dir():
            raise DataError(before_dir or root / DUBAI_BEFORE_DIR, "Dubai-CC before-image folder not found")
        if after_dir is None or not after_dir.is_dir():
            raise DataError(after_dir or root / DUBAI_AFTER_DIR, "Dubai-CC after-image folder not found")
    records: list[PairRecord] = []
    seen: dict[str, Path] = {}
    for f in files:
        split = _dubai_split_of(f)
        if split is None:
            raise DataError(
                f,
                "file name must start with Train_, Validation_ or Test_ (the prefix sets the split)",
                field="file name",
            )
        entries = _parse_entries(f, _images_list(f, _load_json(f)), lower, forced_split=split, keep_empty=keep_empty)
        for e in entries:
            if e.filename in seen:  # a tile in two files would leak between splits or duplicate references
                raise DataError(
                    f,
                    f"duplicate filename {e.filename!r} (also in {seen[e.filename].name})",
                    field=f"images[{e.index}].filename",
                )
            seen[e.filename] = f
            if split not in wanted:
                continue
            before = before_dir / e.filename if before_dir is not None else None
            after = after_dir / e.filename if after_dir is not None else None
            rec = _make_record(
                e.filename,
                split,
                before,
                after,
                None,
                e.captions,
                e.changeflag,
                f"{f.name} [images[{e.index}]]",
                dubai_changed_from_captions,
            )
            if check_files:
                _check_record_files(rec)
            records.append(rec)
    # Files are read in name order; present records per split in a stable order independent of file naming.
    order = {s: i for i, s in enumerate(SPLITS)}
    records.sort(key=lambda r: order[r.split])
    return records


# ---------------------------------------------------------------------------------------------------------- tokens
def parse_list_file(path: Path) -> list[str]:
    """Names in a ``train.txt``-style list; ``name.png-k`` lines collapse to ``name.png`` (first-seen order)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(path, "not a UTF-8 text list of file names") from None
    names: dict[str, None] = {}
    for line in lines:
        entry = line.strip()
        if not entry:
            continue
        m = _LIST_LINE.match(entry)
        names[m.group("name") if m else entry] = None
    return list(names)


class _TokenSource:
    """Token files from ``tokens/`` or, failing that, ``tokens.zip`` (as MaskApproxNet ships WHU-CDC).

    A context manager: the archive stays open while a split is parsed (re-opening it per file would re-read the
    central directory thousands of times).
    """

    def __init__(self, root: Path) -> None:
        self.dir = root / "tokens"
        self.zip_path = root / "tokens.zip"
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, str] = {}
        if self.dir.is_dir():
            return
        if not self.zip_path.is_file():
            raise DataError(self.dir, "tokens folder not found (the tokens layout needs tokens/<name>.txt files)")
        try:
            self._zip = zipfile.ZipFile(self.zip_path)
        except zipfile.BadZipFile:
            raise DataError(self.zip_path, "not a valid zip archive") from None
        self._members = {Path(n).name: n for n in self._zip.namelist() if n.endswith(".txt")}

    def __enter__(self) -> _TokenSource:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._zip is not None:
            self._zip.close()

    def read(self, stem: str, listed_in: str) -> tuple[str, Any]:
        fname = f"{stem}.txt"
        if self._zip is None:
            p = self.dir / fname
            if not p.is_file():
                raise DataError(p, f"tokens file not found (listed in {listed_in})")
            return str(p), _load_json(p)
        where = f"{self.zip_path}:{fname}"
        member = self._members.get(fname)
        if member is None:
            raise DataError(where, f"tokens file not found in the archive (listed in {listed_in})")
        try:
            return where, json.loads(self._zip.read(member).decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(where, f"not valid JSON ({e})") from None


def _captions_from_token_file(where: str, data: Any, lower: bool, keep_empty: bool = False) -> list[str]:
    if not isinstance(data, list):
        raise DataError(where, f"expected a JSON list of token lists, got {type(data).__name__}")
    if not data and not keep_empty:
        raise DataError(where, "caption list is empty")
    captions: list[str] = []
    for k, toks in enumerate(data):
        if isinstance(toks, str):
            raw = toks
        elif isinstance(toks, list) and all(isinstance(t, str) for t in toks):
            raw = " ".join(t for t in toks if t not in (START, END))
        else:
            raise DataError(where, "expected a list of token strings", field=f"[{k}]")
        caption = normalize_caption(raw, lower=lower)
        if not caption and not keep_empty:
            raise DataError(where, "caption is empty", field=f"[{k}]")
        captions.append(caption)
    return captions


def _parse_token_lists(
    root: Path,
    wanted: tuple[str, ...],
    lay: Layout,
    lower: bool,
    check_files: bool,
    masks: Literal["optional", "none"],
    keep_empty: bool = False,
) -> list[PairRecord]:
    lists = {s: root / f"{s}.txt" for s in SPLITS}
    present = [s for s in SPLITS if lists[s].is_file()]
    if not present:
        raise DataError(lists["train"], "split list not found (expected train.txt, val.txt and/or test.txt)")
    explicit = len(wanted) < len(SPLITS)
    for s in wanted:
        if explicit and s not in present:
            raise DataError(lists[s], f"split list not found (needed for the {s} split)")
    image_root = Path(lay.image_root) if lay.image_root is not None else root / "images"
    names_by_split = {s: parse_list_file(lists[s]) for s in present}
    owner: dict[str, str] = {}
    for s in present:
        for n in names_by_split[s]:
            if n in owner:
                raise DataError(lists[s], f"{n!r} is also listed in {owner[n]}.txt (a pair belongs to one split)")
            owner[n] = s
    records: list[PairRecord] = []
    with _TokenSource(root) as tokens:
        for s in (s for s in wanted if s in present):
            folder = image_root / s
            has_images = (folder / "A").is_dir() or (folder / "B").is_dir()
            if has_images and check_files:
                for side in ("A", "B"):
                    if not (folder / side).is_dir():
                        raise DataError(folder / side, "image folder not found (the other date's folder exists)")
            has_masks = masks != "none" and (folder / "label").is_dir()
            for n in names_by_split[s]:
                where, data = tokens.read(n.split(".")[0], lists[s].name)  # peers: token file = name.split('.')[0]
                rec = _make_record(
                    n,
                    s,
                    folder / "A" / n if has_images else None,
                    folder / "B" / n if has_images else None,
                    folder / "label" / n if has_masks else None,
                    _captions_from_token_file(where, data, lower, keep_empty),
                    None,
                    where,
                    changed_from_captions,
                )
                if check_files:
                    _check_record_files(rec)
                records.append(rec)
    return records


def split_counts(records: Sequence[PairRecord]) -> dict[str, int]:
    """Number of pairs per split (splits without pairs omitted)."""
    out: dict[str, int] = {}
    for r in records:
        out[r.split] = out.get(r.split, 0) + 1
    return out
