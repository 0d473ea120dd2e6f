"""The clip target: a CLIPModel trained contrastively whose directory loads where openai/clip-vit-base-patch16 does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from changecap.errors import ConfigError
from changecap.models import build_model
from changecap.models.foundations.clip import TARGET, CLIPPretrainer
from changecap.models.hisem import tiny_config
from changecap.models.parts.clip_encoder import CLIPPatchEncoder, EncoderConfig, build_clip_encoder
from tests.models.foundations.tiny_targets import CAPTIONS, TINY_CLIP, inputs


def _module(seed: int = 0, **changes: object) -> CLIPPretrainer:
    torch.manual_seed(seed)
    return TARGET.build(TARGET.read_config({**TINY_CLIP, **changes}), inputs())


def _batch(n: int = 4, seed: int = 0, first: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    caps = [CAPTIONS[(first + i) % len(CAPTIONS)] for i in range(n)]
    return {"image": torch.randn(n, 3, 16, 16, generator=g), "caption": caps, "captions": [[c] for c in caps]}


def test_forward_returns_the_symmetric_contrastive_loss() -> None:
    module = _module()
    batch = _batch()
    terms = module(batch)
    assert list(terms) == ["contrastive"] and terms["contrastive"].dim() == 0
    image = module.embed_images(batch["image"])
    text = module.embed_texts(batch["caption"], torch.device("cpu"))
    logits = module.clip.logit_scale.exp() * image @ text.t()  # [4, 4]
    labels = torch.arange(4)
    ce = torch.nn.functional.cross_entropy
    expected = (ce(logits, labels) + ce(logits.t(), labels)) / 2
    torch.testing.assert_close(terms["contrastive"], expected)
    terms["contrastive"].backward()
    assert module.clip.logit_scale.grad is not None
    assert module.clip.vision_model.embeddings.patch_embedding.weight.grad is not None


def test_a_few_updates_lower_the_loss() -> None:
    module = _module()
    batch = _batch(5)
    opt = torch.optim.AdamW(module.parameters(), lr=3e-3)
    first = module(batch)["contrastive"].item()
    for _ in range(15):
        opt.zero_grad()
        module(batch)["contrastive"].backward()
        opt.step()
    assert module(batch)["contrastive"].item() < 0.5 * first


def test_truncation_keeps_the_end_token_where_the_text_tower_pools() -> None:
    module = _module()
    ids, mask = module.tokenize([" ".join(["grass"] * 40), "water"], torch.device("cpu"))
    assert ids.shape[1] == 16 and ids[0, -1] == module.tokenizer.eos_token_id
    assert (ids[1] == module.tokenizer.eos_token_id).sum() == 1 and mask[1].sum() < 16


def test_evaluate_reports_retrieval_recall() -> None:
    module = _module().eval()
    out = module.evaluate([_batch(3, seed=1), _batch(2, seed=2, first=3)])
    assert out["images"] == 5 and out["texts"] == len(CAPTIONS)
    for key in ("image_to_text_R@1", "image_to_text_R@5", "text_to_image_R@1", "text_to_image_R@5"):
        assert 0.0 <= out[key] <= 1.0
    assert out["image_to_text_R@5"] == 1.0  # five distinct texts: every image's own caption is in its top 5
    assert out["temperature"] == pytest.approx(0.07, rel=1e-4)


def test_saved_directory_loads_as_the_encoder_of_the_systems(tmp_path: Path) -> None:
    module = _module()
    module.save_pretrained(tmp_path / "clip")
    files = {p.name for p in (tmp_path / "clip").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= files
    trained = module.clip.vision_model.state_dict()

    encoder, cfg = build_clip_encoder(EncoderConfig(pretrained=str(tmp_path / "clip"), trainable_layers=1))
    assert cfg.config is not None and cfg.config["image_size"] == 16 and cfg.config["hidden_size"] == 32
    loaded = encoder.vision.state_dict()
    assert loaded.keys() == trained.keys()
    for key, value in trained.items():
        assert torch.equal(loaded[key], value), key

    hisem_cfg = tiny_config(23, image_size=16, patch_size=8, dim=32)
    hisem_cfg.encoder = EncoderConfig(pretrained=str(tmp_path / "clip"), trainable_layers=1)
    hisem = build_model(hisem_cfg)
    w = "vision.encoder.layers.1.mlp.fc1.weight"
    assert torch.equal(hisem.encoder.state_dict()[w], trained[w.removeprefix("vision.")])
    assert hisem.encoder.frozen_blocks == 1


def test_a_real_clip_checkpoint_still_loads_offline(tmp_path: Path) -> None:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    real = CLIPModel(CLIPConfig(
        text_config={"vocab_size": 50, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 8},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 16, "patch_size": 8},
        projection_dim=8,
    ))  # fmt: skip
    real.save_pretrained(tmp_path / "real")
    encoder = CLIPPatchEncoder.from_pretrained(tmp_path / "real", trainable_layers=1)
    for key, value in real.vision_model.state_dict().items():
        assert torch.equal(encoder.vision.state_dict()[key], value), key


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"vision": {**TINY_CLIP["vision"], "image_size": 32}}, "model.vision.image_size"),
        ({"vision": {**TINY_CLIP["vision"], "patch_size": 5}}, "model.vision.patch_size"),
        ({"vision": {**TINY_CLIP["vision"], "colour": 1}}, "model.vision.colour"),
        ({"text": {"vocab_size": 10}}, "model.text.vocab_size"),
        ({"text": {"hidden_size": 30, "num_attention_heads": 4}}, "model.text.num_attention_heads"),
        ({"tokenizer": {"vocab_size": 10}}, "model.tokenizer.vocab_size"),
        ({"projection": 3}, "model.projection"),
    ],
)
def test_config_errors_name_the_field(changes: dict, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        _module(**changes)
    assert e.value.field == field and "\n" not in str(e.value)
