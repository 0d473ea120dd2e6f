"""``changecap data audit``: find label errors and leakage in a dataset before training on it.

The audit reads any supported format through the generic readers (:func:`~changecap.data.annotations.parse_annotations`
with ``keep_empty=True``, so that empty captions are reported rather than fatal) and runs the checks of ``CHECKS``:

(a) change flag vs captions, (b) change flag vs mask, (c) dates nearly identical while captioned as changed,
(d) exact and near-duplicate pairs (across splits: leakage), (e) spatial words vs the mask, (f) caption text
(empty, garbled, outlier length, out-of-vocabulary and rare words against the train split), and unreadable files.
A pair's mask is its mask file or, for ``second-cc``, where its two semantic maps differ; both are read through
:class:`~changecap.data.audit_images.MaskSource`.

Each finding is a :class:`Finding` (``check``, ``name``, ``split``, ``detail``, ``severity`` and check-specific
fields); :class:`AuditReport` holds them with counts per check and the checks that were skipped with the reason
(caption-only data has no image checks; data without masks no mask checks). Text rules live in
:mod:`changecap.data.audit_text`, pixel measures in :mod:`changecap.data.audit_images`, the HTML page in
:mod:`changecap.data.audit_report`. ``docs/audit.md`` documents every rule and threshold.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from changecap.data.annotations import SPLITS, Layout, PairRecord, check_format, parse_annotations
from changecap.data.audit_images import (
    PRESCREEN_FACTOR,
    MaskSource,
    PairScan,
    near_duplicates,
    read_pair,
    same_scene_difference,
    scan_pair,
    tiny_residual,
)
from changecap.data.audit_text import (
    BUILDING_WORDS,
    OTHER_CHANGE_WORDS,
    ROAD_WORDS,
    changed_objects,
    contradiction,
    garbled_reasons,
    is_no_change_sentence,
    spatial_phrases,
    words,
)
from changecap.errors import ConfigError, DataError

SEVERITIES: tuple[str, ...] = ("error", "warning", "info")


@dataclass(frozen=True)
class Check:
    """One audit check: its group (the letters above), severity, what it needs, and what a finding means."""

    name: str
    group: str
    severity: str
    needs: str  # "captions", "images", "masks" or "files"
    description: str


CHECKS: tuple[Check, ...] = (
    Check("flag_changed_no_change_captions", "a", "error", "captions",
          "flagged changed, but every caption is a no-change sentence"),
    Check("flag_unchanged_change_captions", "a", "error", "captions",
          "flagged unchanged, but no caption is a no-change sentence"),
    Check("mixed_captions", "a", "warning", "captions",
          "some captions are no-change sentences, the others describe a change"),
    Check("mask_in_unchanged_pair", "b", "error", "masks",
          "flagged unchanged, but the mask has changed pixels"),
    Check("empty_mask_changed_pair", "b", "error", "masks",
          "flagged changed and the captions name a change of the mask's classes, but the mask is empty"),
    Check("identical_changed_pair", "c", "error", "images",
          "captioned as changed, but the two dates are nearly identical"),
    Check("duplicate_across_splits", "d", "error", "images",
          "the same pair (both dates) is in another split: leakage"),
    Check("duplicate_within_split", "d", "warning", "images",
          "the same pair (both dates) appears twice in one split"),
    Check("spatial_mismatch", "e", "warning", "masks",
          "a caption places the change where the mask has no changed pixel"),
    Check("empty_caption", "f", "error", "captions", "an empty caption, or a pair without captions"),
    Check("garbled_caption", "f", "warning", "captions",
          "non-words, a letter repeated three times, or a word or group repeated"),
    Check("length_outlier", "f", "info", "captions",
          "a caption far longer than the dataset's others, or a one-word change caption"),
    Check("oov_words", "f", "info", "captions", "a val / test caption uses words the train split never uses"),
    Check("rare_words", "f", "info", "captions", "a caption uses words that are (almost) unique in the train split"),
    Check("unreadable_pair", "files", "error", "files",
          "an image or mask is missing, unreadable, or its size differs from the other date"),
)  # fmt: skip
CHECK_BY_NAME: dict[str, Check] = {c.name: c for c in CHECKS}

# Words naming the objects a format's masks show; None: the masks show every change (nothing is excused).
# LEVIR-MCI masks have road and building classes; WHU-CD and LEVIR-CD labels mark building change only;
# SECOND-CC's change mask is where its two semantic maps differ, so it covers every land-cover class.
MASK_OBJECT_WORDS: dict[str, frozenset[str] | None] = {
    "levir-cd": BUILDING_WORDS,
    "whu-cdc": BUILDING_WORDS,
    "second-cc": None,
}
DEFAULT_MASK_OBJECT_WORDS = BUILDING_WORDS | ROAD_WORDS


@dataclass(frozen=True)
class AuditOptions:
    """Thresholds of the checks (``changecap data audit`` options of the same names)."""

    min_changed_pixels: int = 1  # (b) a mask with fewer changed pixels counts as empty
    identical_below: float = 4.0  # (c) difference score (grey levels) under which two dates are nearly identical
    hash_bits: int = 16  # (d) both dates' hashes within this many bits (of 64) make a duplicate candidate
    duplicate_below: float = 4.0  # (d) mean residual (grey levels) under which a candidate is a duplicate
    rare_count: int = 1  # (f) words used at most this many times in the train split are rare
    max_words: int | None = None  # (f) longer captions are outliers (None: Tukey's far-out fence of the dataset)

    def validate(self) -> AuditOptions:
        ints = {"min_changed_pixels": 1, "hash_bits": 0, "rare_count": 0}
        for name, low in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(name.replace("_", "-"), f"must be an integer >= {low}, got {v!r}")
        if self.hash_bits > 64:
            raise ConfigError("hash-bits", f"must be at most 64 (the hash has 64 bits), got {self.hash_bits}")
        for name in ("identical_below", "duplicate_below"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 255:
                raise ConfigError(name.replace("_", "-"), f"must be a number of grey levels in 0-255, got {v!r}")
        if self.max_words is not None and (
            isinstance(self.max_words, bool) or not isinstance(self.max_words, int) or self.max_words < 1
        ):
            raise ConfigError("max-words", f"must be an integer >= 1, got {self.max_words!r}")
        return self


@dataclass
class Finding:
    """One problem of one pair. ``extra`` holds check-specific fields (written flat into the JSON record)."""

    check: str
    name: str
    split: str
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return CHECK_BY_NAME[self.check].severity

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "name": self.name,
            "split": self.split,
            "detail": self.detail,
            "severity": self.severity,
            **self.extra,
        }


@dataclass
class AuditReport:
    """Everything ``changecap data audit`` prints and writes."""

    root: str
    format: str
    pairs: dict[str, int]  # per split
    options: AuditOptions
    findings: list[Finding]
    skipped: dict[str, str]  # check → why it did not run
    notes: dict[str, dict[str, Any]]  # check → {"count", "reason", "names"}: cases deliberately not reported
    vocabulary: dict[str, dict[str, int]]  # per split
    seconds: dict[str, float]  # time per phase
    duplicate_search: dict[str, int] = field(default_factory=dict)  # hash candidates and how they were settled
    pairs_with_images: int = 0
    pairs_with_masks: int = 0
    records: dict[tuple[str, str], PairRecord] = field(default_factory=dict, repr=False)  # for the HTML report

    @property
    def counts(self) -> dict[str, int]:
        """Findings per check (0 for every check that ran, absent for skipped ones)."""
        c = Counter(f.check for f in self.findings)
        return {ch.name: c.get(ch.name, 0) for ch in CHECKS if ch.name not in self.skipped}

    @property
    def flagged_pairs(self) -> int:
        return len({(f.split, f.name) for f in self.findings})

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "format": self.format,
            "pairs": self.pairs,
            "pairs_total": sum(self.pairs.values()),
            "pairs_with_images": self.pairs_with_images,
            "pairs_with_masks": self.pairs_with_masks,
            "flagged_pairs": self.flagged_pairs,
            "options": asdict(self.options),
            "checks": {
                c.name: {
                    "group": c.group,
                    "severity": c.severity,
                    "description": c.description,
                    "status": "skipped" if c.name in self.skipped else "run",
                    **({"reason": self.skipped[c.name]} if c.name in self.skipped else {"count": self.counts[c.name]}),
                }
                for c in CHECKS
            },
            "counts": self.counts,
            "skipped": self.skipped,
            "notes": self.notes,
            "vocabulary": self.vocabulary,
            "duplicate_search": self.duplicate_search,
            "seconds": self.seconds,
            "findings": [f.to_dict() for f in self.findings],
        }

    def format_text(self, show: int = 20) -> str:
        total = sum(self.pairs.values())
        per_split = ", ".join(f"{s} {n}" for s, n in self.pairs.items())
        lines = [
            f"dataset   {self.root}",
            f"format    {self.format}",
            f"pairs     {total} ({per_split})",
            f"files     {self.pairs_with_images} pairs with images, {self.pairs_with_masks} with masks",
            "",
            f"{'check':<34}{'group':>6}{'severity':>10}{'findings':>10}",
        ]
        counts = self.counts
        for c in CHECKS:
            value = "skipped" if c.name in self.skipped else str(counts[c.name])
            lines.append(f"{c.name:<34}{c.group:>6}{c.severity:>10}{value:>10}")
        lines.append("")
        lines.append(f"{len(self.findings)} finding(s) on {self.flagged_pairs} pair(s)")
        for name, why in self.skipped.items():
            lines.append(f"skipped {name}: {why}")
        for name, note in self.notes.items():
            lines.append(f"not reported ({name}): {note['count']} pair(s), {note['reason']}")
        for f in self.findings[:show]:
            lines.append(f"  [{f.severity}] {f.check} {f.split}/{f.name}: {f.detail}")
        if len(self.findings) > show:
            lines.append(f"  ... {len(self.findings) - show} more (see --json / --html)")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------- captions
def _caption_kinds(rec: PairRecord) -> tuple[list[int], list[int], list[int]]:
    """Indices of the empty, no-change and change captions of a pair."""
    empty, no_change, change = [], [], []
    for k, c in enumerate(rec.captions):
        (empty if not words(c) else no_change if is_no_change_sentence(c) else change).append(k)
    return empty, no_change, change


def _flag_source(rec: PairRecord) -> str:
    return "the changeflag field" if rec.changed_from == "json" else "derived from the captions"


def _caption_checks(records: Sequence[PairRecord], opts: AuditOptions) -> Iterator[Finding]:
    lengths = [len(words(c)) for r in records for c in r.captions if c.strip()]
    max_words = opts.max_words if opts.max_words is not None else _far_out_fence(lengths)
    for rec in records:
        empty, no_change, change = _caption_kinds(rec)
        n = len(rec.captions)
        if n == 0:
            yield Finding("empty_caption", rec.name, rec.split, "the pair has no caption", {"captions": 0})
        for k in empty:
            what = "is empty" if not rec.captions[k].strip() else f"{rec.captions[k]!r} has no word"
            yield Finding("empty_caption", rec.name, rec.split, f"caption {k} {what}", {"caption_index": k})
        if rec.changed and no_change and not change:
            yield Finding(
                "flag_changed_no_change_captions",
                rec.name,
                rec.split,
                f"change flag 1 ({_flag_source(rec)}) but all {len(no_change)} captions are no-change sentences",
                {"flag": 1},
            )
        if not rec.changed and change and not no_change:
            yield Finding(
                "flag_unchanged_change_captions",
                rec.name,
                rec.split,
                f"change flag 0 ({_flag_source(rec)}) but all {len(change)} captions describe a change, "
                f"e.g. {rec.captions[change[0]]!r}",
                {"flag": 0},
            )
        if no_change and change:
            yield Finding(
                "mixed_captions",
                rec.name,
                rec.split,
                f"{len(no_change)} of {n} captions are no-change sentences, {len(change)} "
                f"{'describes' if len(change) == 1 else 'describe'} a change "
                f"(flag {int(rec.changed)}, {_flag_source(rec)}); e.g. {rec.captions[no_change[0]]!r} and "
                f"{rec.captions[change[0]]!r}",
                {"flag": int(rec.changed), "no_change_captions": no_change, "change_captions": change},
            )
        for k, c in enumerate(rec.captions):
            if k in empty:
                continue
            reasons = garbled_reasons(c)
            if reasons:
                yield Finding(
                    "garbled_caption",
                    rec.name,
                    rec.split,
                    f"caption {k} {c!r}: {'; '.join(reasons)}",
                    {"caption_index": k},
                )
            nw = len(words(c))
            if nw > max_words:
                yield Finding(
                    "length_outlier",
                    rec.name,
                    rec.split,
                    f"caption {k} has {nw} words (more than {max_words})",
                    {"caption_index": k, "words": nw},
                )
            elif nw == 1 and k in change:
                yield Finding(
                    "length_outlier",
                    rec.name,
                    rec.split,
                    f"caption {k} {c!r} is a single word",
                    {"caption_index": k, "words": nw},
                )


def _far_out_fence(lengths: Sequence[int]) -> int:
    """Tukey's far-out fence Q3 + 3 IQR of the caption lengths (in words)."""
    if not lengths:
        return 10**9
    q1, q3 = np.percentile(np.asarray(lengths, dtype=np.float64), [25, 75])
    return int(q3 + 3 * (q3 - q1))


