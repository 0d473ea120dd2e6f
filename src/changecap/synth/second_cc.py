"""SynthCC written in the SECOND-CC layout (``changecap synth --out DIR --layout second-cc``).

The same pairs and captions as the LEVIR-MCI layout (same seed, same pixels and sentences), stored as SECOND-CC
stores its data, with a SECOND semantic map per date instead of a change mask::

    DIR/SECOND-CC-AUG.json                       Karpathy style: filename, filepath, split, changeflag, sentences
    DIR/synthcc_meta.json                        generator, settings and ground truth per pair
    DIR/{train,val,test}/rgb/{A,B}/<split>_<6 digits>.png
    DIR/{train,val,test}/sem/{A,B}/<split>_<6 digits>.png     SECOND palette (changecap.data.semantic_maps)

**Semantic maps.** Each date's renderer class canvas (``render.draw_classes``, in the before image's frame like
SynthCC's change mask) goes through :data:`SECOND_OF_RENDER_CLASS`, the one table from SynthCC classes to SECOND
classes below. Like SECOND, a map carries classes only where the two dates' classes differ; elsewhere it is 0
("unchanged"), so the second-cc reader's change mask (the maps differ) is exactly the changed land cover.

===================  =======================================================================================
SECOND class         SynthCC renderer classes
===================  =======================================================================================
1 water              WATER, SHORE (the wet bank ring belongs to the water body)
2 ground             BARE, SOIL, ROAD, CURB, DRIVEWAY, PARKING, PAINT, cars (SECOND's non-vegetated ground
                     surface: SECOND has no road class)
3 low vegetation     GRASS, LAWN
4 tree               TREE, TREE_LIGHT, FOREST_FLOOR (the ground between the trees of woods)
5 building           every roof facet
6 playground         (none: SynthCC draws no sports fields)
===================  =======================================================================================

Consequence of SECOND's classes: a change within one class leaves the maps equal — a road or a parking lot built
on bare land is ground → ground, so such a pair has a change flag (and captions) but an empty map difference, as a
road over bare soil would in SECOND.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from changecap.data.files import atomic_write_text
from changecap.data.semantic_maps import SECOND_CLASSES, SECOND_PALETTE
from changecap.synth import classes as C
from changecap.synth.captions import make_captions
from changecap.synth.generate import (
    SYNTHCC_VERSION,
    PairJob,
    caption_rng,
    check_output_folder,
    plan_jobs,
    render_pair,
)
from changecap.synth.pngio import write_png
from changecap.synth.presets import SPLITS, resolve_settings, split_sizes
from changecap.synth.render import Fields, draw_classes, frame_for, ground_classes
from changecap.synth.scene import plan_pair

ANNOTATION_FILE = "SECOND-CC-AUG.json"
META_FILE = "synthcc_meta.json"
_NAME_RE = re.compile(r"^(train|val|test)_(\d{6})\.png$")
_FOLDERS: tuple[str, ...] = ("rgb/A", "rgb/B", "sem/A", "sem/B")

WATER, GROUND, LOW_VEGETATION, TREE, BUILDING = (SECOND_CLASSES.index(n) for n in
                                                 ("water", "ground", "low vegetation", "tree", "building"))  # fmt: skip
_SOURCES: dict[int, tuple[int, ...]] = {
    WATER: (C.WATER, C.SHORE),
    GROUND: (C.BARE, C.SOIL, C.ROAD, C.CURB, C.DRIVEWAY, C.PARKING, C.PAINT,
             *range(C.CAR0, C.CAR0 + C.N_CAR_COLORS)),  # fmt: skip
    LOW_VEGETATION: (C.GRASS, C.LAWN),
    TREE: (C.TREE, C.TREE_LIGHT, C.FOREST_FLOOR),
    BUILDING: tuple(range(C.ROOF0, C.N_CLASSES)),
}


def _lookup_table() -> np.ndarray:
    """``uint8 [256]`` renderer class → SECOND id; classes the renderer never draws map to 255 (no colour), so a new
    renderer class without a SECOND class fails loudly instead of reading as "unchanged"."""
    lut = np.full(256, 255, np.uint8)
    for target, sources in _SOURCES.items():
        lut[list(sources)] = target
    return lut


SECOND_OF_RENDER_CLASS = _lookup_table()
_PALETTE = np.array(SECOND_PALETTE, dtype=np.uint8)  # [7, 3]


def semantic_maps(seed: int, index: int, changed: bool, size: int) -> np.ndarray:
    """SECOND class maps ``uint8 [2, S, S]`` (before, after) of SynthCC pair ``index``, in the before image's frame;
    0 wherever the two dates' classes agree."""
    scene = plan_pair(seed, index, changed)
    frame = frame_for(size)
    empty = np.empty(0, np.float32)
    fields = Fields(ground=ground_classes(scene, frame), drift=empty, grain=empty, haze=empty)  # only ground is read
    s, m = frame.size, frame.margin
    maps = []
    for when in ("A", "B"):
        classes, _ = draw_classes(scene, when, frame, fields, 0.0, 0.0)  # shadows do not change any class
        maps.append(np.take(SECOND_OF_RENDER_CLASS, classes[m : m + s, m : m + s]))  # [S, S]
    both = np.stack(maps)  # [2, S, S]
    if (both == 255).any():
        raise ValueError("a renderer class has no SECOND class in SECOND_OF_RENDER_CLASS")
    both[:, both[0] == both[1]] = 0  # SECOND annotates changed land cover only
    return both


