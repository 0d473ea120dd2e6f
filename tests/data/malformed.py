"""Catalogue of malformed datasets: each case breaks one thing in a tiny fake dataset.

Shared by ``tests/data/test_check.py`` (library errors) and ``tests/cli/test_data_cli.py`` (CLI exit status).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tests.data.fakes import make_dubai, make_levir, make_second_cc, make_tokens

SMALL = {"train": 2, "val": 1, "test": 1}


@dataclass(frozen=True)
class Case:
    """``build(tmp)`` returns the dataset root; the error must mention every string in ``expect``."""

    id: str
    format: str
    build: Callable[[Path], Path]
    expect: tuple[str, ...]
    deep: bool = False


def _levir(tmp: Path, fmt: str = "levir-cc") -> Path:
    return make_levir(tmp / "ds", fmt, pairs=SMALL, size=8)


def _edit_json(root: Path, edit: Callable[[dict], None]) -> None:
    p = root / "LevirCCcaptions.json"
    data = json.loads(p.read_text())
    edit(data)
    p.write_text(json.dumps(data))


def _img(root: Path, side: str, name: str = "train_000001.png", split: str = "train") -> Path:
    return root / "images" / split / side / name


def missing_image(tmp: Path) -> Path:
    root = _levir(tmp)
    _img(root, "A").unlink()
    return root


def size_mismatch(tmp: Path) -> Path:
    root = _levir(tmp)
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(_img(root, "B"))
    return root


def broken_json(tmp: Path) -> Path:
    root = _levir(tmp)
    (root / "LevirCCcaptions.json").write_text('{"images": [')
    return root


def missing_images_key(tmp: Path) -> Path:
    root = _levir(tmp)
    (root / "LevirCCcaptions.json").write_text(json.dumps({"imgs": []}))
    return root


def missing_filename(tmp: Path) -> Path:
    root = _levir(tmp)
    _edit_json(root, lambda d: d["images"][1].pop("filename"))
    return root


def missing_split(tmp: Path) -> Path:
    root = _levir(tmp)
    _edit_json(root, lambda d: d["images"][0].pop("split"))
    return root


def missing_sentences(tmp: Path) -> Path:
    root = _levir(tmp)
    _edit_json(root, lambda d: d["images"][3].pop("sentences"))
    return root


def empty_captions(tmp: Path) -> Path:
    root = _levir(tmp)
    _edit_json(root, lambda d: d["images"][2].__setitem__("sentences", []))
    return root


def unknown_split(tmp: Path) -> Path:
    root = _levir(tmp)
    _edit_json(root, lambda d: d["images"][0].__setitem__("split", "training"))
    return root


def sentence_without_text(tmp: Path) -> Path:
    root = _levir(tmp)

    def drop(d: dict) -> None:
        s = d["images"][0]["sentences"][1]
        s.pop("raw")
        s.pop("tokens")

    _edit_json(root, drop)
    return root


def bad_changeflag(tmp: Path) -> Path:
    root = _levir(tmp)
    _edit_json(root, lambda d: d["images"][1].__setitem__("changeflag", 2))
    return root


def duplicate_filename(tmp: Path) -> Path:
    root = _levir(tmp)
    _edit_json(root, lambda d: d["images"][1].__setitem__("filename", d["images"][0]["filename"]))
    return root


def missing_annotation(tmp: Path) -> Path:
    root = _levir(tmp)
    (root / "LevirCCcaptions.json").unlink()
    return root


def non_image_file(tmp: Path) -> Path:
    root = _levir(tmp)
    _img(root, "B", "train_000002.png").write_text("this is not a picture\n")
    return root


def corrupt_png(tmp: Path) -> Path:
    root = _levir(tmp)
    p = _img(root, "A", "train_000002.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # header intact, pixel data truncated
    return root


def grayscale_image(tmp: Path) -> Path:
    root = _levir(tmp)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(_img(root, "A", "test_000001.png", "test"))
    return root


def transparent_rgba(tmp: Path) -> Path:
    root = _levir(tmp)
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 10
    Image.fromarray(rgba).save(_img(root, "B", "val_000001.png", "val"))
    return root


def mask_invalid_value(tmp: Path) -> Path:
    root = _levir(tmp, "levir-mci")
    label = np.zeros((8, 8, 3), np.uint8)
    label[0, 0] = 7
    Image.fromarray(label).save(_img(root, "label"))
    return root


def mask_size_mismatch(tmp: Path) -> Path:
    root = _levir(tmp, "levir-mci")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(_img(root, "label", "val_000001.png", "val"))
    return root


def missing_label_dir(tmp: Path) -> Path:
    root = _levir(tmp, "levir-mci")
    label_dir = root / "images" / "val" / "label"
    for p in label_dir.iterdir():
        p.unlink()
    label_dir.rmdir()
    return root


def missing_tokens_file(tmp: Path) -> Path:
    root = make_tokens(tmp / "ds", pairs=SMALL)
    (root / "tokens" / "train_000002.txt").unlink()
    return root


def broken_tokens_file(tmp: Path) -> Path:
    root = make_tokens(tmp / "ds", pairs=SMALL)
    (root / "tokens" / "val_000001.txt").write_text('[["<START>", "a"')
    return root


def tokens_in_two_splits(tmp: Path) -> Path:
    root = make_tokens(tmp / "ds", pairs=SMALL)
    with (root / "test.txt").open("a") as f:
        f.write("val_000001.png\n")
    return root


def dubai_bad_prefix(tmp: Path) -> Path:
    root = make_dubai(tmp / "ds", pairs=SMALL, tile=8)
    cap_dir = next(root.rglob("description_jsontr_te_val"))
    (cap_dir / "Test_captions.json").rename(cap_dir / "captions_2010.json")
    return root


def dubai_four_band_tile(tmp: Path) -> Path:
    import tifffile

    root = make_dubai(tmp / "ds", pairs=SMALL, tile=8)
    tile = next(root.rglob("500_2010")) / "2.tif"
    tifffile.imwrite(tile, np.zeros((8, 8, 4), np.uint8), photometric="minisblack", planarconfig="contig")
    return root


def dubai_missing_after_tile(tmp: Path) -> Path:
    root = make_dubai(tmp / "ds", pairs=SMALL, tile=8)
    (next(root.rglob("500_2010")) / "3.tif").unlink()
    return root


def _second_cc(tmp: Path) -> Path:
    return make_second_cc(tmp / "ds", pairs=SMALL, size=8)


def second_cc_missing_sem_dir(tmp: Path) -> Path:
    root = _second_cc(tmp)
    sem_b = root / "val" / "sem" / "B"
    for p in sem_b.iterdir():
        p.unlink()
    sem_b.rmdir()
    return root


def second_cc_missing_map(tmp: Path) -> Path:
    root = _second_cc(tmp)
    (root / "train" / "sem" / "A" / "00001.png").unlink()
    return root


def second_cc_unknown_colour(tmp: Path) -> Path:
    root = _second_cc(tmp)
    sem = np.full((8, 8, 3), 255, np.uint8)
    sem[2, 3] = (10, 20, 30)
    Image.fromarray(sem).save(root / "test" / "sem" / "B" / "00003.png")
    return root


def second_cc_map_size_mismatch(tmp: Path) -> Path:
    root = _second_cc(tmp)
    Image.fromarray(np.full((6, 8, 3), 255, np.uint8)).save(root / "train" / "sem" / "B" / "00000.png")
    return root


CASES: tuple[Case, ...] = (
    Case("missing-image", "levir-cc", missing_image, ("A/train_000001.png", "before image (A) not found")),
    Case("ab-size-mismatch", "levir-cc", size_mismatch, ("B/train_000001.png", "A/train_000001.png", "10×8")),
    Case("broken-json", "levir-cc", broken_json, ("LevirCCcaptions.json", "not valid JSON")),
    Case("missing-images-key", "levir-cc", missing_images_key, ("LevirCCcaptions.json", "[images]")),
    Case("missing-filename", "levir-cc", missing_filename, ("LevirCCcaptions.json", "[images[1].filename]")),
    Case("missing-split", "levir-cc", missing_split, ("LevirCCcaptions.json", "[images[0].split]")),
    Case("missing-sentences", "levir-cc", missing_sentences, ("LevirCCcaptions.json", "[images[3].sentences]")),
    Case("empty-caption-list", "levir-cc", empty_captions, ("[images[2].sentences]", "caption list is empty")),
    Case("unknown-split", "levir-cc", unknown_split, ("[images[0].split]", "'training'")),
    Case("sentence-without-text", "levir-cc", sentence_without_text, ("[images[0].sentences[1]]", "'raw'")),
    Case("bad-changeflag", "levir-cc", bad_changeflag, ("[images[1].changeflag]", "0 or 1")),
    Case("duplicate-filename", "levir-cc", duplicate_filename, ("[images[1].filename]", "duplicate")),
    Case("missing-annotation", "levir-cc", missing_annotation, ("LevirCCcaptions.json", "not found")),
    Case("non-image-file", "levir-cc", non_image_file, ("B/train_000002.png", "not a readable image")),
    Case("corrupt-png", "levir-cc", corrupt_png, ("A/train_000002.png", "corrupt image"), deep=True),
    Case("grayscale-image", "levir-cc", grayscale_image, ("A/test_000001.png", "single-band")),
    Case("transparent-rgba", "levir-cc", transparent_rgba, ("B/val_000001.png", "alpha"), deep=True),
    Case("mask-invalid-value", "levir-mci", mask_invalid_value, ("label/train_000001.png", "value(s) 7"), deep=True),
    Case("mask-size-mismatch", "levir-mci", mask_size_mismatch, ("label/val_000001.png", "4×4")),
    Case("missing-label-dir", "levir-mci", missing_label_dir, ("images/val/label", "label folder not found")),
    Case("missing-tokens-file", "tokens", missing_tokens_file, ("tokens/train_000002.txt", "train.txt")),
    Case("broken-tokens-file", "tokens", broken_tokens_file, ("tokens/val_000001.txt", "not valid JSON")),
    Case("tokens-in-two-splits", "tokens", tokens_in_two_splits, ("test.txt", "val_000001.png", "val.txt")),
    Case("dubai-no-split-prefix", "dubai-cc", dubai_bad_prefix, ("captions_2010.json", "[file name]", "Train_")),
    Case("dubai-four-band-tile", "dubai-cc", dubai_four_band_tile, ("500_2010/2.tif", "4 bands")),
    Case("dubai-missing-after", "dubai-cc", dubai_missing_after_tile, ("500_2010/3.tif", "after image (B)")),
    Case("second-cc-missing-sem-dir", "second-cc", second_cc_missing_sem_dir, ("val/sem/B", "folder not found")),
    Case("second-cc-missing-map", "second-cc", second_cc_missing_map, ("sem/A/00001.png", "before semantic map")),
    Case(
        "second-cc-unknown-colour",
        "second-cc",
        second_cc_unknown_colour,
        ("sem/B/00003.png", "(10, 20, 30)", "not SECOND classes"),
        deep=True,
    ),
    Case("second-cc-map-size", "second-cc", second_cc_map_size_mismatch, ("sem/B/00000.png", "8×6")),
)