def _vocabulary_checks(records: Sequence[PairRecord], opts: AuditOptions) -> tuple[list[Finding], dict[str, Any]]:
    """Out-of-vocabulary (never in train) and rare (train count <= rare_count) words, per pair; statistics per split."""
    train = Counter(w for r in records if r.split == "train" for c in r.captions for w in words(c))
    findings: list[Finding] = []
    stats: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        recs = [r for r in records if r.split == split]
        if not recs:
            continue
        counts = Counter(w for r in recs for c in r.captions for w in words(c))
        oov_types = {w for w in counts if train[w] == 0}
        rare_types = {w for w in counts if 0 < train[w] <= opts.rare_count}
        stats[split] = {
            "captions": sum(len(r.captions) for r in recs),
            "tokens": sum(counts.values()),
            "types": len(counts),
            "oov_types": len(oov_types),
            "oov_tokens": sum(counts[w] for w in oov_types),
            "rare_types": len(rare_types),
            "rare_tokens": sum(counts[w] for w in rare_types),
        }
        for r in recs:
            used = [w for c in r.captions for w in words(c)]
            oov = sorted({w for w in used if w in oov_types})
            rare = sorted({w for w in used if w in rare_types})
            if oov:
                findings.append(
                    Finding(
                        "oov_words",
                        r.name,
                        r.split,
                        f"not in any train caption: {', '.join(oov[:8])}" + (" ..." if len(oov) > 8 else ""),
                        {"words": oov},
                    )
                )
            if rare and train:
                findings.append(
                    Finding(
                        "rare_words",
                        r.name,
                        r.split,
                        f"used at most {opts.rare_count}x in the train split: {', '.join(rare[:8])}"
                        + (" ..." if len(rare) > 8 else ""),
                        {"words": rare},
                    )
                )
    return findings, stats


