"""Single-date pretraining data: the SynthCC and folder sources, the datasets, and the train-only rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from changecap.data import pretrain_data
from changecap.data.pretrain_data import (
    CaptionDocumentDataset,
    CaptionTextDataset,
    SingleDateDataset,
    caption_texts,
    check_train_split,
    collate_single_dates,
    held_out_groups,
    read_class_map,
    read_pair_captions,
    read_pretrain_corpus,
    resolve_mean_std,
)
from changecap.errors import ConfigError, DataError
from tests.data.fakes import bomb_png, class_map_png
from tests.data.single_date_fakes import (
    CLASSES,
    make_caption_folder,
    make_segmentation_folder,
    make_synthcc_single_dates,
)

HELD_OUT = ("/val/", "/test/")


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_synthcc_root_gives_both_dates_of_every_train_pair(tmp_path: Path) -> None:
    root = make_synthcc_single_dates(tmp_path)
    corpus = read_pretrain_corpus(root)
    assert corpus.source == "synthcc" and corpus.landcover_classes == list(CLASSES)
    assert len(corpus.records) == 12  # 6 train pairs × 2 dates
    assert {r.split for r in corpus.records} == {"train"}
    assert all(not any(h in str(r.image_path) for h in HELD_OUT) for r in corpus.records)
    first = corpus.records[0]
    assert first.image_path == root / "images" / "train" / "A" / "train_000001.png"
    assert first.landcover_path == root / "images" / "train" / "landcover" / "A" / "train_000001.png"
    assert first.name == "A/train_000001.png" and first.group == "train_000001.png"
    assert corpus.records[1].group == first.group  # the pair's other date: one hold-out group
    assert len(first.captions) == 3 and corpus.has_captions and corpus.has_landcover


def test_synthcc_without_maps_has_no_landcover(tmp_path: Path) -> None:
    corpus = read_pretrain_corpus(make_synthcc_single_dates(tmp_path, maps=False))
    assert corpus.landcover_classes is None and not corpus.has_landcover and corpus.has_captions


def test_no_val_or_test_file_is_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_synthcc_single_dates(tmp_path)
    opened: list[str] = []
    real_rgb, real_map = pretrain_data.read_rgb, pretrain_data.read_class_map

    def rgb(path: Path) -> np.ndarray:
        opened.append(str(path))
        return real_rgb(path)

    def class_map(path: Path, n: int | None) -> np.ndarray:
        opened.append(str(path))
        return real_map(path, n)

    monkeypatch.setattr(pretrain_data, "read_rgb", rgb)
    monkeypatch.setattr(pretrain_data, "read_class_map", class_map)
    corpus = read_pretrain_corpus(root)
    ds = SingleDateDataset(corpus.records, 8, *resolve_mean_std("clip"), num_classes=len(CLASSES))
    for i in range(len(ds)):
        ds[i]
    assert len(opened) == 24  # every train image and map once
    assert not [p for p in opened if any(h in p for h in HELD_OUT)]


def test_other_splits_are_skipped_before_their_sentences_are_read(tmp_path: Path) -> None:
    root = make_synthcc_single_dates(tmp_path)
    data = json.loads((root / "scene_captions.json").read_text())
    for entry in data["images"]:
        if entry["split"] != "train":
            entry["sentences"] = None  # malformed, but never looked at
    (root / "scene_captions.json").write_text(json.dumps(data))
    assert len(read_pretrain_corpus(root).records) == 12


def test_pair_captions_are_train_only(tmp_path: Path) -> None:
    root = make_synthcc_single_dates(tmp_path)
    pairs = read_pair_captions(root)
    assert len(pairs) == 6 * 4 and all(name.startswith("train_") for name, _ in pairs)
    assert read_pair_captions(tmp_path / "nowhere") == []
    with pytest.raises(ConfigError, match="train split only"):
        read_pair_captions(root, "test")


@pytest.mark.parametrize("split", ["val", "test", "all"])
def test_other_splits_are_refused_in_one_line(split: str) -> None:
    with pytest.raises(ConfigError, match=r"data.split.*train split only") as e:
        check_train_split(split)
    _one_line(e)


@pytest.mark.parametrize("sub", ["images/val", "images/test", "images/test/A"])
def test_a_held_out_folder_of_a_dataset_is_refused(tmp_path: Path, sub: str) -> None:
    root = make_synthcc_single_dates(tmp_path)
    with pytest.raises(ConfigError, match="data.root.*train split only") as e:
        read_pretrain_corpus(root / sub)
    _one_line(e)


def test_a_test_folder_beside_a_train_folder_is_refused_but_a_folder_named_test_elsewhere_is_not(
    tmp_path: Path,
) -> None:
    make_caption_folder(tmp_path / "mine" / "train")
    make_caption_folder(tmp_path / "mine" / "test")
    with pytest.raises(ConfigError, match="'test' split folder"):
        read_pretrain_corpus(tmp_path / "mine" / "test")
    assert len(read_pretrain_corpus(tmp_path / "mine" / "train").records) == 6
    make_caption_folder(tmp_path / "test" / "tiles")  # a user's folder that happens to be called test
    assert len(read_pretrain_corpus(tmp_path / "test" / "tiles").records) == 6


def test_captions_file_entries_inside_held_out_folders_are_refused(tmp_path: Path) -> None:
    root = make_caption_folder(tmp_path)
    with open(root / "captions.csv", "a", encoding="utf-8") as f:
        f.write("val/tile_009.png,a house\n")
    with pytest.raises(DataError, match=r"captions.csv \[line 20\].*'val' folder") as e:
        read_pretrain_corpus(root)
    _one_line(e)


@pytest.mark.parametrize("jsonl", [False, True])
def test_caption_folder_csv_and_jsonl(tmp_path: Path, jsonl: bool) -> None:
    corpus = read_pretrain_corpus(make_caption_folder(tmp_path, jsonl=jsonl))
    assert corpus.source == "folder" and len(corpus.records) == 6
    assert all(len(r.captions) == 3 and r.landcover_path is None for r in corpus.records)
    assert corpus.records[0].image_path == tmp_path / "images" / "tile_000.png"
    assert corpus.has_captions and not corpus.has_landcover


def test_csv_rows_are_grouped_per_image_and_unquoted_commas_kept(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / name)
    (tmp_path / "captions.csv").write_text("a.png,a road\nb.png,a lake, a house\na.png,  two   roads \n")
    corpus = read_pretrain_corpus(tmp_path)
    assert [(r.name, r.captions) for r in corpus.records] == [
        ("a.png", ("a road", "two roads")),
        ("b.png", ("a lake, a house",)),
    ]


def test_segmentation_folder(tmp_path: Path) -> None:
    corpus = read_pretrain_corpus(make_segmentation_folder(tmp_path))
    assert corpus.landcover_classes == list(CLASSES) and corpus.has_landcover and not corpus.has_captions
    ds = SingleDateDataset(corpus.records, 8, *resolve_mean_std("none"), num_classes=len(CLASSES))
    sample = ds[0]
    assert sample["landcover"].dtype == torch.long and sample["landcover"].shape == (8, 8)
    assert sample["caption"] == "" and sample["captions"] == []
    assert int(sample["landcover"].max()) < len(CLASSES)


def test_map_values_must_be_known_classes_or_unlabelled(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    Image.fromarray(np.array([[0, 3], [255, 1]], np.uint8), mode="L").save(path)
    assert read_class_map(path, 4).tolist() == [[0, 3], [255, 1]]
    with pytest.raises(DataError, match="class id 3 is not below the 3 classes") as e:
        read_class_map(path, 3)
    _one_line(e)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path)
    with pytest.raises(DataError, match="mode RGB"):
        read_class_map(path, 3)


@pytest.mark.parametrize("palette", [False, True])
def test_class_maps_keep_their_ids_turn_with_exif_and_respect_the_pixel_bound(tmp_path: Path, palette: bool) -> None:
    ids = np.array([[0, 1, 2], [3, 255, 0]], np.uint8)  # [2, 3]
    path = class_map_png(tmp_path / "m.png", ids, orientation=6, palette=palette)
    np.testing.assert_array_equal(read_class_map(path, 4), np.rot90(ids, -1))  # indices, never palette colours
    with pytest.raises(DataError, match=r"bomb\.png: image is 30000×30000 pixels .* above the limit") as e:
        read_class_map(bomb_png(tmp_path / "bomb.png"), 4)
    _one_line(e)


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda root: (root / "captions.csv").unlink(), "no captions .* and no segmentation maps"),
        (lambda root: (root / "captions.jsonl").write_text("{}\n"), "both captions.csv and captions.jsonl"),
        (lambda root: (root / "captions.csv").write_text("tile_000.png,\n"), r"\[line 1\]: empty caption"),
        (lambda root: (root / "captions.csv").write_text("../x.png,a road\n"), "relative path"),
        (lambda root: (root / "captions.csv").write_text("missing.png,a road\n"), "missing.png: image file not found"),
        (lambda root: (root / "maps").mkdir(), "class names in classes.txt or classes.json"),
    ],
)
def test_folder_errors_are_one_line(tmp_path: Path, setup, match: str) -> None:  # noqa: ANN001
    root = make_caption_folder(tmp_path)
    setup(root)
    with pytest.raises(DataError, match=match) as e:
        read_pretrain_corpus(root)
    _one_line(e)


def test_synthcc_errors_are_one_line(tmp_path: Path) -> None:
    root = make_synthcc_single_dates(tmp_path)
    (root / "images" / "train" / "B" / "train_000002.png").unlink()
    with pytest.raises(DataError, match=r"B/train_000002.png: image file not found") as e:
        read_pretrain_corpus(root)
    _one_line(e)
    doc = json.loads((root / "scene_captions.json").read_text())
    (root / "scene_captions.json").write_text(json.dumps({**doc, "images": [{"filename": "x.png", "split": "train",
                                                                             "date": "C", "sentences": ["a"]}]}))
    with pytest.raises(DataError, match=r"scene_captions.json \[images\[0\].date\]"):
        read_pretrain_corpus(root)
    (root / "scene_captions.json").write_text(json.dumps({**doc, "format": "other"}))
    with pytest.raises(DataError, match=r"scene_captions.json \[format\]"):
        read_pretrain_corpus(root)
    with pytest.raises(ConfigError, match="data.source"):
        read_pretrain_corpus(root, source="levir-cc")


def test_caption_draw_is_a_function_of_seed_epoch_and_index(tmp_path: Path) -> None:
    corpus = read_pretrain_corpus(make_synthcc_single_dates(tmp_path))
    ds = SingleDateDataset(corpus.records, 8, *resolve_mean_std("clip"), seed=3)

    def draws(epoch: int) -> list[str]:
        ds.set_epoch(epoch)
        return [ds[i]["caption"] for i in range(len(ds))]

    first = draws(0)
    assert draws(0) == first  # repeatable (also from the image cache)
    assert any(draws(e) != first for e in range(1, 4))  # a new draw per epoch
    assert all(c in r.captions for c, r in zip(first, corpus.records))
    sample = ds[0]
    assert sample["image"].shape == (3, 8, 8) and sample["image"].dtype == torch.float32


def test_clip_resize_mode_crops_images_and_maps_alike(tmp_path: Path) -> None:
    img, lc = tmp_path / "i.png", tmp_path / "m.png"
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(img)
    Image.fromarray(np.tile(np.arange(16, dtype=np.uint8) // 4, (8, 1)), mode="L").save(lc)
    rec = pretrain_data.PretrainRecord(img, "train", ("x",), lc, "i.png", "i.png")
    sample = SingleDateDataset([rec], 4, *resolve_mean_std("none"), resize_mode="clip")[0]
    assert sample["image"].shape == (3, 4, 4)
    assert sample["landcover"][0].tolist() == [1, 1, 2, 2]  # the centred half of classes 0..3


def test_held_out_groups_are_seeded_and_keep_pairs_together(tmp_path: Path) -> None:
    corpus = read_pretrain_corpus(make_synthcc_single_dates(tmp_path))
    groups = [r.group for r in corpus.records]
    held = held_out_groups(groups, 0.34, seed=0)
    assert len(held) == 2 and held == held_out_groups(reversed(groups), 0.34, seed=0)
    assert held_out_groups(groups, 0.0, seed=0) == set()
    assert len(held_out_groups(groups, 0.99, seed=0)) == 5  # never every group
    texts = caption_texts(corpus.records, read_pair_captions(corpus.root))
    assert len(texts) == 12 * 3 + 24
    ds = CaptionTextDataset(texts)
    assert ds[0] == {"text": corpus.records[0].captions[0], "name": "train_000001.png"}


def test_documents_hold_every_caption_of_one_image_or_pair_in_a_seeded_order(tmp_path: Path) -> None:
    corpus = read_pretrain_corpus(make_synthcc_single_dates(tmp_path))
    texts = caption_texts(corpus.records, read_pair_captions(corpus.root))
    docs = CaptionDocumentDataset(texts, seed=3)
    assert len(docs) == 12 + 6  # 12 single dates, 6 pairs with change captions
    first = docs[0]
    assert first["name"] == "train_000001.png"
    assert sorted(first["texts"]) == sorted(corpus.records[0].captions)
    assert docs[0] == CaptionDocumentDataset(texts, seed=3)[0]  # a pure function of (seed, epoch, index)
    orders = set()
    for epoch in range(6):
        docs.set_epoch(epoch)
        orders.add(tuple(docs[0]["texts"]))
    assert len(orders) > 1  # reshuffled per epoch
    pair_docs = [docs[i] for i in range(len(docs)) if len(docs[i]["texts"]) == 4]
    assert pair_docs and all(d["name"].startswith("train_") for d in pair_docs)


def test_collate_stacks_tensors_and_lists_the_rest(tmp_path: Path) -> None:
    corpus = read_pretrain_corpus(make_synthcc_single_dates(tmp_path))
    ds = SingleDateDataset(corpus.records, 8, *resolve_mean_std("clip"), num_classes=len(CLASSES))
    batch = collate_single_dates([ds[0], ds[1], ds[2]])
    assert batch["image"].shape == (3, 3, 8, 8) and batch["landcover"].shape == (3, 8, 8)
    assert len(batch["caption"]) == 3 and len(batch["captions"][0]) == 3 and batch["name"][1] == "B/train_000001.png"
    text = collate_single_dates([{"text": "a", "name": "x"}, {"text": "b", "name": "y"}])
    assert text == {"text": ["a", "b"], "name": ["x", "y"]}


def test_normalisation_names_and_values() -> None:
    assert resolve_mean_std("none") == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert resolve_mean_std([[0.5, 0.5, 0.5], [0.2, 0.2, 0.2]]) == ((0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ConfigError, match="data.normalize"):
        resolve_mean_std("dataset")
