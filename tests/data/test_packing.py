"""``changecap data pack`` (``data/packing.py``) and reading a pack (``data/packed.py``): the samples of a packed
dataset equal those of the image files (resize, masks, flips and normalisation included), a pack that does not fit
the dataset is refused in one line, and a pack is written atomically."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from changecap.data.collate import collate_pairs
from changecap.data.datasets import ChangeCaptionDataset
from changecap.data.packed import PACK_FILE, PackedSplit
from changecap.data.packing import write_pack
from changecap.errors import ChangeCapError, ConfigError, DataError
from tests.data.fakes import make_dubai, make_levir, make_tokens


@pytest.fixture(scope="module")
def mci(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_levir(tmp_path_factory.mktemp("mci") / "ds", "levir-mci", {"train": 4, "val": 2, "test": 2}, 24)


def assert_same_samples(a: ChangeCaptionDataset, b: ChangeCaptionDataset, epochs: tuple[int, ...] = (0, 1)) -> None:
    assert len(a) == len(b) > 0
    for epoch in epochs:
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for i in range(len(a)):
            x, y = a[i], b[i]
            assert x.keys() == y.keys()
            for key in x:
                if isinstance(x[key], torch.Tensor):
                    assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), (i, key)
                else:
                    assert x[key] == y[key], (i, key)


@pytest.mark.parametrize(
    ("pack", "read"),
    [
        ({}, {"image_size": 16, "resize_mode": "resize"}),  # native pack: the dataset resizes, as from files
        ({}, {"image_size": 20, "resize_mode": "clip", "binary_mask": True}),
        ({}, {"image_size": None}),  # native size read as it is
        ({"size": 16}, {"image_size": 16, "resize_mode": "resize"}),  # stored already resized
        ({"size": 20, "resize_mode": "clip"}, {"image_size": 20, "resize_mode": "clip", "binary_mask": True}),
    ],
)
def test_packed_samples_equal_the_image_files(mci: Path, tmp_path: Path, pack: dict, read: dict) -> None:
    summary = write_pack(mci, "levir-mci", tmp_path / "pack", progress=False, **pack)
    assert summary.pairs == {"train": 4, "val": 2, "test": 2}
    common: dict[str, Any] = {"normalize": "clip", "augment": True, "sampling": "all", "seed": 3, **read}
    for split in ("train", "test"):
        files = ChangeCaptionDataset(mci, "levir-mci", split, **common)
        packed = ChangeCaptionDataset(mci, "levir-mci", split, vocab=files.vocab, packed=tmp_path / "pack", **common)
        assert packed.pack is not None and "mask" in packed[0]
        assert_same_samples(files, packed)


def test_dubai_tiles_are_upsampled_from_a_native_pack(tmp_path: Path) -> None:
    root = make_dubai(tmp_path / "dubai", {"train": 2, "val": 1, "test": 1}, tile=8)
    write_pack(root, "dubai-cc", tmp_path / "pack", splits=["train"], progress=False)
    files = ChangeCaptionDataset(root, "dubai-cc", "train", canonicalize_no_change=True)
    packed = ChangeCaptionDataset(root, "dubai-cc", "train", vocab=files.vocab, canonicalize_no_change=True,
                                  packed=tmp_path / "pack")  # fmt: skip
    assert files[0]["image"].shape == (2, 3, 256, 256)  # Dubai-CC's default size, bilinear
    assert_same_samples(files, packed, epochs=(0,))
    with pytest.raises(DataError, match=r"pack\.json \[splits\]: the pack holds no val split \(it has train\)"):
        ChangeCaptionDataset(root, "dubai-cc", "val", vocab=files.vocab, packed=tmp_path / "pack")


def test_the_image_files_are_not_needed_and_workers_map_the_pack_themselves(mci: Path, tmp_path: Path) -> None:
    import shutil

    from torch.utils.data import DataLoader

    root = tmp_path / "ds"
    shutil.copytree(mci, root)
    write_pack(root, "levir-mci", tmp_path / "pack", size=16, progress=False)
    files = ChangeCaptionDataset(root, "levir-mci", "train", image_size=16)
    expected = collate_pairs([files[i] for i in range(len(files))])
    shutil.rmtree(root / "images")  # only the captions file stays
    packed = ChangeCaptionDataset(root, "levir-mci", "train", vocab=files.vocab, image_size=16,
                                  packed=tmp_path / "pack")  # fmt: skip
    packed[0]  # maps the arrays in this process
    assert len(pickle.dumps(packed)) < 20_000  # a worker receives no pixels, it maps the file itself
    loader = DataLoader(packed, batch_size=len(packed), num_workers=1, collate_fn=collate_pairs)
    (batch,) = list(loader)
    assert torch.equal(batch["image"], expected["image"]) and torch.equal(batch["mask"], expected["mask"])


def test_pack_layout_and_records(mci: Path, tmp_path: Path) -> None:
    write_pack(mci, "levir-mci", tmp_path / "pack", size=16, splits=["val"], progress=False)
    meta = json.loads((tmp_path / "pack" / PACK_FILE).read_text())
    assert (meta["version"], meta["format"], meta["size"], meta["resize_mode"]) == (1, "levir-mci", 16, "resize")
    entry = meta["splits"]["val"]
    assert (entry["pairs"], entry["height"], entry["width"], entry["masks"]) == (2, 16, 16, True)
    assert [r["name"] for r in entry["records"]] == ["val_000001.png", "val_000002.png"]
    assert entry["records"][0]["changed"] is True and len(entry["records"][0]["captions"]) == 5
    images = np.load(tmp_path / "pack" / "val_images.npy", mmap_mode="r")
    masks = np.load(tmp_path / "pack" / "val_masks.npy", mmap_mode="r")
    assert images.dtype == np.uint8 and images.shape == (2, 2, 16, 16, 3) and masks.shape == (2, 16, 16)
    assert set(np.unique(masks)) <= {0, 1, 2}
    assert sorted(p.name for p in (tmp_path / "pack").iterdir()) == ["pack.json", "val_images.npy", "val_masks.npy"]


def test_a_pack_that_does_not_fit_the_dataset_is_refused(mci: Path, tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    write_pack(mci, "levir-mci", pack, size=16, progress=False)
    with pytest.raises(DataError, match=r"\[size\]: holds images fitted to 16 px \(resize\) but the dataset reads 20"):
        ChangeCaptionDataset(mci, "levir-mci", "train", image_size=20, packed=pack)
    with pytest.raises(DataError, match=r"\[size\]: .* reads 16 px \(clip\)"):
        ChangeCaptionDataset(mci, "levir-mci", "train", image_size=16, resize_mode="clip", packed=pack)
    with pytest.raises(DataError, match=r"\[format\]: was packed from a levir-mci dataset, not levir-cc"):
        ChangeCaptionDataset(mci, "levir-cc", "train", image_size=16, packed=pack)
    other = make_levir(tmp_path / "other", "levir-mci", {"train": 5, "val": 2, "test": 2}, 24)
    with pytest.raises(DataError, match=r"\[splits\.train\]: does not match .* 'train_000005\.png' .* is not in it"):
        ChangeCaptionDataset(other, "levir-mci", "train", image_size=16, packed=pack)
    with pytest.raises(DataError, match="packed dataset folder not found"):
        ChangeCaptionDataset(mci, "levir-mci", "train", image_size=16, packed=tmp_path / "missing")
    (pack / "train_images.npy").write_bytes(b"not an array")
    with pytest.raises(DataError, match=r"train_images\.npy: cannot read the packed array"):
        ChangeCaptionDataset(mci, "levir-mci", "train", image_size=16, packed=pack)
    np.save(pack / "train_images.npy", np.zeros((4, 2, 16, 16), dtype=np.uint8))
    with pytest.raises(DataError, match=r"holds uint8 \[4, 2, 16, 16\], not uint8 \[4, 2, '\*', '\*', 3\]"):
        PackedSplit(pack, "train")
    (pack / PACK_FILE).write_text("{")
    with pytest.raises(DataError, match=r"pack\.json: cannot read the pack description"):
        PackedSplit(pack, "train")


def test_bad_pack_inputs_are_one_line_errors(mci: Path, tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], type[ChangeCapError], str]] = [
        ({"size": 0}, ConfigError, "'--size': must be a positive number of pixels, got 0"),
        ({"resize_mode": "crop"}, ConfigError, "'--resize-mode': expected 'resize' or 'clip'"),
        ({"splits": ["dev"]}, ConfigError, "'--splits': unknown split 'dev'"),
    ]
    for kwargs, kind, words in cases:
        with pytest.raises(kind) as info:
            write_pack(mci, "levir-mci", tmp_path / "out", progress=False, **kwargs)
        assert words in str(info.value) and "\n" not in str(info.value)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"busy \[--out\]: holds files and is not a pack"):
        write_pack(mci, "levir-mci", busy, progress=False)
    assert (busy / "notes.txt").read_text() == "mine"
    tokens = make_tokens(tmp_path / "tok", with_images=False)
    with pytest.raises(DataError, match="has no images to pack"):
        write_pack(tokens, "tokens", tmp_path / "out", progress=False)
    mixed = make_levir(tmp_path / "mixed", "levir-cc", {"train": 2, "val": 1, "test": 1}, 16)
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(mixed / "images/train/A/train_000002.png")
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(mixed / "images/train/B/train_000002.png")
    with pytest.raises(DataError, match=r"train_000002\.png \[--size\]: is 20×20 px but the train split's first image"):
        write_pack(mixed, "levir-cc", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    write_pack(mixed, "levir-cc", tmp_path / "out", size=16, progress=False)  # a size makes them one


def test_a_failed_pack_leaves_the_earlier_pack_in_place(mci: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(mci, root)
    pack = tmp_path / "pack"
    write_pack(root, "levir-mci", pack, size=16, progress=False)
    before = (pack / "train_images.npy").read_bytes()
    (root / "images/test/B/test_000002.png").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"test_000002\.png"):
        write_pack(root, "levir-mci", pack, size=16, progress=False)
    assert (pack / "train_images.npy").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "pack"]  # no temporary folder left
    (root / "images/test/B/test_000002.png").unlink()
    shutil.copy(mci / "images/test/B/test_000002.png", root / "images/test/B/test_000002.png")
    write_pack(root, "levir-mci", pack, resize_mode="clip", progress=False)  # an earlier pack is replaced
    meta = json.loads((pack / PACK_FILE).read_text())
    assert meta["size"] is None and meta["resize_mode"] is None  # native size: no geometry stored