# ---------------------------------------------------------------------------------------------------------- pixels
ScanJob = tuple[str | None, str | None, MaskSource | None, float | None]  # before, after, mask, difference threshold


def _scan_job(job: ScanJob) -> PairScan:
    return scan_pair(*job)


def _pool_context() -> multiprocessing.context.BaseContext:
    """``fork`` where available (workers inherit the imported modules); they run numpy / PIL code only."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _scan_all(jobs: list[ScanJob], workers: int, progress: bool | None) -> list[PairScan]:
    disable = None if progress is None else not progress
    if workers <= 1 or len(jobs) < 2 * workers:
        return [_scan_job(job) for job in tqdm(jobs, desc="reading pairs", unit="pair", disable=disable)]
    out: list[PairScan] = []
    # The pool forks before the progress bar starts its monitor thread.
    with _pool_context().Pool(workers) as pool:
        scans = pool.imap(_scan_job, jobs, chunksize=16)
        for scan in tqdm(scans, total=len(jobs), desc="reading pairs", unit="pair", disable=disable):
            out.append(scan)
    return out


def _any_exists(paths: Iterable[str | os.PathLike[str] | None]) -> bool:
    return any(p is not None and os.path.isfile(p) for p in paths)


def _mask_text(scan: PairScan) -> str:
    """What the mask shows, for a finding's detail: class counts of a mask file, or where two semantic maps differ."""
    px = scan.mask_pixels
    if scan.mask_classes is None:  # derived from two semantic maps: 1 = changed, no class
        return f"the two semantic maps differ at {px} pixels"
    classes = ", ".join(f"{n} {'road' if c == 1 else 'building'}" for c, n in sorted(scan.mask_classes.items()))
    return f"the mask has {px} changed pixels" + (f" ({classes})" if classes else "")


