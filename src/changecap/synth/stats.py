"""Statistics of a generated SynthCC folder (the figures quoted in docs/synthcc.md).

Caption statistics come from ``LevirCCcaptions.json`` alone, so they also work on a real LEVIR-CC annotation file;
change-type, count and location distributions need ``synthcc_meta.json``; the single-date statistics (scene
captions, land-cover class shares, object counts) need ``scene_captions.json``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from changecap.data.annotations import Layout, parse_annotations
from changecap.data.single_date import SCENE_CAPTIONS_FILE, load_scene_captions, read_landcover
from changecap.data.text import tokenize
from changecap.errors import DataError
from changecap.synth.captions import count_class
from changecap.synth.generate import ANNOTATION_FILE, META_FILE
from changecap.synth.presets import SPLITS

VOCAB_THRESHOLD = 5  # words kept when their train count is > 5 (the HiSem / RSCaMa rule)
N_SPECIAL_TOKENS = 4  # <NULL> <UNK> <START> <END>


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "not found (is this a SynthCC folder?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e})") from None


def synthcc_statistics(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Pairs per split, changed share, change types, caption length and vocabulary size of a SynthCC folder.

    Vocabulary sizes are counted like the peers' ``vocab.json``: ``vocab_train_gt5`` = words whose count over the
    train captions is > 5 plus the 4 special tokens; ``distinct_words`` = every word type over all splits.
    """
    root = Path(root)
    annotation = root / ANNOTATION_FILE
    if not annotation.is_file():
        raise DataError(annotation, "not found (is this a SynthCC folder?)")
    # every field checked as the dataset readers check it (one line naming the file and the entry)
    records = parse_annotations(root, "levir-cc", layout=Layout(annotation=annotation), check_files=False)
    if not records:
        raise DataError(annotation, "no pairs", field="images")
    splits: dict[str, dict[str, Any]] = {s: {"pairs": 0, "changed": 0} for s in SPLITS}
    lengths: list[int] = []
    train_counts: Counter[str] = Counter()
    all_words: set[str] = set()
    captions: list[str] = []
    for rec in records:
        splits[rec.split]["pairs"] += 1
        splits[rec.split]["changed"] += int(rec.changed)
        for caption in rec.captions:  # RSICC-tokenised, joined with single spaces
            words = caption.split()
            lengths.append(len(words))
            all_words.update(words)
            captions.append(caption)
            if rec.split == "train":
                train_counts.update(words)
    for s in splits.values():
        s["changed_share"] = round(s["changed"] / s["pairs"], 4) if s["pairs"] else 0.0
    n_pairs = len(records)
    n_changed = sum(s["changed"] for s in splits.values())
    stats: dict[str, Any] = {
        "root": str(root),
        "pairs": n_pairs,
        "splits": splits,
        "changed": n_changed,
        "changed_share": round(n_changed / n_pairs, 4),
        "captions": len(lengths),
        "caption_words_mean": round(sum(lengths) / max(1, len(lengths)), 2),
        "caption_words_max": max(lengths, default=0),
        "distinct_captions": len(set(captions)),
        "vocab_train_gt5": sum(1 for c in train_counts.values() if c > VOCAB_THRESHOLD) + N_SPECIAL_TOKENS,
        "distinct_words": len(all_words),
    }
    meta_path = root / META_FILE
    if meta_path.exists():
        try:
            stats.update(_meta_statistics(_load_json(meta_path)))
        except (KeyError, TypeError, AttributeError, ValueError, ZeroDivisionError) as e:
            raise DataError(meta_path, f"not a SynthCC meta file ({type(e).__name__}: {e})") from None
    if (root / SCENE_CAPTIONS_FILE).exists():
        stats["single_date"] = single_date_statistics(root)
    return stats


