"""Tiny fake datasets in every supported on-disk format, generated on the fly (never downloaded).

Pairs alternate changed / unchanged (even index changed). Images are small noise patches (A and B differ where the
"change" is); LEVIR-MCI labels are 3-channel PNGs with values 0 / 128 / 255.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from changecap.data.text import DUBAI_NO_CHANGE_SENTENCES, NO_CHANGE_SENTENCES

DEFAULT_PAIRS: Mapping[str, int] = {"train": 4, "val": 2, "test": 2}
# Five references for a changed pair (raw form, as in LevirCCcaptions.json: leading space, " ." ending).
CHANGE_CAPTIONS: tuple[str, ...] = (
    " a house is built on the left side .",
    " two roads appear at the top-left of the scene .",
    " some trees are removed in the lower-right corner .",
    " a building, a road and a lawn are added above the river .",
    " many villas are constructed at the bottom .",
)
DUBAI_CHANGE_CAPTIONS: tuple[str, ...] = (
    "A road was built on the Left.",
    "New houses appear at the top.",
    "Some buildings were constructed.",
    "A roundabout has been built in the lower-left corner.",
    "The desert is replaced by villas.",
)


def _pair_images(rng: np.random.Generator, size: int, changed: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    before = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    after = before.copy()
    label = np.zeros((size, size), dtype=np.uint8)
    if changed:
        h = max(1, size // 4)
        after[:h, :h] = 255 - after[:h, :h]  # building appears top-left
        label[:h, :h] = 255
        after[-h:, -h:] = 0  # road appears bottom-right
        label[-h:, -h:] = 128
    return before, after, label


def levir_name(split: str, i: int) -> str:
    return f"{split}_{i + 1:06d}.png"


def make_levir(
    root: Path,
    fmt: str = "levir-cc",
    pairs: Mapping[str, int] = DEFAULT_PAIRS,
    size: int = 16,
    changeflag: bool = True,
    seed: int = 0,
) -> Path:
    """LEVIR-CC layout (``fmt="levir-mci"`` / ``"whu-cdc"`` add ``label/`` masks)."""
    rng = np.random.default_rng(seed)
    images = []
    imgid = 0
    for split, n in pairs.items():
        for i in range(n):
            name = levir_name(split, i)
            changed = i % 2 == 0
            raws = list(CHANGE_CAPTIONS) if changed else [f" {s} ." for s in NO_CHANGE_SENTENCES]
            entry: dict[str, object] = {
                "filepath": split,
                "filename": name,
                "imgid": imgid,
                "split": split,
                "sentids": list(range(imgid * 5, imgid * 5 + 5)),
                "sentences": [
                    {"tokens": r.split(), "raw": r, "imgid": imgid, "sentid": imgid * 5 + k} for k, r in enumerate(raws)
                ],
            }
            if changeflag:
                entry["changeflag"] = int(changed)
            images.append(entry)
            imgid += 1
            before, after, label = _pair_images(rng, size, changed)
            for side, arr in (("A", before), ("B", after)):
                d = root / "images" / split / side
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(d / name)
            if fmt in ("levir-mci", "whu-cdc"):
                d = root / "images" / split / "label"
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.repeat(label[..., None], 3, axis=2)).save(d / name)  # [H, W, 3] grey labels
    root.mkdir(parents=True, exist_ok=True)
    (root / "LevirCCcaptions.json").write_text(json.dumps({"images": images}))
    return root


DUBAI_SUBDIR = Path("DubaiCC500impair/datasetDubaiCCPublic")


def make_dubai(root: Path, pairs: Mapping[str, int] = DEFAULT_PAIRS, tile: int = 50, seed: int = 0) -> Path:
    """Dubai-CC source tree: ``description_jsontr_te_val/{Train,Validation,Test}_*.json`` + 50×50 ``.tif`` tiles."""
    rng = np.random.default_rng(seed)
    base = root / DUBAI_SUBDIR
    cap_dir = base / "description_jsontr_te_val"
    rgb = base / "imgs_tiles" / "RGB"
    for d in (cap_dir, rgb / "500_2000", rgb / "500_2010"):
        d.mkdir(parents=True, exist_ok=True)
    prefix = {"train": "Train", "val": "Validation", "test": "Test"}
    counter = 0
    for split, n in pairs.items():
        images = []
        for i in range(n):
            name = f"{counter + 1}.tif"
            counter += 1
            changed = i % 2 == 0
            raws = list(DUBAI_CHANGE_CAPTIONS) if changed else [s + "." for s in DUBAI_NO_CHANGE_SENTENCES[:5]]
            images.append({"filename": name, "sentences": [{"raw": r} for r in raws]})
            before, after, _ = _pair_images(rng, tile, changed)
            Image.fromarray(before).save(rgb / "500_2000" / name)
            Image.fromarray(after).save(rgb / "500_2010" / name)
        (cap_dir / f"{prefix[split]}_captions.json").write_text(json.dumps({"images": images}))
    return root


def make_tokens(
    root: Path,
    pairs: Mapping[str, int] = DEFAULT_PAIRS,
    with_images: bool = False,
    per_caption_lines: bool = True,
    size: int = 16,
    seed: int = 0,
    zipped: bool = False,
) -> Path:
    """Peers' preprocessed layout: ``{split}.txt``, ``tokens/<stem>.txt``, ``vocab.json``, optional images.

    ``per_caption_lines`` writes the train list as ``name.png-k`` lines (Chg2Cap / MaskApproxNet), ``zipped`` puts
    the token files in ``tokens.zip`` (as MaskApproxNet ships WHU-CDC).
    """
    import zipfile

    from changecap.data.text import tokenize
    from changecap.data.vocab import Vocabulary

    rng = np.random.default_rng(seed)
    tok_dir = root / "tokens"
    tok_dir.mkdir(parents=True, exist_ok=True)
    all_tokens: list[list[str]] = []
    for split, n in pairs.items():
        lines: list[str] = []
        for i in range(n):
            name = levir_name(split, i)
            changed = i % 2 == 0
            raws = list(CHANGE_CAPTIONS) if changed else list(NO_CHANGE_SENTENCES)
            toks = [["<START>", *tokenize(r), "<END>"] for r in raws]
            all_tokens += toks
            (tok_dir / f"{Path(name).stem}.txt").write_text(json.dumps(toks))
            if split == "train" and per_caption_lines:
                lines += [f"{name}-{k}" for k in range(len(toks))]
            else:
                lines.append(name)
            if with_images:
                before, after, _ = _pair_images(rng, size, changed)
                for side, arr in (("A", before), ("B", after)):
                    d = root / "images" / split / side
                    d.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(arr).save(d / name)
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    Vocabulary.build(all_tokens, threshold=0).save(root / "vocab.json")
    if zipped:
        with zipfile.ZipFile(root / "tokens.zip", "w") as zf:
            for p in sorted(tok_dir.iterdir()):
                zf.write(p, f"tokens/{p.name}")
        for p in tok_dir.iterdir():
            p.unlink()
        tok_dir.rmdir()
    return root


def make_levir_cd(root: Path, n: int = 3, size: int = 16, splits: Sequence[str] | None = None, seed: int = 0) -> Path:
    """A change-detection folder without captions (``levir-cd``): ``A/ B/ label/`` in the root, or per split.

    Even items change (label 255 where the after image differs), odd items do not.
    """
    rng = np.random.default_rng(seed)
    for split in splits or [None]:
        folder = root if split is None else root / split
        for sub in ("A", "B", "label"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            before, after, label = _pair_images(rng, size, changed=i % 2 == 0)
            name = f"{split or 'cd'}_{i:04d}.png"
            Image.fromarray(before).save(folder / "A" / name)
            Image.fromarray(after).save(folder / "B" / name)
            Image.fromarray(np.where(label > 0, 255, 0).astype(np.uint8)).save(folder / "label" / name)
    return root


def bomb_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A decompression bomb: a valid PNG header declaring ``width × height`` RGB pixels in a few hundred bytes (a
    few zero rows of data follow; a reader must refuse it from the header, before decoding)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    idat = zlib.compress(b"\0" * (1 + 3 * width) * 4, 9)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def save_with_orientation(arr: np.ndarray, path: Path, orientation: int, **save_args: object) -> Path:
    """Save ``arr`` as stored pixels with an EXIF orientation tag (6: a viewer turns it 90° clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, exif=exif.tobytes(), **save_args)
    return path