def _mask_checks(
    rec: PairRecord, scan: PairScan, opts: AuditOptions, object_words: frozenset[str] | None, notes: dict[str, Any]
) -> Iterator[Finding]:
    assert scan.mask_pixels is not None
    px = scan.mask_pixels
    if not rec.changed and px >= opts.min_changed_pixels:
        yield Finding(
            "mask_in_unchanged_pair",
            rec.name,
            rec.split,
            f"change flag 0 ({_flag_source(rec)}) but {_mask_text(scan)}",
            {"mask_pixels": px},
        )
    if rec.changed and px < opts.min_changed_pixels:
        named = sorted({w for c in rec.captions for w in changed_objects(c, object_words)}) if object_words else []
        if object_words is not None and not named:
            other = sorted({w for c in rec.captions for w in changed_objects(c, OTHER_CHANGE_WORDS)})
            note = notes.setdefault(
                "empty_mask_changed_pair",
                {
                    "count": 0,
                    "reason": "changed pairs with an empty mask whose captions name no change of the mask's classes "
                    "(e.g. vegetation or water, which road / building masks do not show)",
                    "names": [],
                },
            )
            note["count"] += 1
            note["names"].append(f"{rec.split}/{rec.name}" + (f" ({', '.join(other)})" if other else ""))
            return
        what = f"the captions name {', '.join(named)}" if named else "the masks of this format show every change"
        yield Finding(
            "empty_mask_changed_pair",
            rec.name,
            rec.split,
            f"change flag 1 ({_flag_source(rec)}) and {what}, but {_mask_text(scan)} "
            f"(fewer than {opts.min_changed_pixels})",
            {"mask_pixels": px},
        )