def single_date_statistics(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Images per split, scene-caption length and vocabulary, land-cover class shares and how often each kind of
    object is named, from ``scene_captions.json`` (land-cover pixels are read from the maps when a record does not
    carry ``landcover_pixels``)."""
    doc, records = load_scene_captions(root)
    classes = [str(c) for c in doc["landcover_classes"]]
    splits = dict.fromkeys(SPLITS, 0)
    lengths: list[int] = []
    train_counts: Counter[str] = Counter()
    all_words: set[str] = set()
    captions: set[str] = set()
    pixels = [0] * len(classes)
    named: Counter[str] = Counter()
    for raw, rec in zip(doc["images"], records):
        splits[rec.split] += 1
        for c in rec.captions:
            words = tokenize(c)
            lengths.append(len(words))
            all_words.update(words)
            captions.add(" ".join(words))
            if rec.split == "train":
                train_counts.update(words)
        counts = raw.get("landcover_pixels")
        if not (isinstance(counts, list) and len(counts) == len(classes)):
            counts = np.bincount(read_landcover(rec.landcover_path, len(classes)).ravel(), minlength=len(classes))
        pixels = [a + int(b) for a, b in zip(pixels, counts)]
        objects = raw.get("objects")
        if isinstance(objects, dict):
            named.update(k for k, v in objects.items() if isinstance(v, int) and v > 0)
    total = max(1, sum(pixels))
    n = max(1, len(records))
    return {
        "images": len(records),
        "splits": splits,
        "captions": len(lengths),
        "caption_words_mean": round(sum(lengths) / max(1, len(lengths)), 2),
        "caption_words_max": max(lengths, default=0),
        "distinct_captions": len(captions),
        "vocab_train_gt5": sum(1 for c in train_counts.values() if c > VOCAB_THRESHOLD) + N_SPECIAL_TOKENS,
        "distinct_words": len(all_words),
        "landcover_share": {c: round(p / total, 4) for c, p in zip(classes, pixels)},
        "images_with": {k: round(v / n, 4) for k, v in sorted(named.items(), key=lambda kv: (-kv[1], kv[0]))},
    }


def _meta_statistics(meta: dict[str, Any]) -> dict[str, Any]:
    """Distributions over the ground truth: recipes, event types, building counts, locations, mask coverage."""
    items = meta.get("items", [])
    recipes: Counter[str] = Counter()
    events: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    locations: Counter[str] = Counter()
    mask_share = {"road": 0.0, "building": 0.0}
    n_changed = 0
    size = int(meta.get("size", 0))
    for it in items:
        if not it.get("changed"):
            continue
        n_changed += 1
        recipes[it["recipe"]] += 1
        for ev in it["events"]:
            events[f"{ev['type']} {ev['action']}"] += 1
            locations[ev["location"]] += 1
            if ev["type"] == "building":
                counts[count_class(ev["count"])] += 1
        if size:
            for k in mask_share:
                mask_share[k] += it["mask_pixels"][k] / (size * size)
    return {
        "generator": meta.get("generator"),
        "version": meta.get("version"),
        "preset": meta.get("preset"),
        "seed": meta.get("seed"),
        "size": size,
        "recipes": dict(recipes.most_common()),
        "event_types": dict(events.most_common()),
        "building_count_classes": {k: counts[k] for k in ("one", "two", "few", "many")},
        "locations": dict(locations.most_common()),
        "mask_share_changed": {k: round(v / max(1, n_changed), 4) for k, v in mask_share.items()},
    }


def format_statistics(stats: dict[str, Any]) -> str:
    """Human-readable summary (Markdown tables, pasted into docs/synthcc.md)."""
    lines = [
        f"SynthCC {stats.get('version', '?')}  preset={stats.get('preset')}  seed={stats.get('seed')}  "
        f"size={stats.get('size')} px  root={stats['root']}",
        "",
        "| split | pairs | changed | share |",
        "|---|---:|---:|---:|",
    ]
    for name, s in stats["splits"].items():
        lines.append(f"| {name} | {s['pairs']:,} | {s['changed']:,} | {s['changed_share']:.1%} |")
    lines.append(f"| total | {stats['pairs']:,} | {stats['changed']:,} | {stats['changed_share']:.1%} |")
    lines += [
        "",
        f"captions: {stats['captions']:,} ({stats['distinct_captions']:,} distinct), words per caption "
        f"mean {stats['caption_words_mean']} / max {stats['caption_words_max']}",
        f"vocabulary: {stats['vocab_train_gt5']} entries (train count > 5, incl. 4 special tokens); "
        f"{stats['distinct_words']} distinct words over all splits",
    ]
    if "recipes" in stats:
        n = max(1, stats["changed"])
        lines += ["", "| change type (changed pairs) | pairs | share |", "|---|---:|---:|"]
        lines += [f"| {k} | {v:,} | {v / n:.1%} |" for k, v in stats["recipes"].items()]
        lines += ["", "events: " + ", ".join(f"{k} {v:,}" for k, v in stats["event_types"].items())]
        lines += ["building counts: " + ", ".join(f"{k} {v:,}" for k, v in stats["building_count_classes"].items())]
        lines += ["locations: " + ", ".join(f"{k} {v:,}" for k, v in stats["locations"].items())]
        ms = stats["mask_share_changed"]
        lines += [f"changed pixels per changed pair: road {ms['road']:.1%}, building {ms['building']:.1%}"]
    if "single_date" in stats:
        sd = stats["single_date"]
        per_split = ", ".join(f"{k} {v:,}" for k, v in sd["splits"].items())
        lines += [
            "",
            f"single dates: {sd['images']:,} images ({per_split})",
            f"scene captions: {sd['captions']:,} ({sd['distinct_captions']:,} distinct), words per caption mean "
            f"{sd['caption_words_mean']} / max {sd['caption_words_max']}",
            f"scene vocabulary: {sd['vocab_train_gt5']} entries (train count > 5, incl. 4 special tokens); "
            f"{sd['distinct_words']} distinct words over all splits",
            "",
            "| land cover | share of pixels |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {v:.1%} |" for k, v in sd["landcover_share"].items()]
        lines += ["", "images with: " + ", ".join(f"{k} {v:.0%}" for k, v in sd["images_with"].items())]
    return "\n".join(lines)
