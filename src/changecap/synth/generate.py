"""Generate a SynthCC set on disk in the LEVIR-MCI layout.

Each pair is a pure function of ``(seed, index)`` and its change flag (the split/changed plan is a function of the
seed and the number of pairs), so pairs can be rendered in any order by any number of worker processes and the files
are byte-identical. Independent random streams per pair keep concerns apart: the layout (``scene``), the
rendering and nuisance, the pair captions, and the scene captions of each date; improving the caption templates does
not move a single pixel, and the single-date files leave the pair files untouched.

Output::

    DIR/LevirCCcaptions.json                       LEVIR-CC fields, written last (its presence marks a complete set)
    DIR/synthcc_meta.json                          generator, settings and ground truth per pair
    DIR/scene_captions.json                        scene captions of every single image (``data.single_date``)
    DIR/images/{train,val,test}/{A,B,label}/<split>_<6 digits>.png
    DIR/images/{train,val,test}/landcover/{A,B}/<split>_<6 digits>.png   land-cover map of each image
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from changecap.data.files import atomic_write_text, is_temp_name, remove_stale_temps
from changecap.data.single_date import (
    DATES,
    LANDCOVER_FOLDER,
    SCENE_CAPTIONS_FILE,
    SCENE_CAPTIONS_FORMAT,
    SCENE_CAPTIONS_VERSION,
)
from changecap.errors import DataError
from changecap.synth.captions import make_captions
from changecap.synth.landcover import LANDCOVER_CLASSES, landcover_map
from changecap.synth.nuisance import apply_photometric, draw_nuisance, shadow_angle
from changecap.synth.pngio import write_png
from changecap.synth.presets import SPLITS, SynthSettings, resolve_settings, split_sizes
from changecap.synth.render import change_mask, colorize, draw_classes, frame_for, make_fields, scene_palette, seasonal
from changecap.synth.scene import Scene, plan_pair
from changecap.synth.scene_captions import scene_record

SYNTHCC_VERSION = "1.0"
ANNOTATION_FILE = "LevirCCcaptions.json"
META_FILE = "synthcc_meta.json"
_NAME_RE = re.compile(r"^(train|val|test)_(\d{6})\.png$")

# Stream tags mixed into the per-pair seed sequence (see module docstring).
_RENDER_STREAM, _CAPTION_STREAM, _PLAN_STREAM, _SCENE_CAPTION_STREAM = 0xE1, 0xCA, 0x91, 0x5D


@dataclass(frozen=True)
class PairJob:
    """What a worker needs to produce one pair."""

    index: int  # global index = imgid
    split: str
    number: int  # 1-based index within the split (file name)
    changed: bool
    seed: int
    size: int

    @property
    def filename(self) -> str:
        return f"{self.split}_{self.number:06d}.png"


@dataclass
class RenderedPair:
    before: np.ndarray  # uint8 [S, S, 3]
    after: np.ndarray  # uint8 [S, S, 3]
    mask: np.ndarray  # uint8 [S, S] with values 0 / 128 / 255
    scene: Scene
    nuisance: dict[str, Any]
    landcover: tuple[np.ndarray, np.ndarray]  # uint8 [S, S] land-cover ids of the before / after image, own frame
    shifts: tuple[tuple[int, int], tuple[int, int]]  # (dx, dy) window offset of the before / after image


def plan_jobs(settings: SynthSettings) -> list[PairJob]:
    """Split and change flag of every pair: LEVIR-CC split proportions, half of each split changed.

    Like LEVIR-CC (3,407 of 6,815 train pairs changed) each split has ``n // 2`` changed pairs, at positions
    shuffled with the seed.
    """
    jobs: list[PairJob] = []
    index = 0
    for split_id, (split, n) in enumerate(split_sizes(settings.pairs).items()):
        rng = np.random.default_rng([settings.seed, split_id, _PLAN_STREAM])
        changed = np.zeros(n, bool)
        changed[rng.permutation(n)[: n // 2]] = True
        for k in range(n):
            jobs.append(PairJob(index, split, k + 1, bool(changed[k]), settings.seed, settings.size))
            index += 1
    return jobs


def caption_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of pair ``index``'s captions: the same sentences in every layout SynthCC writes."""
    return np.random.default_rng([seed, index, _CAPTION_STREAM])