def _spatial_checks(rec: PairRecord, scan: PairScan, object_words: frozenset[str] | None) -> Iterator[Finding]:
    ext = scan.mask_extent
    if ext is None:
        return
    problems: list[str] = []
    indices: list[int] = []
    for k, c in enumerate(rec.captions):
        # With road / building masks, only captions about those objects alone can be held against the mask.
        if object_words is not None and (
            not changed_objects(c, object_words) or changed_objects(c, OTHER_CHANGE_WORDS)
        ):
            continue
        for ph in spatial_phrases(c):
            why = contradiction(ph.region, ext)
            if why:
                problems.append(f"caption {k} says {ph.text!r} ({ph.region}) but every changed pixel lies in {why}")
                indices.append(k)
                break
    if problems:
        yield Finding(
            "spatial_mismatch",
            rec.name,
            rec.split,
            "; ".join(problems),
            {
                "caption_indices": indices,
                "changed_extent": [round(v, 3) for v in (ext.y0, ext.y1, ext.x0, ext.x1)],
            },
        )


def _duplicates(
    records: Sequence[PairRecord],
    scans: Sequence[PairScan],
    opts: AuditOptions,
    progress: bool | None,
    stats: dict[str, int],
) -> Iterator[Finding]:
    """Duplicate pairs; ``stats`` receives the number of hash candidates, of those ruled out at 16 px, and of
    those compared at full size."""
    idx = [i for i, s in enumerate(scans) if s.digest and s.error is None]
    stats.update(candidates=0, ruled_out_16px=0, compared=0)
    if len(idx) < 2:
        return
    ha = np.array([scans[i].hash_a for i in idx], dtype=np.uint64)
    hb = np.array([scans[i].hash_b for i in idx], dtype=np.uint64)
    candidates = near_duplicates(ha, hb, opts.hash_bits)
    stats["candidates"] = len(candidates)
    order = {s: k for k, s in enumerate(SPLITS)}
    for ci, cj in tqdm(
        candidates, desc="comparing look-alikes", unit="pair", disable=(None if progress is None else not progress)
    ):
        i, j = idx[ci], idx[cj]
        ri, rj = records[i], records[j]
        si, sj = scans[i], scans[j]
        exact = si.digest == sj.digest
        if exact:
            residual = 0.0
        else:
            assert si.tiny_a is not None and si.tiny_b is not None and sj.tiny_a is not None and sj.tiny_b is not None
            rough = max(tiny_residual(si.tiny_a, sj.tiny_a), tiny_residual(si.tiny_b, sj.tiny_b))
            if rough > PRESCREEN_FACTOR * opts.duplicate_below:
                stats["ruled_out_16px"] += 1
                continue
            stats["compared"] += 1
            try:
                ai, bi = read_pair(ri.before_path, ri.after_path)  # type: ignore[arg-type]
                aj, bj = read_pair(rj.before_path, rj.after_path)  # type: ignore[arg-type]
            except DataError:
                continue  # already read once; a file that changed since is not this check's business
            residual = max(same_scene_difference(ai, aj), same_scene_difference(bi, bj))
            if residual > opts.duplicate_below:
                continue
        # Report on the later pair (in train, val, test order), naming the earlier one.
        first, second = (ri, rj) if (order[ri.split], i) <= (order[rj.split], j) else (rj, ri)
        check = "duplicate_across_splits" if first.split != second.split else "duplicate_within_split"
        kind = "exact copy" if exact else f"near-duplicate (residual {residual:.1f} grey levels)"
        yield Finding(
            check,
            second.name,
            second.split,
            f"{kind} of {first.split}/{first.name} (both dates)",
            {"other_name": first.name, "other_split": first.split, "exact": exact, "residual": round(residual, 2)},
        )


