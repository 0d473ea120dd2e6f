"""The Q-Former, its queries and ln_vision come from a (tiny, locally saved) transformers BLIP-2 checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from changecap.errors import ModelError
from changecap.models import build_model, config_from_dict
from tests.models.semantic_cc.conftest import TINY, tiny


def _blip2(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    q = TINY["caption"]["qformer"]
    config = Blip2Config(
        vision_config={"hidden_size": 24, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 16},
        qformer_config=dict(q),
        text_config={"model_type": "opt", "hidden_size": 16, "ffn_dim": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "vocab_size": 50, "word_embed_proj_dim": 16},
        num_query_tokens=TINY["caption"]["num_query_tokens"],
    )  # fmt: skip
    torch.manual_seed(5)
    model = Blip2ForConditionalGeneration(config)
    with torch.no_grad():
        model.query_tokens.normal_()
        model.vision_model.post_layernorm.weight.uniform_(0.5, 1.5)
    model.save_pretrained(folder)
    return model.state_dict()


def test_blip2_qformer_weights_are_loaded(tmp_path: Path) -> None:
    source = _blip2(tmp_path / "blip2")
    model = build_model(config_from_dict(tiny(**{"caption.qformer_pretrained": str(tmp_path / "blip2")})))
    cap = model.caption_decoder
    for key, value in cap.qformer.state_dict().items():
        assert torch.equal(value, source[f"qformer.{key}"]), key
    assert torch.equal(cap.query_tokens, source["query_tokens"])
    assert torch.equal(cap.ln_vision.weight, source["vision_model.post_layernorm.weight"])
    assert not any(p.requires_grad for p in cap.qformer.parameters())  # frozen, as MiniGPT-4


def test_a_q_former_of_another_size_is_a_one_line_error(tmp_path: Path) -> None:
    _blip2(tmp_path / "blip2")
    d = tiny(**{"caption.qformer_pretrained": str(tmp_path / "blip2"), "caption.num_query_tokens": 6})
    with pytest.raises(ModelError, match="query_tokens") as e:
        build_model(config_from_dict(d))
    assert "\n" not in str(e.value)
    with pytest.raises(ModelError, match="qformer_pretrained 'nobody/none'"):
        build_model(config_from_dict(tiny(**{"caption.qformer_pretrained": "nobody/none"})))


def test_a_damaged_blip2_weights_file_is_a_one_line_error(tmp_path: Path) -> None:
    folder = tmp_path / "blip2"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    with pytest.raises(ModelError, match="model.safetensors: cannot read safetensors file") as e:
        build_model(config_from_dict(tiny(**{"caption.qformer_pretrained": str(folder)})))
    assert "\n" not in str(e.value)
