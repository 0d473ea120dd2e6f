"""The ``sam`` target: a SAM vision encoder learns land cover, and its directory loads where real SAM weights do."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from changecap.errors import ConfigError, DataError, ModelError
from changecap.models.foundations import SAM_CPU, SAMPretrainConfig, SAMPretrainer
from changecap.models.semantic_cc.config import SAMEncoderConfig
from changecap.models.semantic_cc.encoder import build_sam_encoder
from changecap.schema import from_dict
from tests.models.foundations.conftest import TINY_SAM, colour_batch, save_sam


def _trained(steps: int = 15, **fields: object) -> tuple[SAMPretrainer, list[float]]:
    torch.manual_seed(0)
    model = SAMPretrainer(SAMPretrainConfig(num_classes=4, config=dict(TINY_SAM), **fields))  # type: ignore[arg-type]
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    batch = colour_batch(4, 4)
    losses = []
    for _ in range(steps):
        loss = model(batch)["segmentation"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return model, losses


@pytest.mark.parametrize("head", ["upsample", "linear"])
def test_the_segmentation_loss_goes_down(head: str) -> None:
    _, losses = _trained(head=head)
    assert losses[-1] < 0.8 * losses[0], losses


def test_the_saved_encoder_loads_as_semantic_cc_sam_weights(tmp_path: Path) -> None:
    model, _ = _trained(steps=3)
    model.save_pretrained(tmp_path / "sam")
    assert sorted(p.name for p in (tmp_path / "sam").iterdir()) == ["config.json", "model.safetensors"]
    config = SAMEncoderConfig(pretrained=str(tmp_path / "sam"), config=dict(TINY_SAM), bcsf_placement="none")
    encoder = build_sam_encoder(config).eval()  # LoRA on qkv (zero at the start): the same function
    images = colour_batch(4, 4)["image"]
    raw, cd = encoder(images.view(2, 2, 3, 32, 32))  # [4, 16, 24], [4, 16, 8]: rows 0..1 = before
    model.eval()
    with torch.no_grad():
        neck = model.features(images[[0, 2, 1, 3]])  # [4, 8, 4, 4] in the encoder's before-then-after order
    torch.testing.assert_close(cd, neck.flatten(2).transpose(1, 2))
    assert raw.shape == (4, 16, 24)
    loaded = {k.replace(".base_layer", ""): v for k, v in encoder.sam.state_dict().items() if "lora_" not in k}
    trained = model.encoder.state_dict()
    assert loaded.keys() == trained.keys()
    for key, value in trained.items():
        assert torch.equal(loaded[key], value), key


def test_real_sam_weights_still_load_resized(tmp_path: Path) -> None:
    """A SamVisionModel (and a full SamModel, as ``facebook/sam-vit-large``) at 64 px loads onto a 32 px encoder."""
    from transformers import SamConfig, SamModel, SamVisionConfig

    source = save_sam(tmp_path / "vision", seed=1, image_size=64)
    torch.manual_seed(2)
    full = SamModel(SamConfig(vision_config=SamVisionConfig(**{**TINY_SAM, "image_size": 64}).to_dict()))
    full.save_pretrained(tmp_path / "full")
    for folder, want in ((source, None), (tmp_path / "full", full.vision_encoder.state_dict())):
        encoder = build_sam_encoder(SAMEncoderConfig(pretrained=str(folder), config=dict(TINY_SAM)))
        state = encoder.sam.state_dict()
        assert state["pos_embed"].shape == (1, 4, 4, 24)  # 8×8 grid resized to 4×4
        if want is not None:
            key = "layers.0.attn.qkv.base_layer.weight"  # wrapped by LoRA
            assert torch.equal(state[key], want["layers.0.attn.qkv.weight"])
    # the sam target can start from real weights the same way
    model = SAMPretrainer(SAMPretrainConfig(num_classes=3, config=dict(TINY_SAM), pretrained=str(tmp_path / "full")))
    assert torch.equal(model.encoder.layers[1].attn.proj.weight, full.vision_encoder.layers[1].attn.proj.weight)


def test_rare_classes_weigh_more_and_bad_maps_are_errors() -> None:
    model = SAMPretrainer(SAMPretrainConfig(num_classes=3, config=dict(TINY_SAM)))
    target = torch.zeros(2, 32, 32, dtype=torch.long)
    target[:, :4] = 1  # class 1 on 1/8 of the pixels, class 2 absent
    weights = model.class_weights(target)
    assert weights is not None and weights[1] > weights[0]
    images = torch.randn(2, 3, 32, 32)
    with pytest.raises(ConfigError, match="model.num_classes.*class 7"):
        model({"image": images, "landcover": torch.full((2, 32, 32), 7)})
    with pytest.raises(ModelError, match="landcover"):
        model({"image": images})
    with pytest.raises(ModelError, match=r"\[B, 3, 32, 32\]"):
        model({"image": torch.randn(2, 3, 64, 64), "landcover": target})
    out = model({"image": images, "landcover": torch.full((2, 16, 16), 255)})  # nothing labelled, other size
    assert float(out["segmentation"].detach()) == 0.0


def test_config_errors_name_the_field() -> None:
    cfg = from_dict(SAMPretrainConfig, {"num_classes": 8}, "model")
    assert cfg.config == SAM_CPU
    cases = {
        "model.num_classes": {"num_classes": 1},
        "model.config.patch_size": {"num_classes": 4, "config": {**TINY_SAM, "patch_size": 5}},
        "model.config.bogus": {"num_classes": 4, "config": {**TINY_SAM, "bogus": 1}},
        "model.config.global_attn_indexes": {"num_classes": 4, "config": {**TINY_SAM, "global_attn_indexes": [2]}},
        "model.head": {"num_classes": 4, "head": "fpn"},
    }
    for field, data in cases.items():
        with pytest.raises(ConfigError) as e:
            from_dict(SAMPretrainConfig, data, "model")
        assert e.value.field == field and "\n" not in str(e.value)


def test_saving_keeps_other_files_and_refuses_a_file(tmp_path: Path) -> None:
    model = SAMPretrainer(SAMPretrainConfig(num_classes=3, config=dict(TINY_SAM)))
    out = tmp_path / "sam"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    model.save_pretrained(out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="file: exists and is not a folder"):
        model.save_pretrained(tmp_path / "file")
