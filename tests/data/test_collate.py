from __future__ import annotations

import pytest
import torch

from changecap.data.collate import collate_pairs


def _sample(r: int, t: int = 6, mask: bool = True, name: str = "x.png") -> dict:
    tokens = torch.arange(1, r * t + 1).view(r, t)  # [R, T], no zeros so padding is visible
    s = {
        "image": torch.randn(2, 3, 4, 4),
        "captions": [f"c{k}" for k in range(r)],
        "tokens": tokens,
        "target": tokens[0].clone(),
        "changed": r % 2 == 1,
        "name": name,
        "split": "train",
    }
    if mask:
        s["mask"] = torch.zeros(4, 4, dtype=torch.long)
    return s


def test_pads_references_with_null_rows() -> None:
    batch = collate_pairs([_sample(5, name="a.png"), _sample(3, name="b.png")])
    assert batch["image"].shape == (2, 2, 3, 4, 4)
    assert batch["tokens"].shape == (2, 5, 6) and batch["tokens"].dtype == torch.long
    assert torch.equal(batch["tokens"][1, :3], _sample(3)["tokens"])
    assert (batch["tokens"][1, 3:] == 0).all()
    assert batch["num_refs"].tolist() == [5, 3]
    assert batch["target"].shape == (2, 6)
    assert batch["changed"].dtype == torch.bool and batch["changed"].tolist() == [True, True]
    assert batch["mask"].shape == (2, 4, 4)
    assert batch["name"] == ["a.png", "b.png"] and batch["split"] == ["train", "train"]
    assert batch["captions"][1] == ["c0", "c1", "c2"]


def test_mask_only_when_every_sample_has_one() -> None:
    batch = collate_pairs([_sample(2), _sample(2, mask=False)])
    assert "mask" not in batch


def test_caption_only_samples_and_errors() -> None:
    a, b = _sample(2), _sample(2)
    del a["image"], b["image"]
    assert "image" not in collate_pairs([a, b])
    with pytest.raises(ValueError, match="images"):
        collate_pairs([a, _sample(2)])
    with pytest.raises(ValueError, match="max_length"):
        collate_pairs([_sample(2, t=6), _sample(2, t=7)])