def _make_pair(job_root: tuple[PairJob, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Worker: render one pair, write its four PNGs and return its JSON entry and meta item."""
    job, root = job_root
    pair = render_pair(job.seed, job.index, job.changed, job.size)
    maps = semantic_maps(job.seed, job.index, job.changed, job.size)
    folder = Path(root) / job.split
    for side, rgb, sem in (("A", pair.before, maps[0]), ("B", pair.after, maps[1])):
        write_png(folder / "rgb" / side / job.filename, rgb)
        write_png(folder / "sem" / side / job.filename, _PALETTE[sem])  # [S, S, 3]
    captions = make_captions(pair.scene.events, caption_rng(job.seed, job.index))
    sentids = [job.index * 5 + i for i in range(len(captions))]
    entry = {
        "filepath": job.split,
        "filename": job.filename,
        "imgid": job.index,
        "split": job.split,
        "changeflag": int(job.changed),
        "sentids": sentids,
        "sentences": [
            {"tokens": c.split(), "raw": f" {c} .", "imgid": job.index, "sentid": sid}
            for c, sid in zip(captions, sentids)
        ],
    }
    changed_px = maps[0] != maps[1]
    meta = {
        "filename": job.filename,
        "split": job.split,
        "imgid": job.index,
        "changed": job.changed,
        "recipe": pair.scene.recipe,
        "events": pair.scene.events,
        "changed_pixels": int(changed_px.sum()),
        "transitions": {f"{a}->{b}": int(n) for (a, b), n in _transitions(maps[:, changed_px]).items()},
    }
    return entry, meta


def _transitions(pairs: np.ndarray) -> dict[tuple[str, str], int]:
    """``[2, K]`` class ids of changed pixels → pixel count per (from, to) class name."""
    codes, counts = np.unique(pairs[0].astype(np.int64) * 16 + pairs[1], return_counts=True)
    return {(SECOND_CLASSES[int(c) // 16], SECOND_CLASSES[int(c) % 16]): int(n) for c, n in zip(codes, counts)}


def _iter_pairs(jobs: list[PairJob], root: Path, workers: int) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    args = [(j, str(root)) for j in jobs]
    if workers == 1:
        yield from map(_make_pair, args)
        return
    # fork where available, as generate_synthcc: workers inherit the imported modules (numpy / PIL work only)
    methods = multiprocessing.get_all_start_methods()
    with multiprocessing.get_context("fork" if "fork" in methods else "spawn").Pool(workers) as pool:
        yield from pool.imap(_make_pair, args, chunksize=8)


_OWN_FILES = (ANNOTATION_FILE, META_FILE)
_OWN_ENTRIES = frozenset({*SPLITS, *_OWN_FILES})



def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data))  # a fresh temporary name, never one planted beside the target


def generate_second_cc(
    out_dir: str | os.PathLike[str],
    *,
    pairs: int | None = None,
    size: int | None = None,
    seed: int = 0,
    preset: str = "small",
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Generate a SynthCC set in the SECOND-CC layout in ``out_dir`` (arguments as ``generate_synthcc``).

    The captions JSON is written last (a half-written set has none); SynthCC-named images of an earlier, larger
    run in the folder are removed.
    """
    settings = resolve_settings(preset=preset, pairs=pairs, size=size, seed=seed, workers=workers)
    root = Path(out_dir)
    # only an empty folder or an earlier SynthCC second-cc set may be written into (never a real dataset)
    check_output_folder(root, ANNOTATION_FILE, _OWN_ENTRIES)
    jobs = plan_jobs(settings)
    for split in SPLITS:
        for sub in _FOLDERS:
            (root / split / sub).mkdir(parents=True, exist_ok=True)
    (root / ANNOTATION_FILE).unlink(missing_ok=True)
    entries: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    pairs_iter = _iter_pairs(jobs, root, settings.workers)
    first = next(pairs_iter)  # starts the worker pool before tqdm's monitor thread exists
    bar = tqdm(total=len(jobs), unit="pair", desc="synthcc second-cc", disable=not progress)
    try:
        for entry, meta in itertools.chain([first], pairs_iter):
            entries.append(entry)
            items.append(meta)
            bar.update(1)
    finally:
        bar.close()
    keep = {(j.split, j.filename) for j in jobs}
    for split in SPLITS:
        for sub in _FOLDERS:
            for f in (root / split / sub).iterdir():
                if _NAME_RE.match(f.name) and (split, f.name) not in keep:
                    f.unlink()
    meta_doc = {
        "generator": "changecap.synth",
        "version": SYNTHCC_VERSION,
        "layout": "second-cc",
        "seed": settings.seed,
        "preset": settings.preset,
        "size": settings.size,
        "num_pairs": settings.pairs,
        "split_sizes": split_sizes(settings.pairs),
        "semantic_classes": list(SECOND_CLASSES),
        "items": items,
    }
    _write_json(root / META_FILE, meta_doc)
    _write_json(root / ANNOTATION_FILE, {"images": entries})
    return root