# ---------------------------------------------------------------------------------------------------------- runner
def audit_dataset(
    root: str | os.PathLike[str],
    format: str,  # noqa: A002 - mirrors the CLI's --format
    *,
    layout: Layout | None = None,
    options: AuditOptions | None = None,
    workers: int = 1,
    progress: bool | None = None,
) -> AuditReport:
    """Run every check that the dataset's contents allow and return the report (see the module docstring).

    ``progress=None`` shows progress bars only on an interactive terminal; ``workers`` > 1 reads pairs in that many
    processes.
    """
    fmt = check_format(format)
    opts = (options or AuditOptions()).validate()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError("workers", f"must be an integer >= 1, got {workers!r}")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    records = parse_annotations(root, fmt, None, layout=layout, check_files=False, keep_empty=True)
    if not records:
        raise DataError(root, "dataset has no pairs")
    seconds["read_annotations"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    findings: list[Finding] = []
    skipped: dict[str, str] = {}
    notes: dict[str, dict[str, Any]] = {}
    has_captions = any(r.captions for r in records)
    if has_captions:
        findings.extend(_caption_checks(records, opts))
        vocab_findings, vocab_stats = _vocabulary_checks(records, opts)
        findings.extend(vocab_findings)
    else:
        vocab_stats = {}
        for c in CHECKS:
            if c.needs == "captions":
                skipped[c.name] = f"no captions ({fmt} pairs carry change masks only)"
    seconds["caption_checks"] = time.perf_counter() - t0

    # Images / masks: caption-only data (no image file at all) skips the pixel checks, saying so.
    has_images = _any_exists(p for r in records for p in (r.before_path, r.after_path))
    masks = [MaskSource.of(r) for r in records]  # a mask file, or second-cc's two semantic maps
    has_masks = _any_exists(f for m in masks if m is not None for f in m.files)
    if not has_images:
        why = (
            "no images: caption files only"
            if all(r.before_path is None for r in records)
            else "no images: none of the listed image files exists (caption files only)"
        )
        for c in CHECKS:
            if c.needs == "images":
                skipped[c.name] = why
    if not has_masks:
        if all(m is None for m in masks):
            why = f"no change masks ({fmt} without label/ folders)"
        elif any(m is not None and m.derived for m in masks):
            why = "no change masks: none of the semantic maps (sem/A, sem/B) exists"
        else:
            why = "no change masks: none of the listed mask files exists"
        for c in CHECKS:
            if c.needs == "masks":
                skipped[c.name] = why
    if not has_captions:
        skipped.setdefault("spatial_mismatch", f"no captions ({fmt} pairs carry change masks only)")
    if not has_images and not has_masks:
        skipped["unreadable_pair"] = "no image or mask files to read"

    scans: list[PairScan] = []
    t0 = time.perf_counter()
    if has_images or has_masks:
        jobs: list[ScanJob] = []
        for r, mask in zip(records, masks):
            captioned_changed = r.changed or bool(_caption_kinds(r)[2])
            jobs.append(
                (
                    str(r.before_path) if has_images and r.has_images else None,
                    str(r.after_path) if has_images and r.has_images else None,
                    mask if has_masks else None,
                    opts.identical_below if has_images and captioned_changed else None,
                )
            )
        scans = _scan_all(jobs, workers, progress)
    seconds["read_pairs"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    object_words = MASK_OBJECT_WORDS.get(fmt, DEFAULT_MASK_OBJECT_WORDS)
    for rec, scan in zip(records, scans):
        if scan.error is not None:
            findings.append(Finding("unreadable_pair", rec.name, rec.split, scan.error))
            continue
        if scan.mask_pixels is not None:
            findings.extend(_mask_checks(rec, scan, opts, object_words, notes))
            if has_captions and scan.mask_pixels >= opts.min_changed_pixels:
                findings.extend(_spatial_checks(rec, scan, object_words))
        if scan.difference is not None and scan.difference < opts.identical_below:
            findings.append(
                Finding(
                    "identical_changed_pair",
                    rec.name,
                    rec.split,
                    f"captioned as changed (flag {int(rec.changed)}) but the dates differ by at most "
                    f"{scan.difference:.1f} grey levels after alignment (threshold {opts.identical_below:g})",
                    {"difference": round(scan.difference, 2)},
                )
            )
    duplicate_search: dict[str, int] = {}
    if has_images:
        findings.extend(_duplicates(records, scans, opts, progress, duplicate_search))
    seconds["pixel_checks"] = time.perf_counter() - t0

    order = {c.name: k for k, c in enumerate(CHECKS)}
    split_order = {s: k for k, s in enumerate(SPLITS)}
    findings.sort(key=lambda f: (order[f.check], split_order.get(f.split, 9), f.name))
    pairs: dict[str, int] = defaultdict(int)
    for r in records:
        pairs[r.split] += 1
    return AuditReport(
        root=str(root),
        format=fmt,
        pairs=dict(pairs),
        options=opts,
        findings=findings,
        skipped=skipped,
        notes=notes,
        vocabulary=vocab_stats,
        seconds={k: round(v, 3) for k, v in seconds.items()},
        duplicate_search=duplicate_search,
        pairs_with_images=sum(1 for s in scans if s.digest),
        pairs_with_masks=sum(1 for s in scans if s.mask_pixels is not None),
        records={(r.split, r.name): r for r in records},
    )
