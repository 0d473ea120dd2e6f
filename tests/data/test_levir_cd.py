"""The ``levir-cd`` format (change-detection folders without captions) and mixing it into a training set."""

from __future__ import annotations

from pathlib import Path

import pytest

from changecap.data.annotations import parse_annotations
from changecap.data.datasets import MixedDataset, open_dataset
from changecap.data.vocab import Vocabulary
from changecap.errors import DataError
from tests.conftest import require_shared
from tests.data.fakes import make_levir, make_levir_cd

VOCAB = Vocabulary.build([["a", "house"]], threshold=0)


def test_flat_and_split_layouts(tmp_path: Path) -> None:
    flat = parse_annotations(make_levir_cd(tmp_path / "flat", 3), "levir-cd")
    assert [r.split for r in flat] == ["train"] * 3 and [r.changed for r in flat] == [True, False, True]
    assert all(r.captions == [] and r.mask_path is not None for r in flat)
    split = make_levir_cd(tmp_path / "split", 2, splits=["train", "test"])
    assert len(parse_annotations(split, "levir-cd", "test")) == 2
    assert {r.split for r in parse_annotations(split, "levir-cd")} == {"train", "test"}


def test_missing_label_is_a_one_line_error(tmp_path: Path) -> None:
    root = make_levir_cd(tmp_path / "cd", 2)
    (root / "label" / "cd_0001.png").unlink()
    with pytest.raises(DataError, match=r"label image not found") as e:
        parse_annotations(root, "levir-cd")
    assert "cd_0001.png" in str(e.value) and "\n" not in str(e.value)


def test_caption_less_samples_and_a_mixed_training_set(tmp_path: Path) -> None:
    cd = open_dataset(make_levir_cd(tmp_path / "cd", 3, 16), "levir-cd", "train", vocab=VOCAB, max_length=8)
    sample = cd[0]
    assert sample["captions"] == [] and sample["caption"] == "" and sample["tokens"].shape == (0, 8)
    assert sample["mask"].shape == (16, 16) and sample["image"].shape == (2, 3, 16, 16)
    per_caption = open_dataset(tmp_path / "cd", "levir-cd", "train", vocab=VOCAB, max_length=8, sampling="all")
    assert len(per_caption) == 3  # one item per pair even without captions
    mci = open_dataset(make_levir(tmp_path / "mci", "levir-mci", size=16), "levir-mci", "train", vocab=VOCAB)
    mixed = MixedDataset([mci, cd])
    assert len(mixed) == len(mci) + 3
    assert mixed.record(len(mci)).captions == [] and mixed[len(mci)]["name"] == "cd_0000.png"
    assert mixed.image_size == mci.image_size and mixed.mean == mci.mean


@pytest.mark.shared
def test_reads_the_real_levir_cd_and_dsifn_samples(tmp_path: Path) -> None:
    import shutil

    for name in ("levir-cd-samples", "dsifn-samples"):
        src = require_shared(name)
        root = tmp_path / name
        for sub in ("A", "B", "label"):
            (root / sub).mkdir(parents=True)
        labelled = sorted(p.name for p in (src / "label").iterdir())
        for file in labelled:  # pairs without a label (a screenshot in the LEVIR-CD samples) are left out
            for sub in ("A", "B", "label"):
                shutil.copy(src / sub / file, root / sub / file)
        records = parse_annotations(root, "levir-cd")
        assert len(records) == len(labelled) >= 10 and any(r.changed for r in records)
