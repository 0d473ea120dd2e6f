"""The ``qformer`` target: BLIP-2's three first-stage losses over a frozen SAM, saved as Semantic-CC's Q-Former."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from changecap.errors import ConfigError, ModelError
from changecap.models import build_model, config_from_dict
from changecap.models.foundations import QFormerPretrainConfig, QFormerPretrainer
from changecap.schema import from_dict
from tests.models.foundations.conftest import TINY_SAM, colour_batch
from tests.models.semantic_cc.conftest import tiny

#: the Q-Former of the tiny Semantic-CC test model (its encoder_hidden_size 24 is the tiny SAM's width), no dropout
TINY_QFORMER: dict[str, Any] = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                                "intermediate_size": 32, "hidden_dropout_prob": 0.0,
                                "attention_probs_dropout_prob": 0.0}  # fmt: skip

CAPTIONS = [
    ["a house on the left", "two houses on the left"],
    ["a road at the bottom"],
    ["a pond on the right with woods"],
    ["woods at the top and a road"],
]


def _model(sam_dir: Path, tokenizer_dir: Path, **fields: Any) -> QFormerPretrainer:
    torch.manual_seed(0)
    fields = {"qformer": dict(TINY_QFORMER), "num_query_tokens": 4, "embed_dim": 8, **fields}
    return QFormerPretrainer(QFormerPretrainConfig(sam=str(sam_dir), tokenizer=str(tokenizer_dir), **fields))


def _batch(seed: int = 0) -> dict[str, Any]:
    return {"image": colour_batch(4, 4, seed=3)["image"], "captions": CAPTIONS,
            "generator": torch.Generator().manual_seed(seed)}  # fmt: skip


def test_each_loss_goes_down_and_the_sam_stays_frozen(sam_dir: Path, tokenizer_dir: Path) -> None:
    model = _model(sam_dir, tokenizer_dir).train()
    assert not model.sam.training and not any(p.requires_grad for p in model.sam.parameters())
    sam_before = {k: v.clone() for k, v in model.sam.state_dict().items()}
    # at 1e-2 the ITC similarities of this tiny model collapse to one value within two updates
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    history: list[dict[str, float]] = []
    for step in range(20):
        losses = model(_batch(step))
        assert set(losses) == {"itc", "itm", "itg"}
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    for name in ("itc", "itm", "itg"):
        first = sum(h[name] for h in history[:3]) / 3
        last = sum(h[name] for h in history[-3:]) / 3
        assert last < 0.9 * first, (name, [round(h[name], 3) for h in history])
    for key, value in model.sam.state_dict().items():
        assert torch.equal(value, sam_before[key]), key


def test_generation_is_causal_and_the_queries_do_not_read_the_text(sam_dir: Path, tokenizer_dir: Path) -> None:
    model = _model(sam_dir, tokenizer_dir).eval()
    images = colour_batch(2, 4)["image"]
    v = model.ln_vision(model.image_features(images))  # [2, 16, 24]
    ids, mask = model.encode_text(["a house on the left", "a road"], images.device)  # [2, 7]
    assert ids[0, 0] == model.cls_id and ids[0, 6] == model.end_id and mask[1].tolist() == [1, 1, 1, 1, 0, 0, 0]
    changed = ids.clone()
    changed[0, 4] = ids[0, 2]  # "the" → "house"
    with torch.no_grad():
        a, b = model.itg_logits(v, ids, mask), model.itg_logits(v, changed, mask)  # [2, 6, V]
        c = model.itg_logits(v.flip(0), ids, mask)  # the other image
    torch.testing.assert_close(a[:, :4], b[:, :4])  # positions before the change (the [DEC] one included)
    assert not torch.allclose(a[0, 4:], b[0, 4:])
    assert not torch.allclose(a[:, 0], c[:, 0])  # the first word is predicted from the image


def test_the_saved_qformer_loads_into_semantic_cc(sam_dir: Path, tokenizer_dir: Path, tmp_path: Path) -> None:
    model = _model(sam_dir, tokenizer_dir)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    sum(model(_batch()).values()).backward()
    opt.step()
    model.save_pretrained(tmp_path / "qformer")
    saved = json.loads((tmp_path / "qformer" / "config.json").read_text())
    assert saved["qformer"]["encoder_hidden_size"] == saved["vision_width"] == TINY_SAM["hidden_size"]
    d = tiny(
        **{
            "caption.qformer": saved["qformer"],
            "caption.num_query_tokens": saved["num_query_tokens"],
            "neck.cc_dim": saved["vision_width"],
            "caption.qformer_pretrained": str(tmp_path / "qformer"),
        }
    )
    cap = build_model(config_from_dict(d)).caption_decoder
    trained = model.qformer.state_dict()
    for key, value in cap.qformer.state_dict().items():
        assert torch.equal(value, trained[key]), key
    assert torch.equal(cap.query_tokens, model.query_tokens)
    assert torch.equal(cap.ln_vision.weight, model.ln_vision.weight)
    assert torch.equal(cap.ln_vision.bias, model.ln_vision.bias)
    text_branch = [k for k in trained if k not in cap.qformer.state_dict()]
    assert text_branch and all(".intermediate." in k or ".output." in k for k in text_branch)  # not saved


def test_neck_features_and_errors(sam_dir: Path, tokenizer_dir: Path) -> None:
    model = _model(sam_dir, tokenizer_dir, features="neck")
    assert model.vision_width == TINY_SAM["output_channels"]
    assert model.image_features(torch.zeros(1, 3, 32, 32)).shape == (1, 16, TINY_SAM["output_channels"])
    with pytest.raises(ModelError, match=r"\[B, 3, 32, 32\]"):
        model({"image": torch.zeros(2, 3, 64, 64), "captions": CAPTIONS[:2]})
    with pytest.raises(ModelError, match="no caption"):
        model({"image": torch.zeros(2, 3, 32, 32), "captions": [["a road"], []]})
    resized = _model(sam_dir, tokenizer_dir, image_size=64)  # position tables resized as Semantic-CC does
    assert resized.sam.pos_embed.shape == (1, 8, 8, TINY_SAM["hidden_size"])
    with pytest.raises(ConfigError, match="encoder_hidden_size") as e:
        _model(sam_dir, tokenizer_dir, qformer={**TINY_QFORMER, "encoder_hidden_size": 99})
    assert e.value.field == "model.qformer.encoder_hidden_size"
    for field, value in (("sam", "/no/such/sam"), ("tokenizer", "/no/such/tokenizer")):
        with pytest.raises(ModelError, match=f"model.{field} '/no/such/{field}'"):
            _model(**{"sam_dir": sam_dir, "tokenizer_dir": tokenizer_dir, f"{field}_dir": Path(value)})


def test_config_errors_name_the_field() -> None:
    base = {"sam": "sam", "tokenizer": "tok"}
    assert from_dict(QFormerPretrainConfig, base, "model").qformer["hidden_size"] == 64
    cases = {
        "model.sam": {"tokenizer": "tok"},
        "model.num_query_tokens": {**base, "num_query_tokens": 0},
        "model.qformer.bogus": {**base, "qformer": {"bogus": 1}},
        "model.qformer.num_attention_heads": {**base, "qformer": {"hidden_size": 30, "num_attention_heads": 4}},
        "model.features": {**base, "features": "pixels"},
        "model.temperature": {**base, "temperature": 2.0},
    }
    for field, data in cases.items():
        with pytest.raises(ConfigError) as e:
            from_dict(QFormerPretrainConfig, data, "model")
        assert e.value.field == field and "\n" not in str(e.value)


def test_the_cpu_sizes_are_those_of_the_semantic_cc_cpu_config() -> None:
    """The default stand-ins load into ``configs/semantic_cc_synthcc_cpu.yaml`` as they are."""
    import yaml

    from changecap.models.foundations import QFORMER_CPU, SAM_CPU
    from tests.conftest import REPO_ROOT

    model = yaml.safe_load((REPO_ROOT / "configs" / "semantic_cc_synthcc_cpu.yaml").read_text())["model"]
    assert model["encoder"]["config"] == SAM_CPU
    qformer = dict(model["caption"]["qformer"])
    assert qformer.pop("encoder_hidden_size") == SAM_CPU["hidden_size"] == model["neck"]["cc_dim"]  # features="tokens"
    assert qformer == QFORMER_CPU
    assert model["caption"]["num_query_tokens"] == QFormerPretrainConfig("sam", "tok").num_query_tokens
