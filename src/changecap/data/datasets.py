"""Map-style dataset of before/after pairs with their captions (sample contract: ``docs/architecture.md``).

>>> ds = open_dataset("data/LEVIR-CC", "levir-cc", "train", image_size=224, resize_mode="clip", normalize="clip")
... # doctest: +SKIP
>>> ds[0]["image"].shape                                                                         # doctest: +SKIP
torch.Size([2, 3, 224, 224])

Conventions (see ``data-and-metrics.md``):

* ``vocab=None`` builds the vocabulary from the **train split** of the same dataset (count > 5; Dubai-CC keeps every
  word) — the leak-free choice. Published checkpoints used all splits; pass
  ``build_vocabulary(root, fmt, splits="all")`` or the shipped ``vocab.json`` to reproduce them.
* ``max_length=None`` takes the format's convention: 41 (LEVIR-CC / LEVIR-MCI / WHU-CDC / tokens), 27 (Dubai-CC),
  52 (SECOND-CC).
* ``image_size=None`` keeps the native size, except Dubai-CC whose 50×50 tiles are upsampled to 256 (Chg2Cap).
  Resizing uses bicubic (CLIP's rule), Dubai-CC bilinear (Chg2Cap upsamples bilinearly; it does so on the GPU with
  ``align_corners=True``, which Pillow cannot express — the difference is below one grey level on most pixels).
* Randomness (reference choice in ``sampling="random"``, flips) is drawn from ``numpy.random.default_rng((seed,
  epoch, index))``, so a sample is a pure function of those three numbers and a resumed run is exact.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from changecap.data.annotations import (
    SPLITS,
    Layout,
    PairRecord,
    check_format,
    parse_annotations,
)
from changecap.data.augment import flip_array, flip_caption, flip_pair
from changecap.data.image_io import (
    NORMALIZATION,
    fit_image,
    read_mask,
    read_rgb,
    to_tensor_normalized,
)
from changecap.data.packed import PACK_FILE, PackedSplit
from changecap.data.semantic_maps import change_from_semantic, read_semantic_pair
from changecap.data.text import CANONICAL_NO_CHANGE, DUBAI_CANONICAL_NO_CHANGE, tokenize
from changecap.data.vocab import ThresholdRule, Vocabulary
from changecap.errors import ConfigError, DataError

Normalize = str | tuple[Sequence[float], Sequence[float]]
ResizeMode = Literal["resize", "clip"]
Sampling = Literal["random", "all"]


@dataclass(frozen=True)
class FormatConventions:
    """Per-format defaults taken from the peers' code (spec §3–5)."""

    max_length: int
    vocab_threshold: int
    normalization: str
    canonical_no_change: str
    default_image_size: int | None
    resample: Literal["bicubic", "bilinear"]


CONVENTIONS: dict[str, FormatConventions] = {
    "levir-cc": FormatConventions(41, 5, "levir-cc", CANONICAL_NO_CHANGE, None, "bicubic"),
    "levir-mci": FormatConventions(41, 5, "levir-cc", CANONICAL_NO_CHANGE, None, "bicubic"),
    # WHU-CDC: the peers disagree on max_length (40 / 26); 41 holds every LEVIR-style caption and costs nothing.
    "whu-cdc": FormatConventions(41, 5, "whu-cdc", CANONICAL_NO_CHANGE, None, "bicubic"),
    "dubai-cc": FormatConventions(27, 0, "dubai-cc", DUBAI_CANONICAL_NO_CHANGE, 256, "bilinear"),
    # The preprocessed layout is LEVIR-CC's in every public repo, hence LEVIR-CC statistics.
    "tokens": FormatConventions(41, 5, "levir-cc", CANONICAL_NO_CHANGE, None, "bicubic"),
    # Change-detection folders (no captions): LEVIR-CD imagery, hence LEVIR-CC statistics.
    "levir-cd": FormatConventions(41, 5, "levir-cc", CANONICAL_NO_CHANGE, None, "bicubic"),
    # SECOND-CC publishes no statistics of its own: ImageNet's. Its preprocessing keeps words seen more than 10 times
    # (``--min_word_freq 10``); 52 tokens = a 50-word caption + <START>/<END>, our assumption of the release's limit.
    "second-cc": FormatConventions(52, 10, "imagenet", CANONICAL_NO_CHANGE, None, "bicubic"),
}