def render_pair(seed: int, index: int, changed: bool, size: int) -> RenderedPair:
    """Lay out and render one pair (no file I/O)."""
    scene = plan_pair(seed, index, changed)
    rng = np.random.default_rng([seed, index, _RENDER_STREAM])
    frame = frame_for(size)
    fields = make_fields(scene, rng, frame)
    palette = scene_palette(scene, rng)
    s, m = frame.size, frame.margin
    images = []
    nuisances = []
    landcover = []
    shifts = []
    for when in ("A", "B"):
        nz = draw_nuisance(rng, size, after=when == "B")
        classes, shadow = draw_classes(
            scene, when, frame, fields, shadow_angle(scene.shadow_angle, nz), nz.shadow_scale
        )
        y0, x0 = m + nz.shift[1], m + nz.shift[0]  # crop of this image on the shared canvas
        window = (slice(y0, y0 + s), slice(x0, x0 + s))
        rgb = colorize(
            classes[window],
            shadow[window],
            fields.drift[window],
            fields.grain[window],
            seasonal(palette, nz.dryness, nz.greenness),
            gain=nz.scale(),
        )
        images.append(apply_photometric(rgb, fields.haze[window], nz, rng))
        nuisances.append(nz.to_json())
        landcover.append(landcover_map(classes[window]))  # the class canvas the colours came from: same frame
        shifts.append(nz.shift)
    mask = change_mask(scene, frame)
    return RenderedPair(
        images[0],
        images[1],
        mask,
        scene,
        {"before": nuisances[0], "after": nuisances[1]},
        (landcover[0], landcover[1]),
        (shifts[0], shifts[1]),
    )


def _make_pair(job_root: tuple[PairJob, str]) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Worker: render, write the five PNGs and return the JSON record, the meta entry and the two single-date
    records of one pair."""
    job, root = job_root
    pair = render_pair(job.seed, job.index, job.changed, job.size)
    folder = Path(root) / "images" / job.split
    write_png(folder / "A" / job.filename, pair.before)
    write_png(folder / "B" / job.filename, pair.after)
    write_png(folder / "label" / job.filename, np.stack([pair.mask] * 3, axis=2))  # [S, S, 3] grey
    singles = []
    for k, date in enumerate(DATES):
        write_png(folder / LANDCOVER_FOLDER / date / job.filename, pair.landcover[k])
        rng = np.random.default_rng([job.seed, job.index, _SCENE_CAPTION_STREAM, k])
        described = scene_record(pair.scene, date, pair.landcover[k], pair.shifts[k], rng)
        singles.append({"filename": job.filename, "split": job.split, "date": date, **described})
    captions = make_captions(pair.scene.events, np.random.default_rng([job.seed, job.index, _CAPTION_STREAM]))
    sentids = [job.index * 5 + i for i in range(len(captions))]
    record = {
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
    meta = {
        "filename": job.filename,
        "split": job.split,
        "imgid": job.index,
        "changed": job.changed,
        "recipe": pair.scene.recipe,
        "events": pair.scene.events,
        "mask_pixels": {"road": int((pair.mask == 128).sum()), "building": int((pair.mask == 255).sum())},
        "nuisance": pair.nuisance,
    }
    return record, meta, singles


def _pool_context() -> multiprocessing.context.BaseContext:
    """``fork`` where available: workers inherit the imported modules instead of re-importing them (importing
    ``changecap.data`` pulls in torch, seconds per spawned worker). Workers only run numpy/PIL code, which is
    fork-safe; the pool is created before the progress bar starts its monitor thread."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _iter_pairs(
    jobs: list[PairJob], root: Path, workers: int
) -> Iterator[tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]]:
    args = [(j, str(root)) for j in jobs]
    if workers == 1:
        yield from map(_make_pair, args)
        return
    with _pool_context().Pool(workers) as pool:
        yield from pool.imap(_make_pair, args, chunksize=8)


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data))


_IMAGE_FOLDERS: tuple[str, ...] = ("A", "B", "label", *(f"{LANDCOVER_FOLDER}/{d}" for d in DATES))


