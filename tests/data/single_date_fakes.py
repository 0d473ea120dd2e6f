"""Tiny single-date datasets for pretraining tests, written on the fly in the layouts ``changecap pretrain`` reads.

Every image is two land-cover regions (a left and a right half of a random split column) painted in class colours
with noise; its map holds the class ids and its captions name the two classes and their sides, so a contrastive
model and a segmentation head can both learn something in a few updates.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES: tuple[str, ...] = ("bare land", "grass", "water", "buildings")
COLOURS = np.array([[170, 150, 110], [80, 160, 60], [40, 80, 170], [200, 60, 60]], dtype=np.float32)
PAIRS: Mapping[str, int] = {"train": 6, "val": 2, "test": 2}
TEMPLATES: tuple[str, ...] = (
    "{a} on the left and {b} on the right",
    "the left side is {a} , the right side {b}",
    "{b} to the right of {a}",
)


def scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """An image ``uint8 [S, S, 3]``, its class map ``uint8 [S, S]`` and three captions."""
    a, b = rng.choice(len(CLASSES), size=2, replace=False)
    split = int(rng.integers(size // 3, 2 * size // 3 + 1))
    classes = np.full((size, size), a, dtype=np.uint8)
    classes[:, split:] = b
    image = COLOURS[classes] + rng.normal(0, 12, (size, size, 3))
    captions = [t.format(a=CLASSES[a], b=CLASSES[b]) for t in TEMPLATES]
    return np.clip(image, 0, 255).astype(np.uint8), classes, captions


def make_synthcc_single_dates(
    root: Path, pairs: Mapping[str, int] = PAIRS, size: int = 16, seed: int = 0, maps: bool = True
) -> Path:
    """A SynthCC root with single-date descriptions: ``scene_captions.json``, ``images/{split}/{A,B}/``,
    ``images/{split}/landcover/{A,B}/`` (with ``maps``) and ``LevirCCcaptions.json`` of the pairs."""
    rng = np.random.default_rng(seed)
    entries, pair_entries = [], []
    for split, n in pairs.items():
        for i in range(n):
            name = f"{split}_{i + 1:06d}.png"
            for date in ("A", "B"):
                image, classes, captions = scene(rng, size)
                folder = root / "images" / split / date
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(folder / name)
                if maps:
                    lc = root / "images" / split / "landcover" / date
                    lc.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(classes, mode="L").save(lc / name)
                entries.append({"filename": name, "split": split, "date": date, "sentences": captions})
            raws = [f" some {CLASSES[k]} appear in the scene ." for k in range(len(CLASSES))]
            pair_entries.append({"filename": name, "split": split, "filepath": split,
                                 "sentences": [{"raw": r, "tokens": r.split()} for r in raws]})  # fmt: skip
    scene_json = {"format": "synthcc-scene-captions", "version": 1, "landcover_classes": list(CLASSES),
                  "images": entries}  # fmt: skip
    (root / "scene_captions.json").write_text(json.dumps(scene_json), encoding="utf-8")
    (root / "LevirCCcaptions.json").write_text(json.dumps({"images": pair_entries}), encoding="utf-8")
    return root


def make_caption_folder(root: Path, n: int = 6, size: int = 16, seed: int = 0, jsonl: bool = False) -> Path:
    """A user's folder: ``images/`` and ``captions.csv`` (rows ``filename,caption``) or ``captions.jsonl``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str]] = []
    lines = []
    for i in range(n):
        image, _, captions = scene(rng, size)
        name = f"tile_{i:03d}.png"
        Image.fromarray(image).save(root / "images" / name)
        rows += [(name, c) for c in captions]
        lines.append(json.dumps({"filename": name, "captions": captions}))
    if jsonl:
        (root / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        with open(root / "captions.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "caption"])
            writer.writerows(rows)
    return root


def make_segmentation_folder(root: Path, n: int = 6, size: int = 16, seed: int = 0) -> Path:
    """A user's folder: ``images/``, ``maps/`` of the same names and ``classes.txt``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "maps").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, classes, _ = scene(rng, size)
        Image.fromarray(image).save(root / "images" / f"tile_{i:03d}.png")
        Image.fromarray(classes, mode="L").save(root / "maps" / f"tile_{i:03d}.png")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    return root