def class_map_png(path: Path, ids: np.ndarray, orientation: int = 1, palette: bool = False) -> Path:
    """A class-id map ``uint8 [H, W]`` saved as mode L, or as mode P (``palette``: indices ``ids`` under colours that
    differ from them), with an EXIF orientation tag unless 1."""
    img = Image.fromarray(np.ascontiguousarray(ids))
    if palette:
        img.putpalette([v for k in range(256) for v in ((k * 37) % 256, (k * 91) % 256, 255 - k)])  # L -> P
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, exif=exif.tobytes())
    return path


def make_second_cc(
    root: Path,
    pairs: Mapping[str, int] = DEFAULT_PAIRS,
    size: int = 16,
    changeflag: bool = True,
    grey_maps: bool = False,
    seed: int = 0,
) -> Path:
    """SECOND-CC layout: ``SECOND-CC-AUG.json`` + ``{split}/rgb/{A,B}/`` + ``{split}/sem/{A,B}/`` SECOND-coloured maps.

    Changed pairs (even index) turn the top-left quarter from low vegetation (class 3) into building (class 5) and
    the bottom-right quarter from ground (2) into water (1); the rest of both maps is white (0, unchanged).
    ``grey_maps`` writes the maps as single-band class ids instead of colours.
    """
    from changecap.data.semantic_maps import SECOND_PALETTE

    palette = np.array(SECOND_PALETTE, dtype=np.uint8)  # [7, 3]
    rng = np.random.default_rng(seed)
    images = []
    imgid = 0
    for split, n in pairs.items():
        for i in range(n):
            name = f"{imgid:05d}.png"
            changed = i % 2 == 0
            raws = list(CHANGE_CAPTIONS) if changed else [f" {s} ." for s in NO_CHANGE_SENTENCES]
            entry: dict[str, object] = {
                "filename": name,
                "imgid": imgid,
                "split": split,
                "sentences": [{"tokens": r.split(), "raw": r, "imgid": imgid} for r in raws],
            }
            if changeflag:
                entry["changeflag"] = int(changed)
            images.append(entry)
            imgid += 1
            before, after, _ = _pair_images(rng, size, changed)
            sem = np.zeros((2, size, size), dtype=np.uint8)  # [2, H, W] class ids
            if changed:
                h = max(1, size // 4)
                sem[0, :h, :h], sem[1, :h, :h] = 3, 5
                sem[0, -h:, -h:], sem[1, -h:, -h:] = 2, 1
            for k, side in enumerate(("A", "B")):
                for sub, arr in (("rgb", (before, after)[k]), ("sem", sem[k] if grey_maps else palette[sem[k]])):
                    d = root / split / sub / side
                    d.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(arr).save(d / name)
    root.mkdir(parents=True, exist_ok=True)
    (root / "SECOND-CC-AUG.json").write_text(json.dumps({"images": images}))
    return root