def _remove_stale(root: Path, jobs: list[PairJob]) -> None:
    """Delete SynthCC-named PNGs of an earlier, larger run in the same folder (not referenced any more)."""
    keep = {(j.split, j.filename) for j in jobs}
    for split in SPLITS:
        for sub in _IMAGE_FOLDERS:
            folder = root / "images" / split / sub
            if not folder.is_dir():
                continue
            for f in folder.iterdir():
                if _NAME_RE.match(f.name) and (split, f.name) not in keep:
                    f.unlink()


_OWN_ENTRIES = frozenset({ANNOTATION_FILE, META_FILE, SCENE_CAPTIONS_FILE, "images"})


def check_output_folder(
    root: Path, annotation_file: str = ANNOTATION_FILE, own_entries: frozenset[str] = _OWN_ENTRIES
) -> None:
    """Refuse to write into anything but an empty folder or an earlier (possibly interrupted) SynthCC set, so that
    pointing ``--out`` at a real dataset cannot overwrite it. ``annotation_file`` and ``own_entries``: what the
    layout being written puts there (the LEVIR-MCI layout by default; SECOND-CC's passes its own)."""
    if not root.exists():
        return
    if not root.is_dir():
        raise DataError(root, "output path exists and is not a folder")
    remove_stale_temps(root)  # the JSON files half written by a killed run
    names = {p.name for p in root.iterdir()}
    foreign = sorted(n for n in names - own_entries if not is_temp_name(n))
    if foreign:
        raise DataError(
            root, f"output folder is not empty and not a SynthCC set (contains {foreign[0]!r}); choose a new folder"
        )
    if annotation_file in names and META_FILE not in names:
        raise DataError(
            root, f"output folder holds a {annotation_file} that SynthCC did not write; choose a new folder"
        )


def generate_synthcc(
    out_dir: str | os.PathLike[str],
    *,
    pairs: int | None = None,
    size: int | None = None,
    seed: int = 0,
    preset: str = "small",
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Generate a SynthCC set in ``out_dir`` (LEVIR-MCI layout) and return the folder.

    ``pairs``/``size`` override the preset's values. The same arguments always give byte-identical files, whatever
    ``workers`` is. An existing SynthCC set in the folder is overwritten (its surplus files removed); any other
    non-empty folder is refused with a :class:`DataError`.
    """
    settings = resolve_settings(preset=preset, pairs=pairs, size=size, seed=seed, workers=workers)
    root = Path(out_dir)
    check_output_folder(root)
    jobs = plan_jobs(settings)
    for split in SPLITS:
        for sub in _IMAGE_FOLDERS:
            (root / "images" / split / sub).mkdir(parents=True, exist_ok=True)
    # A half-written set must not look complete: drop the captions file first, write it last.
    (root / ANNOTATION_FILE).unlink(missing_ok=True)
    records: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    singles: list[dict[str, Any]] = []
    pairs_iter = _iter_pairs(jobs, root, settings.workers)
    first = next(pairs_iter)  # starts the worker pool before tqdm's monitor thread exists
    bar = tqdm(total=len(jobs), unit="pair", desc="synthcc", disable=not progress)
    try:
        for record, meta, single in itertools.chain([first], pairs_iter):
            records.append(record)
            items.append(meta)
            singles.extend(single)
            bar.update(1)
    finally:
        bar.close()
    _remove_stale(root, jobs)
    meta_doc = {
        "generator": "changecap.synth",
        "version": SYNTHCC_VERSION,
        "seed": settings.seed,
        "preset": settings.preset,
        "size": settings.size,
        "num_pairs": settings.pairs,
        "split_sizes": split_sizes(settings.pairs),
        "mask_values": {"0": "no change", "128": "road change", "255": "building change"},
        "coordinates": "unit square of the before image, x right, y down; location = 3x3 grid cell of the centroid",
        "items": items,
    }
    _write_json(root / META_FILE, meta_doc)
    scene_doc = {
        "format": SCENE_CAPTIONS_FORMAT,
        "version": SCENE_CAPTIONS_VERSION,
        "landcover_classes": list(LANDCOVER_CLASSES),
        "images": singles,
    }
    _write_json(root / SCENE_CAPTIONS_FILE, scene_doc)
    _write_json(root / ANNOTATION_FILE, {"images": records})
    return root
