from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from changecap.data.augment import flip_array, flip_caption
from changecap.data.collate import collate_pairs
from changecap.data.datasets import ChangeCaptionDataset, build_vocabulary, open_dataset
from changecap.data.image_io import NORMALIZATION
from changecap.data.text import CANONICAL_NO_CHANGE, DUBAI_CANONICAL_NO_CHANGE
from changecap.data.vocab import END_ID, NULL_ID, START_ID
from changecap.errors import ConfigError, DataError
from tests.data.fakes import make_dubai, make_levir, make_second_cc, make_tokens

PAIRS = {"train": 4, "val": 2, "test": 2}

MAKERS: dict[str, tuple[str, Callable[[Path], Path], int | None, bool]] = {
    # id: (format, maker, expected side, has mask)
    "levir-cc": ("levir-cc", lambda r: make_levir(r, "levir-cc", PAIRS, size=8), 8, False),
    "levir-mci": ("levir-mci", lambda r: make_levir(r, "levir-mci", PAIRS, size=8), 8, True),
    "whu-cdc": ("whu-cdc", lambda r: make_levir(r, "whu-cdc", PAIRS, size=8), 8, True),
    "whu-cdc-lists": ("whu-cdc", lambda r: make_tokens(r, PAIRS, with_images=True, size=8, zipped=True), 8, False),
    "dubai-cc": ("dubai-cc", lambda r: make_dubai(r, PAIRS, tile=50), 256, False),
    "tokens-images": ("tokens", lambda r: make_tokens(r, PAIRS, with_images=True, size=8), 8, False),
    "tokens-only": ("tokens", lambda r: make_tokens(r, PAIRS), None, False),
    "second-cc": ("second-cc", lambda r: make_second_cc(r, PAIRS, size=8), 8, True),
}


@pytest.mark.parametrize("key", list(MAKERS))
def test_sample_contract(key: str, tmp_path: Path) -> None:
    fmt, maker, side, has_mask = MAKERS[key]
    root = maker(tmp_path / "ds")
    vocab = build_vocabulary(root, fmt, "all", threshold=0)
    ds = open_dataset(root, fmt, "train", vocab=vocab)
    assert len(ds) == len(ds.records) == 4
    t = {"dubai-cc": 27, "second-cc": 52}.get(fmt, 41)
    for i in range(len(ds)):
        s = ds[i]
        if side is None:
            assert "image" not in s and not ds.has_images
        else:
            assert s["image"].shape == (2, 3, side, side) and s["image"].dtype == torch.float32
        assert s["tokens"].shape == (5, t) and s["tokens"].dtype == torch.long
        assert (s["tokens"][:, 0] == START_ID).all()
        assert s["target"].shape == (t,) and s["target"].dtype == torch.long
        assert any(torch.equal(s["target"], row) for row in s["tokens"])
        assert isinstance(s["changed"], bool) and s["changed"] == (i % 2 == 0)
        assert s["split"] == "train" and s["name"] == ds.records[i].name
        assert len(s["captions"]) == 5 and all(isinstance(c, str) for c in s["captions"])
        # every word is in the all-splits vocabulary → no <UNK>, and decoding gives back the caption
        assert [vocab.decode(row.tolist()) for row in s["tokens"]] == s["captions"]
        if has_mask:
            assert s["mask"].shape == (side, side) and s["mask"].dtype == torch.long
            assert set(s["mask"].unique().tolist()) <= {0, 1, 2}
        else:
            assert "mask" not in s


