"""Dataset validation and statistics behind ``changecap data check``.

Default mode reads only image *headers* (``PIL.Image.open`` is lazy): every file exists, is an image with RGB bands,
and both dates (and the mask, or second-cc's semantic maps) have the same size — seconds for LEVIR-CC's 20k images.
``deep=True`` decodes every pixel (truncated / corrupt files, RGBA transparency) and checks every mask value and
semantic-map colour. The first problem raises a one-line :class:`~changecap.errors.DataError` naming the file and
field; a clean dataset yields a :class:`DatasetReport`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from changecap.data.annotations import SPLITS, Layout, PairRecord, check_format, parse_annotations
from changecap.data.image_io import image_header, image_size, read_mask, read_rgb
from changecap.data.semantic_maps import read_semantic_map, semantic_map_size
from changecap.data.text import tokenize
from changecap.data.vocab import Vocabulary
from changecap.errors import DataError

REPORT_VOCAB_THRESHOLD = 5  # the report's vocabulary size: train split, count > 5 (the LEVIR-CC convention)


@dataclass
class SplitStats:
    """Statistics of one split."""

    pairs: int
    changed: int
    unchanged: int
    changed_share: float
    captions_min: int
    captions_mean: float
    captions_max: int
    mean_caption_words: float
    max_caption_tokens: int  # longest caption + <START> + <END> (the smallest max_length that truncates nothing)
    with_images: int
    with_masks: int
    flag_disagreements: int  # JSON changeflag differs from the flag derived from the captions


@dataclass
class DatasetReport:
    """What ``changecap data check`` prints."""

    root: str
    format: str
    deep: bool
    splits: dict[str, SplitStats]
    vocab_size_train: int
    image_sizes: dict[str, int] = field(default_factory=dict)  # "WxH" → number of pairs

    @property
    def pairs(self) -> int:
        return sum(s.pairs for s in self.splits.values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["pairs"] = self.pairs
        out["vocab_rule"] = f"train split, count > {REPORT_VOCAB_THRESHOLD}"
        return out

    def format_text(self) -> str:
        lines = [
            f"dataset   {self.root}",
            f"format    {self.format}   ({'full decode' if self.deep else 'headers only'}; all files OK)",
            f"pairs     {self.pairs}",
            "",
            f"{'split':<6}{'pairs':>7}{'changed':>9}{'share':>7}{'caps/pair':>14}{'words':>7}{'max T':>7}"
            f"{'images':>8}{'masks':>7}",
        ]
        for name, s in self.splits.items():
            caps = f"{s.captions_min}/{s.captions_mean:.2f}/{s.captions_max}"
            lines.append(
                f"{name:<6}{s.pairs:>7}{s.changed:>9}{s.changed_share:>7.1%}{caps:>14}{s.mean_caption_words:>7.2f}"
                f"{s.max_caption_tokens:>7}{s.with_images:>8}{s.with_masks:>7}"
            )
        lines.append("")
        lines.append(f"vocabulary (train split, count > {REPORT_VOCAB_THRESHOLD}): {self.vocab_size_train} entries")
        if self.image_sizes:
            sizes = ", ".join(f"{k} ({v})" for k, v in sorted(self.image_sizes.items(), key=lambda kv: -kv[1]))
            lines.append(f"image sizes: {sizes}")
        disagreements = sum(s.flag_disagreements for s in self.splits.values())
        if disagreements:
            lines.append(f"warning: {disagreements} pair(s) whose changeflag disagrees with their captions")
        return "\n".join(lines)


def split_stats(records: Sequence[PairRecord]) -> SplitStats:
    n = len(records)
    changed = sum(r.changed for r in records)
    n_caps = [len(r.captions) for r in records] or [0]
    words = [len(c.split()) for r in records for c in r.captions]
    return SplitStats(
        pairs=n,
        changed=changed,
        unchanged=n - changed,
        changed_share=changed / n if n else 0.0,
        captions_min=min(n_caps),
        captions_mean=sum(n_caps) / n if n else 0.0,
        captions_max=max(n_caps),
        mean_caption_words=sum(words) / len(words) if words else 0.0,
        max_caption_tokens=max(words, default=0) + 2,
        with_images=sum(r.has_images for r in records),
        with_masks=sum(r.has_mask for r in records),
        flag_disagreements=sum(
            r.changed_from == "json" and r.caption_changed is not None and r.caption_changed != r.changed
            for r in records
        ),
    )


def _size_mismatch(path: Path, other: Path, size: tuple[int, int], other_size: tuple[int, int], what: str) -> DataError:
    return DataError(path, f"{what} size {size[0]}×{size[1]} differs from {other} ({other_size[0]}×{other_size[1]})")


def check_pair_files(rec: PairRecord, deep: bool = False) -> tuple[int, int] | None:
    """Validate one pair's files; return its ``(width, height)`` (None without images)."""
    if rec.before_path is None or rec.after_path is None:
        return None
    if deep:
        a, b = read_rgb(rec.before_path), read_rgb(rec.after_path)
        size_a, size_b = (a.shape[1], a.shape[0]), (b.shape[1], b.shape[0])
    else:
        size_a, size_b = image_header(rec.before_path)[:2], image_header(rec.after_path)[:2]
    if size_a != size_b:
        raise _size_mismatch(rec.after_path, rec.before_path, size_b, size_a, "after image")
    if rec.mask_path is not None:
        if deep:
            m = read_mask(rec.mask_path)
            size_m = (m.shape[1], m.shape[0])
        else:
            size_m = _mask_header(rec.mask_path)
        if size_m != size_a:
            raise _size_mismatch(rec.mask_path, rec.before_path, size_m, size_a, "mask")
    if rec.semantic_paths is not None:
        for path in rec.semantic_paths:
            if deep:  # decodes the colours: every pixel must be a SECOND class
                m = read_semantic_map(path)
                size_s = (m.shape[1], m.shape[0])
            else:
                size_s = semantic_map_size(path)
            if size_s != size_a:
                raise _size_mismatch(path, rec.before_path, size_s, size_a, "semantic map")
    return size_a


def _mask_header(path: Path) -> tuple[int, int]:
    if not path.is_file():
        raise DataError(path, "label image not found")
    return image_size(path)


def check_dataset(
    root: str | os.PathLike[str],
    format: str,  # noqa: A002 - mirrors the CLI's --format
    *,
    deep: bool = False,
    layout: Layout | None = None,
    progress: bool | None = None,
) -> DatasetReport:
    """Validate a whole dataset and compute its statistics (raises DataError on the first problem).

    ``progress=None`` shows a progress bar only on an interactive terminal.
    """
    fmt = check_format(format)
    records = parse_annotations(root, fmt, None, layout=layout, check_files=True)
    if not records:
        raise DataError(root, "dataset has no pairs")
    sizes: Counter[str] = Counter()
    bar = tqdm(records, desc="checking pairs", unit="pair", disable=(None if progress is None else not progress))
    for rec in bar:
        size = check_pair_files(rec, deep=deep)
        if size is not None:
            sizes[f"{size[0]}x{size[1]}"] += 1
    by_split = {s: [r for r in records if r.split == s] for s in SPLITS}
    train_caps = (tokenize(c) for r in by_split["train"] for c in r.captions)
    vocab = Vocabulary.build(train_caps, threshold=REPORT_VOCAB_THRESHOLD, rule="gt")
    return DatasetReport(
        root=str(root),
        format=fmt,
        deep=deep,
        splits={s: split_stats(rs) for s, rs in by_split.items() if rs},
        vocab_size_train=len(vocab),
        image_sizes=dict(sizes),
    )
