"""HiSem and plain configs: presets, paper parameter counts, strict round trip, dotted-field errors, build_model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from changecap.errors import ConfigError
from changecap.models import ModelConfig, build_model, config_from_dict
from changecap.models.hisem import ConcatFusionConfig, HiSemFusionConfig, paper_config, tiny_config


def _tiny(**kw: Any) -> ModelConfig:
    return tiny_config(20, image_size=32, patch_size=8, dim=32, **kw)


@pytest.mark.parametrize("unused", [False, True])
def test_paper_config_parameter_counts(unused: bool) -> None:
    cfg = paper_config(501, pretrained=None)
    cfg.decoder.official_unused_params = unused
    cfg.fusion.official_unused_params = unused
    with torch.device("meta"):
        model = build_model(cfg)
    counts = model.parameter_counts()
    assert counts["encoder"] == 85_799_424  # HF visual tower; the official 86,192,640 adds the unused 768→512 proj
    assert counts["fusion"] == (81_253_192 if unused else 81_243_976)
    assert counts["decoder"] == (13_802_997 if unused else 10_221_813)
    assert counts["trainable"] == (123_409_213 if unused else 119_818_813)  # official: trainable 123,409,213
    assert cfg.vocab_size == 501 and cfg.max_length == 41


@pytest.mark.parametrize("kw", [{}, {"architecture": "plain"}, {"encoder": False}])
def test_round_trip_through_json(kw: dict[str, Any]) -> None:
    cfg = _tiny(**kw)
    again = config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    fusion_cls = ConcatFusionConfig if kw.get("architecture") == "plain" else HiSemFusionConfig
    assert isinstance(again.fusion, fusion_cls)


def _mutate(d: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    node[last] = value
    return d


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("architecture", "transformer", "model.architecture"),
        ("decoder.heads", 5, "model.decoder.heads"),
        ("decoder.depth", 2, "model.decoder.depth"),
        ("fusion.top_k", 9, "model.fusion.top_k"),
        ("fusion.dim", 64, "model.fusion.dim"),
        ("fusion.grid_size", 3, "model.fusion.grid_size"),
        ("decoder.dim", 64, "model.decoder.dim"),
        ("encoder.trainable_layers", "4", "model.encoder.trainable_layers"),
        ("encoder.config", None, "model.encoder.config"),
        ("encoder.colour", 1, "model.encoder.colour"),
        ("vocab_size", 20, "model.vocab_size"),
    ],
)
def test_errors_name_the_dotted_field(path: str, value: Any, field: str) -> None:
    d = _mutate(_tiny().to_dict(), path, value)
    with pytest.raises(ConfigError, match=f"'{field}'") as info:
        config_from_dict(d)
    assert "\n" not in str(info.value)


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="'model'"):
        config_from_dict([1, 2])


def test_build_model_checks_and_does_not_mutate() -> None:
    cfg = _tiny()
    cfg.fusion.dim = 64
    with pytest.raises(ConfigError, match="encoder's hidden_size is 32"):
        build_model(cfg)
    cfg = _tiny()
    before = cfg.to_dict()
    model = build_model(cfg)
    assert cfg.to_dict() == before  # the caller's config is not modified
    # model.config completes the encoder fields with transformers' defaults, so a reload compares equal
    assert model.config.encoder.config == {**cfg.encoder.config, "num_channels": 3, "attention_dropout": 0.0}
    assert model.config.fusion == cfg.fusion and model.config.decoder == cfg.decoder


def test_build_from_local_pretrained_records_architecture(tmp_path: Path) -> None:
    from changecap.models.parts import CLIPPatchEncoder

    src = CLIPPatchEncoder.from_config(_tiny().encoder.config)
    src.vision.save_pretrained(tmp_path / "clip")
    cfg = _tiny()
    cfg.encoder.pretrained, cfg.encoder.config = str(tmp_path / "clip"), None
    model = build_model(cfg)
    assert model.config.encoder.config == src.config_fields  # saved models rebuild without the weights' source
    torch.testing.assert_close(model.encoder.vision.post_layernorm.weight, src.vision.post_layernorm.weight)
    wrong = _tiny()
    wrong.encoder.pretrained = str(tmp_path / "clip")
    wrong.encoder.config["num_hidden_layers"] = 5
    with pytest.raises(ConfigError, match="model.encoder.config.num_hidden_layers"):
        build_model(wrong)