def resolve_normalization(normalize: Normalize, fmt: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``"dataset"`` / a key of ``NORMALIZATION`` / ``"none"`` / ``(mean, std)`` → mean and std on the 0–1 scale."""
    if isinstance(normalize, str):
        if normalize == "dataset":
            return NORMALIZATION[CONVENTIONS[fmt].normalization]
        if normalize == "none":
            return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        if normalize in NORMALIZATION:
            return NORMALIZATION[normalize]
        choices = ", ".join(["dataset", "none", *NORMALIZATION])
        raise ConfigError("normalize", f"unknown normalisation {normalize!r}; expected one of {choices} or (mean, std)")
    try:
        mean, std = (tuple(float(x) for x in v) for v in normalize)
    except (TypeError, ValueError):
        raise ConfigError("normalize", "expected a name or a (mean, std) pair of 3-value sequences") from None
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise ConfigError("normalize", "mean and std need 3 values each and std must be positive")
    return mean, std


def build_vocabulary(
    root: str | os.PathLike[str],
    format: str,  # noqa: A002 - mirrors the CLI's --format
    splits: Literal["train", "all"] | Iterable[str] = "train",
    threshold: int | None = None,
    rule: ThresholdRule = "gt",
    lower: bool = False,
    *,
    layout: Layout | None = None,
) -> Vocabulary:
    """Build a vocabulary from a dataset's captions (no image is touched).

    ``splits="train"`` is the leak-free default; ``"all"`` reproduces the published vocabularies (LEVIR-CC: 468
    entries with ``threshold=5, rule="gt"``, 501 with ``"ge"``). ``threshold=None`` takes the format's convention
    (5; Dubai-CC 0).
    """
    fmt = check_format(format)
    chosen = SPLITS if splits == "all" else ("train",) if splits == "train" else tuple(splits)
    thr = CONVENTIONS[fmt].vocab_threshold if threshold is None else threshold
    if rule not in ("gt", "ge"):
        raise ConfigError("rule", f"expected 'gt' or 'ge', got {rule!r}")
    if thr < 0:
        raise ConfigError("threshold", f"must be >= 0, got {thr}")
    records = parse_annotations(root, fmt, chosen, layout=layout, lower=lower, check_files=False)
    return Vocabulary.build((tokenize(c) for r in records for c in r.captions), threshold=thr, rule=rule)


class ChangeCaptionDataset(Dataset):
    """Before/after pairs of one split with captions, resized and normalised for a model.

    Args:
        root: dataset root folder.
        format: one of ``changecap.data.annotations.FORMATS``.
        split: ``train`` / ``val`` / ``test``.
        vocab: vocabulary used to encode captions (``None``: built from the train split, see module docstring).
        max_length: token length ``T`` incl. ``<START>``/``<END>`` (``None``: format convention).
        image_size: output side ``S`` (``None``: native; Dubai-CC 256).
        normalize: ``"dataset"`` (the format's published statistics), ``"clip"``, ``"imagenet"``, ``"none"``
            (0–1 scale), another ``NORMALIZATION`` key, or ``(mean, std)`` on the 0–1 scale.
        resize_mode: ``"resize"`` (to ``S × S``) or ``"clip"`` (shorter side to ``S`` with bicubic, centre crop).
        sampling: ``"random"`` (one item per pair, a random reference as target) or ``"all"`` (one item per
            (pair, caption)).
        canonicalize_no_change: replace every caption of an unchanged pair by the canonical no-change sentence
            (training convention of RSCaMa / HiSem; never for evaluation).
        augment: caption-aware random flips (``changecap.data.augment``).
        lower: lower-case captions (and the built vocabulary).
        seed: base seed of the per-item random generators.
        check_sizes: raise when the two dates (or the mask) differ in size.
        layout: overrides of file locations (``Layout``).
        binary_mask: masks as 0/1 (change / no change) instead of 0/1/2 classes.
        semantic_maps: add ``semantic`` (long ``[2, H, W]``, SECOND class ids of the before and after date) to every
            sample; only for formats with per-date maps (``second-cc``), a ConfigError otherwise.
        packed: a pack of this dataset made by ``changecap data pack`` (``changecap.data.packed``): the pixels come
            from its memory-mapped arrays instead of the image files (which need not be there), the captions from
            the annotations as always; the samples are the same.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        format: str,  # noqa: A002 - the dataset format name, as on the CLI
        split: str,
        vocab: Vocabulary | None = None,
        *,
        max_length: int | None = None,
        image_size: int | None = None,
        normalize: Normalize = "dataset",
        resize_mode: ResizeMode = "resize",
        sampling: Sampling = "random",
        canonicalize_no_change: bool = False,
        augment: bool = False,
        lower: bool = False,
        seed: int = 0,
        check_sizes: bool = True,
        layout: Layout | None = None,
        binary_mask: bool = False,
        semantic_maps: bool = False,
        packed: str | os.PathLike[str] | None = None,
    ) -> None:
        self.format = check_format(format)
        if split not in SPLITS:
            raise ConfigError("split", f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if resize_mode not in ("resize", "clip"):
            raise ConfigError("resize_mode", f"expected 'resize' or 'clip', got {resize_mode!r}")
        if sampling not in ("random", "all"):
            raise ConfigError("sampling", f"expected 'random' or 'all', got {sampling!r}")
        if seed < 0:
            raise ConfigError("seed", f"must be >= 0, got {seed}")
        conv = CONVENTIONS[self.format]
        self.root = Path(root)
        self.split = split
        self.layout = layout
        self.max_length = conv.max_length if max_length is None else int(max_length)
        if self.max_length < 2:
            raise ConfigError("max_length", f"must be >= 2 (room for <START> and <END>), got {self.max_length}")
        self.image_size = conv.default_image_size if image_size is None else int(image_size)
        if self.image_size is not None and self.image_size <= 0:
            raise ConfigError("image_size", f"must be positive, got {self.image_size}")
        if resize_mode == "clip" and self.image_size is None:
            raise ConfigError("image_size", "resize_mode 'clip' needs an image_size")
        self.mean, self.std = resolve_normalization(normalize, self.format)
        self.resize_mode: ResizeMode = resize_mode
        self.resample = conv.resample
        self.sampling: Sampling = sampling
        self.canonicalize_no_change = canonicalize_no_change
        self.canonical_caption = conv.canonical_no_change.lower() if lower else conv.canonical_no_change
        self.augment = augment
        self.lower = lower
        self.seed = int(seed)
        self.epoch = 0
        self.check_sizes = check_sizes
        self.binary_mask = binary_mask
        # with a pack the image files need not exist: only the annotations are read from the root
        self.records: list[PairRecord] = parse_annotations(
            root, self.format, split, layout=layout, lower=lower, check_files=packed is None
        )
        self.semantic_maps = bool(semantic_maps)
        if self.semantic_maps and any(r.semantic_paths is None for r in self.records):
            raise ConfigError(
                "semantic_maps", f"format {self.format!r} has no per-date semantic maps (second-cc has them)"
            )
        self.pack: PackedSplit | None = None
        self._pack_rows: list[int] = []
        if packed is not None:
            self.pack, self._pack_rows = self._open_pack(packed)
        if self.semantic_maps and self.pack is not None:
            raise ConfigError("semantic_maps", "a pack holds no semantic maps: read this dataset from its image files")
        if vocab is None:
            vocab = build_vocabulary(root, self.format, "train", lower=lower, layout=layout)
        self.vocab = vocab
        # Item index → (pair index, reference index); only materialised for per-caption sampling.
        self._items: list[tuple[int, int]] = (
            [(p, k) for p, rec in enumerate(self.records) for k in range(max(len(rec.captions), 1))]
            if sampling == "all"
            else []
        )

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self._items) if self.sampling == "all" else len(self.records)

    def __repr__(self) -> str:
        return (
            f"ChangeCaptionDataset(format={self.format!r}, split={self.split!r}, pairs={len(self.records)}, "
            f"items={len(self)}, sampling={self.sampling!r}, image_size={self.image_size})"
        )

    @property
    def has_images(self) -> bool:
        """False for caption-only datasets (tokens layout without ``images/``)."""
        return bool(self.records) and all(r.has_images for r in self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws ``__getitem__`` makes (call once per epoch, before iterating).

        DataLoader workers hold a copy of the dataset made when their iterator starts; with
        ``persistent_workers=True`` that copy never sees a later ``set_epoch``, so use non-persistent workers (or a
        sampler-side epoch) when augmenting or sampling random references.
        """
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def pair_index(self, index: int) -> int:
        """Item index → index into ``records`` (differs from ``index`` only with ``sampling="all"``)."""
        return self._items[index][0] if self.sampling == "all" else index

    def record(self, index: int) -> PairRecord:
        """The pair record behind item ``index`` (flags, paths, captions), without reading any image."""
        return self.records[self.pair_index(index)]

    def captions_of(self, pair: int) -> list[str]:
        """A pair's captions as the model sees them (canonicalised when requested, before any flip)."""
        rec = self.records[pair]
        if self.canonicalize_no_change and not rec.changed:
            return [self.canonical_caption] * len(rec.captions)
        return list(rec.captions)

    def _open_pack(self, folder: str | os.PathLike[str]) -> tuple[PackedSplit, list[int]]:
        """The split of the pack and the row of each record; a pack of another dataset, or fitted to another size,
        is refused."""
        pack = PackedSplit(folder, self.split)
        where = Path(folder) / PACK_FILE
        if pack.format != self.format:
            raise DataError(where, f"was packed from a {pack.format} dataset, not {self.format}", field="format")
        if pack.size is not None and (pack.size != self.image_size or pack.resize_mode != self.resize_mode):
            reads = f"{self.image_size} px ({self.resize_mode})" if self.image_size else "the native size"
            raise DataError(
                where,
                f"holds images fitted to {pack.size} px ({pack.resize_mode}) but the dataset reads {reads}; pack at "
                "the native size (no --size) or at this one",
                field="size",
            )
        rows = []
        for rec in self.records:
            row = pack.row_of.get(rec.name)
            if row is None or bool(pack.records[row].get("changed")) != rec.changed:
                problem = "is not in it" if row is None else "has another change flag there"
                raise DataError(
                    where,
                    f"does not match the annotations: pair {rec.name!r} of the {self.split} split {problem}; pack the "
                    "dataset again",
                    field=f"splits.{self.split}",
                )
            if rec.mask_path is not None and not (pack.has_masks and pack.records[row].get("mask")):
                raise DataError(where, f"holds no mask for pair {rec.name!r}; pack the dataset again", field="masks")
            rows.append(row)
        return pack, rows

    # ------------------------------------------------------------------ pixels
    def load_pair(self, pair: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``uint8 [H, W, 3]`` before and after images of ``records[pair]`` (no resize, no normalisation)."""
        rec = self.records[pair]
        if rec.before_path is None or rec.after_path is None:
            raise DataError(self.root, f"pair {rec.name!r} has no images (caption-only dataset)")
        before, after = read_rgb(rec.before_path), read_rgb(rec.after_path)
        if self.check_sizes and before.shape != after.shape:
            raise DataError(
                rec.after_path,
                f"size {after.shape[1]}×{after.shape[0]} differs from the before image {rec.before_path} "
                f"({before.shape[1]}×{before.shape[0]})",
            )
        return before, after

    def _geometry(self, img: np.ndarray, resample: Literal["bicubic", "bilinear", "nearest"]) -> np.ndarray:
        return fit_image(img, self.image_size, self.resize_mode, resample)

    def _load_mask(self, rec: PairRecord, shape: tuple[int, ...]) -> np.ndarray | None:
        if rec.mask_path is None:
            return None
        mask = read_mask(rec.mask_path, binary=self.binary_mask)
        if self.check_sizes and mask.shape != shape[:2]:
            raise DataError(
                rec.mask_path,
                f"mask size {mask.shape[1]}×{mask.shape[0]} differs from the image {rec.before_path} "
                f"({shape[1]}×{shape[0]})",
            )
        return mask

    def _load_semantic(self, rec: PairRecord, shape: tuple[int, ...]) -> np.ndarray | None:
        """Both dates' class maps ``uint8 [2, H, W]`` (``second-cc``), else None."""
        if rec.semantic_paths is None:
            return None
        maps = read_semantic_pair(*rec.semantic_paths)
        if self.check_sizes and maps.shape[1:] != shape[:2]:
            raise DataError(
                rec.semantic_paths[0],
                f"semantic map size {maps.shape[2]}×{maps.shape[1]} differs from the image {rec.before_path} "
                f"({shape[1]}×{shape[0]})",
            )
        return maps

    def pixels(self, pair: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``records[pair]``'s before and after images (``uint8 [S, S, 3]``) and mask (``uint8 [S, S]``, None
        without one) after the dataset's resize, before any flip: from the image files, or from the pack."""
        before, after, mask, _ = self.pixels_and_maps(pair)
        return before, after, mask

    def pixels_and_maps(
        self, pair: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """:meth:`pixels` and both dates' semantic class maps as read (``uint8 [2, H, W]`` before the resize;
        None for formats without them, and from a pack)."""
        rec = self.records[pair]
        if self.pack is not None:
            before, after, mask = self.pack.pair(self._pack_rows[pair])
            if not rec.has_mask:
                mask = None
            elif mask is not None and self.binary_mask:
                mask = np.minimum(mask, 1)  # classes 0 / 1 / 2 → 0 / 1, as read_mask(binary=True)
            if self.pack.size is not None:
                return before, after, mask, None  # stored already fitted to this size (checked when opened)
            semantic = None
        else:
            before, after = self.load_pair(pair)
            semantic = self._load_semantic(rec, before.shape)
            # second-cc: the mask is derived from the maps already read (same pixels as read_change_mask)
            mask = change_from_semantic(semantic) if semantic is not None else self._load_mask(rec, before.shape)
        before, after = self._geometry(before, self.resample), self._geometry(after, self.resample)
        return before, after, None if mask is None else self._geometry(mask, "nearest"), semantic

    # ------------------------------------------------------------------ samples
    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        pair, ref = self._items[index] if self.sampling == "all" else (index, -1)
        rec = self.records[pair]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        captions = self.captions_of(pair)
        # Draw order is fixed (reference, then flips) so switching augmentation on keeps the reference choice.
        k = ref if ref >= 0 else int(rng.integers(max(len(captions), 1)))
        hflip = vflip = False
        if self.augment:
            hflip, vflip = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
        sample: dict[str, Any] = {"name": rec.name, "split": rec.split, "changed": bool(rec.changed)}
        if rec.has_images:
            before, after, mask, semantic = self.pixels_and_maps(pair)
            before, after, mask, captions = flip_pair(before, after, mask, captions, hflip, vflip)
            sample["image"] = torch.stack(
                [to_tensor_normalized(before, self.mean, self.std), to_tensor_normalized(after, self.mean, self.std)]
            )  # [2, C, H, W]
            if mask is not None:
                sample["mask"] = torch.from_numpy(mask.astype(np.int64))  # [H, W]
            if semantic is not None and self.semantic_maps:
                dates = [flip_array(self._geometry(m, "nearest"), hflip, vflip) for m in semantic]
                sample["semantic"] = torch.from_numpy(np.stack(dates).astype(np.int64))  # [2, H, W]
        elif hflip or vflip:  # caption-only dataset: the flip still teaches the spatial-word symmetry
            captions = [flip_caption(c, hflip, vflip) for c in captions]
        if captions:
            tokens = self.vocab.encode_tensor(captions, self.max_length)  # [R, T]
            target = tokens[k].clone()  # [T]
        else:  # a change-detection pair without captions: no references, an empty target
            tokens = torch.zeros((0, self.max_length), dtype=torch.long)  # [0, T]
            target = torch.tensor(self.vocab.encode("", self.max_length), dtype=torch.long)  # <START> <END> <NULL>…
        sample["captions"] = captions
        sample["caption"] = captions[k] if captions else ""  # the training reference as text (LLM captioners)
        sample["tokens"] = tokens
        sample["target"] = target
        return sample


class MixedDataset(Dataset):
    """Several datasets' items in one training set (e.g. LEVIR-CD pairs with masks only + caption pairs).

    Items keep their own dataset's sample dict and ``record``, so phase filters (``pairs_with_mask`` …) pick the
    right ones; the first dataset's ``mean``, ``std``, ``image_size`` and ``max_length`` describe the mix (all parts
    are opened with the same preprocessing).
    """

    def __init__(self, parts: Sequence[Dataset]) -> None:
        if not parts:
            raise ValueError("MixedDataset needs at least one dataset")
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts]).tolist()  # type: ignore[arg-type]
        first = self.parts[0]
        for attr in ("mean", "std", "image_size", "max_length", "vocab"):
            setattr(self, attr, getattr(first, attr, None))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, index: int) -> tuple[Dataset, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.parts[part], index - int(self.offsets[part])

    def __getitem__(self, index: int) -> dict[str, Any]:
        dataset, i = self._locate(index)
        return dataset[i]

    def record(self, index: int) -> PairRecord:
        dataset, i = self._locate(index)
        return dataset.record(i)  # type: ignore[attr-defined]

    def set_epoch(self, epoch: int) -> None:
        for part in self.parts:
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)


def open_dataset(
    root: str | os.PathLike[str],
    format: str,  # noqa: A002 - mirrors the CLI's --format
    split: str,
    **kwargs: Any,
) -> ChangeCaptionDataset:
    """Open one split of a dataset; keyword arguments as :class:`ChangeCaptionDataset`."""
    return ChangeCaptionDataset(root, format, split, **kwargs)