def test_mask_values_and_unnormalised_pixels(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", "levir-mci", PAIRS, size=8)
    ds = open_dataset(root, "levir-mci", "train", normalize="none")
    s = ds[0]  # changed pair: building (255 → 2) top-left 2×2, road (128 → 1) bottom-right 2×2
    expected = np.zeros((8, 8), np.int64)
    expected[:2, :2] = 2
    expected[-2:, -2:] = 1
    assert s["mask"].tolist() == expected.tolist()
    before = np.array(Image.open(root / "images/train/A/train_000001.png"))
    assert torch.allclose(s["image"][0], torch.from_numpy(before).permute(2, 0, 1).float() / 255)
    assert ds[1]["mask"].sum() == 0  # unchanged pair
    binary = open_dataset(root, "levir-mci", "train", normalize="none", binary_mask=True)
    assert binary[0]["mask"].max() == 1


def test_normalisation_choices(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", pairs=PAIRS, size=8)
    raw = open_dataset(root, "levir-cc", "train", normalize="none")[0]["image"]
    for norm, (mean, std) in [
        ("dataset", NORMALIZATION["levir-cc"]),
        ("clip", NORMALIZATION["clip"]),
        (((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))),
    ]:
        img = open_dataset(root, "levir-cc", "train", normalize=norm)[0]["image"]
        m = torch.tensor(mean).view(1, 3, 1, 1)
        sd = torch.tensor(std).view(1, 3, 1, 1)
        assert torch.allclose(img, (raw - m) / sd, atol=1e-5)
    with pytest.raises(ConfigError, match="normalize"):
        open_dataset(root, "levir-cc", "train", normalize="bogus")


def test_resizing_modes(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", "levir-mci", PAIRS, size=16)
    s = open_dataset(root, "levir-mci", "train", image_size=12)[0]
    assert s["image"].shape == (2, 3, 12, 12) and s["mask"].shape == (12, 12)
    c = open_dataset(root, "levir-mci", "train", image_size=6, resize_mode="clip")[0]
    assert c["image"].shape == (2, 3, 6, 6) and c["mask"].shape == (6, 6)
    with pytest.raises(ConfigError, match="image_size"):
        open_dataset(root, "levir-mci", "train", resize_mode="clip")


def test_dubai_conventions(tmp_path: Path) -> None:
    root = make_dubai(tmp_path / "ds", PAIRS, tile=50)
    ds = open_dataset(root, "dubai-cc", "val", image_size=64)
    assert ds[0]["image"].shape == (2, 3, 64, 64) and ds.max_length == 27
    assert ds.records[0].captions[0] == "A road was built on the Left"  # case preserved, '.' removed
    assert ds.vocab.id("Nothing") != 1 and ds.vocab.id("Left") != 1  # threshold 0: every train word kept
    before, after = ds.load_pair(0)
    assert before.shape == after.shape == (50, 50, 3) and before.dtype == np.uint8
    canon = open_dataset(root, "dubai-cc", "train", canonicalize_no_change=True, image_size=8)
    assert canon[1]["captions"] == [DUBAI_CANONICAL_NO_CHANGE] * 5


def test_sampling_all_versus_random(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", pairs=PAIRS, size=8)
    rand = open_dataset(root, "levir-cc", "train")
    per_caption = open_dataset(root, "levir-cc", "train", sampling="all")
    assert len(rand) == 4 and len(per_caption) == 20
    for i in range(len(per_caption)):
        s = per_caption[i]
        pair, k = divmod(i, 5)
        assert per_caption.pair_index(i) == pair and s["name"] == rand.records[pair].name
        assert torch.equal(s["target"], s["tokens"][k])


def test_randomness_is_a_function_of_seed_epoch_index(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", pairs=PAIRS, size=8)
    a = open_dataset(root, "levir-cc", "train", augment=True, seed=3)
    b = open_dataset(root, "levir-cc", "train", augment=True, seed=3)

    def draws(ds: ChangeCaptionDataset, epoch: int) -> list[tuple[list[int], list[str]]]:
        ds.set_epoch(epoch)
        return [(ds[i]["target"].tolist(), ds[i]["captions"]) for i in range(len(ds))]

    first = [draws(a, e) for e in range(6)]
    # a fresh object (e.g. a resumed run) reproduces every epoch, in any order
    assert [draws(b, e) for e in reversed(range(6))] == list(reversed(first))
    assert draws(a, 2) == first[2]
    assert len({str(d) for d in first}) > 1  # epochs differ
    c = open_dataset(root, "levir-cc", "train", augment=True, seed=4)
    assert [draws(c, e) for e in range(6)] != first
    with pytest.raises(ValueError):
        a.set_epoch(-1)


def test_canonicalize_no_change(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", pairs=PAIRS, size=8)
    plain = open_dataset(root, "levir-cc", "train")
    canon = open_dataset(root, "levir-cc", "train", canonicalize_no_change=True, vocab=plain.vocab)
    assert canon[1]["captions"] == [CANONICAL_NO_CHANGE] * 5  # unchanged pair
    assert (canon[1]["tokens"] == canon[1]["tokens"][0]).all()
    assert canon[0]["captions"] == plain[0]["captions"]  # changed pair untouched
    assert len(set(plain[1]["captions"])) == 5


def test_augmentation_flips_images_mask_and_words_consistently(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", "levir-mci", PAIRS, size=8)
    plain = open_dataset(root, "levir-mci", "train", normalize="none")
    aug = open_dataset(root, "levir-mci", "train", normalize="none", augment=True)
    seen: set[tuple[bool, bool]] = set()
    for epoch in range(8):
        aug.set_epoch(epoch)
        plain.set_epoch(epoch)
        s, p = aug[0], plain[0]
        assert torch.equal(s["target"].ne(NULL_ID), p["target"].ne(NULL_ID))  # same reference drawn
        img = p["image"].numpy().transpose(0, 2, 3, 1)  # [2, H, W, C]
        match = [
            (h, v)
            for h in (False, True)
            for v in (False, True)
            if np.array_equal(s["image"].numpy().transpose(0, 2, 3, 1)[0], flip_array(img[0], h, v))
        ]
        assert len(match) == 1
        h, v = match[0]
        seen.add((h, v))
        assert np.array_equal(s["image"].numpy().transpose(0, 2, 3, 1)[1], flip_array(img[1], h, v))
        assert np.array_equal(s["mask"].numpy(), flip_array(p["mask"].numpy(), h, v))
        assert s["captions"] == [flip_caption(c, h, v) for c in p["captions"]]
        assert [aug.vocab.decode(r.tolist()) for r in s["tokens"]] == [
            " ".join(w if w in aug.vocab else "<UNK>" for w in c.split()) for c in s["captions"]
        ]
    assert len(seen) >= 3  # several flip combinations occur across epochs


def test_vocab_defaults_to_train_split(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", pairs={"train": 12, "val": 2, "test": 2}, size=8)
    ds = open_dataset(root, "levir-cc", "test")
    assert ds.vocab == build_vocabulary(root, "levir-cc", "train", threshold=5, rule="gt")
    assert "house" in ds.vocab  # 6 changed train pairs → "house" counted 6 times (> 5)


def test_lower_option(tmp_path: Path) -> None:
    root = make_dubai(tmp_path / "ds", PAIRS, tile=8)
    ds = open_dataset(root, "dubai-cc", "train", lower=True, image_size=8)
    assert ds[0]["captions"][0] == "a road was built on the left"
    assert "Left" not in ds.vocab and "left" in ds.vocab


def test_size_mismatch_and_caption_only_errors(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", pairs=PAIRS, size=8)
    Image.fromarray(np.zeros((8, 6, 3), np.uint8)).save(root / "images/train/B/train_000002.png")
    ds = open_dataset(root, "levir-cc", "train")
    ds[0]
    with pytest.raises(DataError) as info:
        ds[1]
    assert "B/train_000002.png" in str(info.value) and "A/train_000002.png" in str(info.value)
    tok = open_dataset(make_tokens(tmp_path / "tok", PAIRS), "tokens", "val")
    with pytest.raises(DataError, match="no images"):
        tok.load_pair(0)


def test_argument_validation(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", pairs=PAIRS, size=8)
    for kwargs, field in [
        ({"sampling": "each"}, "sampling"),
        ({"resize_mode": "crop"}, "resize_mode"),
        ({"max_length": 1}, "max_length"),
        ({"seed": -1}, "seed"),
    ]:
        with pytest.raises(ConfigError, match=field):
            open_dataset(root, "levir-cc", "train", **kwargs)
    with pytest.raises(ConfigError, match="split"):
        open_dataset(root, "levir-cc", "training")
    with pytest.raises(ConfigError, match="format"):
        open_dataset(root, "levir", "train")
    with pytest.raises(IndexError):
        open_dataset(root, "levir-cc", "train")[4]


def test_dataloader_batches(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", "levir-mci", PAIRS, size=8)
    ds = open_dataset(root, "levir-mci", "train", sampling="all")
    batch = next(iter(DataLoader(ds, batch_size=6, collate_fn=collate_pairs)))
    assert batch["image"].shape == (6, 2, 3, 8, 8)
    assert batch["tokens"].shape == (6, 5, 41) and batch["mask"].shape == (6, 8, 8)
    assert (batch["target"].eq(END_ID).sum(dim=1) == 1).all()


def test_second_cc_mask_and_semantic_maps(tmp_path: Path) -> None:
    root = make_second_cc(tmp_path / "ds", PAIRS, size=8)
    plain = open_dataset(root, "second-cc", "train", normalize="none")
    assert "semantic" not in plain[0]
    ds = open_dataset(root, "second-cc", "train", normalize="none", semantic_maps=True)
    s = ds[0]  # changed: top-left 3 -> 5, bottom-right 2 -> 1
    assert s["semantic"].shape == (2, 8, 8) and s["semantic"].dtype == torch.long
    assert s["semantic"][:, 0, 0].tolist() == [3, 5] and s["semantic"][:, -1, -1].tolist() == [2, 1]
    assert s["semantic"][:, 4, 4].tolist() == [0, 0]
    assert torch.equal(s["mask"], (s["semantic"][0] != s["semantic"][1]).long())  # change = the maps differ
    assert ds[1]["mask"].sum() == 0 and ds[1]["semantic"].sum() == 0
    big = open_dataset(root, "second-cc", "train", image_size=16, semantic_maps=True)[0]
    assert big["semantic"].shape == (2, 16, 16) and set(big["semantic"].unique().tolist()) == {0, 1, 2, 3, 5}
    batch = collate_pairs([ds[0], ds[1]])
    assert batch["semantic"].shape == (2, 2, 8, 8) and batch["mask"].shape == (2, 8, 8)


def _flip(x: torch.Tensor, h: bool, v: bool) -> torch.Tensor:
    dims = [d for d, on in ((-1, h), (-2, v)) if on]
    return x.flip(dims) if dims else x


def test_semantic_maps_flip_with_the_images(tmp_path: Path) -> None:
    root = make_second_cc(tmp_path / "ds", PAIRS, size=8)
    plain = open_dataset(root, "second-cc", "train", normalize="none", semantic_maps=True)
    aug = open_dataset(root, "second-cc", "train", normalize="none", semantic_maps=True, augment=True)
    flipped = 0
    for epoch in range(6):
        aug.set_epoch(epoch)
        a, p = aug[0], plain[0]
        flips = [(h, v) for h in (False, True) for v in (False, True)]
        h, v = next(f for f in flips if torch.equal(a["image"], _flip(p["image"], *f)))  # the flips drawn
        expected = torch.from_numpy(np.stack([flip_array(m.numpy(), h, v) for m in p["semantic"]]))
        assert torch.equal(a["semantic"], expected)
        assert torch.equal(a["mask"], (a["semantic"][0] != a["semantic"][1]).long())
        flipped += h or v
    assert flipped  # some epoch flipped


def test_semantic_maps_need_a_format_that_has_them(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", "levir-mci", PAIRS, size=8)
    with pytest.raises(ConfigError, match="semantic_maps"):
        open_dataset(root, "levir-mci", "train", semantic_maps=True)
