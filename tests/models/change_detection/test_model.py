"""changecap's Siamese change detector on a tiny config: shapes of every part, the fusion modes, batching, config
checks and a save/load round trip that reproduces the masks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from changecap.data.vocab import Vocabulary
from changecap.errors import ConfigError, ModelError
from changecap.models import build_model, config_from_dict, load_model, save_model
from changecap.models.change_detection import SiameseChangeDetector
from changecap.models.change_detection.model import DifferenceFusion

TINY = {"architecture": "change_detection", "image_size": 64, "encoder": {"widths": [8, 16, 32], "blocks": 1},
        "decoder_dim": 8}  # fmt: skip


def _model(seed: int = 0, **changes: object) -> SiameseChangeDetector:
    torch.manual_seed(seed)
    return build_model(config_from_dict({**TINY, **changes}))


def _images(b: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))  # [B, 2, 3, S, S]


def test_shapes_of_every_part() -> None:
    model = _model().eval()
    images = _images()
    levels = model.encoder(images[:, 0])
    assert [tuple(x.shape) for x in levels] == [(4, 8, 16, 16), (4, 16, 8, 8), (4, 32, 4, 4)]  # S/4, S/8, S/16
    fused = model.features(images)
    assert [tuple(x.shape) for x in fused] == [(4, 8, 16, 16), (4, 16, 8, 8), (4, 32, 4, 4)]
    assert model(images).shape == (4, 1, 64, 64)
    out = model.predict(images)  # no vocabulary needed: it writes no captions
    assert out.texts is None and out.tokens is None and out.change_probability is None
    assert out.mask.shape == (4, 64, 64) and out.mask.dtype == torch.int64 and out.mask_logits.shape == (4, 1, 64, 64)
    with pytest.raises(ModelError, match="change_detection writes no captions: beam search does not apply"):
        model.predict(images, beam_size=2)
    assert _model(num_classes=2)(images).shape == (4, 2, 64, 64)


@pytest.mark.parametrize("mode", ["diff", "concat", "diff_concat"])
def test_fusion_modes(mode: str) -> None:
    torch.manual_seed(0)
    fusion = DifferenceFusion(4, mode).eval()  # type: ignore[arg-type]
    a, b = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    assert fusion(a, b).shape == (2, 4, 5, 5)
    if mode == "diff":  # only the difference: symmetric in the dates, and blind to what both dates share
        assert torch.allclose(fusion(a, b), fusion(b, a))
        assert torch.allclose(fusion(a, a), fusion(b, b))
    else:
        assert not torch.allclose(fusion(a, a), fusion(b, b))


def test_a_batch_of_four_equals_four_single_pairs() -> None:
    model = _model().eval()
    images = _images()
    batched = model(images)
    single = torch.cat([model(images[i : i + 1]) for i in range(4)])
    assert torch.allclose(batched, single, atol=1e-5)


def test_save_and_load_reproduce_the_masks(tmp_path: Path) -> None:
    model = _model().eval()
    vocab = Vocabulary.build([["a", "house"]], threshold=0)
    model.config.vocab_size = len(vocab)
    out = save_model(model, None, vocab, tmp_path / "cd")
    loaded = load_model(out)
    assert isinstance(loaded, SiameseChangeDetector) and loaded.config == model.config
    images = _images(2)
    assert torch.equal(loaded.predict(images).mask, model.predict(images).mask)
    assert torch.allclose(loaded(images), model(images))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"image_size": 60}, "model.image_size"),  # not a multiple of the total stride 16
        ({"encoder": {"widths": []}}, "model.encoder.widths"),
        ({"encoder": {"widths": [8], "blocks": 0}}, "model.encoder.blocks"),
        ({"fusion": "sum"}, "model.fusion"),
        ({"num_classes": 0}, "model.num_classes"),
        ({"dropout": 1.0}, "model.dropout"),
    ],
)
def test_bad_configs_are_one_line_errors(changes: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({**TINY, **changes})
    assert err.value.field == field and "\n" not in str(err.value)


def test_images_of_the_wrong_shape_are_one_line_errors() -> None:
    with pytest.raises(ModelError, match=r"expects image pairs \[B, 2, 3, 64, 64\], got \[1, 2, 3, 32, 32\]"):
        _model()(torch.zeros(1, 2, 3, 32, 32))
