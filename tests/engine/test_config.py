"""Config loading: YAML, overrides, round trip, and one-line errors naming the file and the dotted field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from changecap.engine.config import TrainConfig, load_config, validate_loss_section
from changecap.engine.objectives.hisem import HisemLossConfig
from changecap.errors import ConfigError
from tests.engine.toy import TINY_MODEL

BASE = """
data:
  root: some/data
  format: levir-mci
  image_size: 64
  vocab: {splits: all, threshold: 5, rule: ge}
optim: {lr: 0.001, group_lr: {decoder: 0.002}}
loss: {gt_routing_until_epoch: 0.8}
train: {epochs: 50, batch_size: 8, precision: bf16}
"""


def write(tmp_path: Path, text: str = BASE, name: str = "cfg.yaml", model: bool = True) -> Path:
    p = tmp_path / name
    p.write_text(text + ("\n" + yaml.safe_dump({"model": TINY_MODEL}) if model else ""))
    return p


def test_load_applies_types_defaults_and_overrides(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path), overrides=["train.epochs=3", "optim.betas=[0.8, 0.9]", "data.augment=true", "optim.eps=1e-6"]
    )
    assert cfg.optim.eps == 1e-6  # YAML 1.1 reads `1e-6` as a string; float fields accept it
    assert cfg.data.format == "levir-mci" and cfg.data.image_size == 64
    assert cfg.data.vocab.splits == "all" and cfg.data.vocab.rule == "ge"
    assert cfg.optim.lr == 0.001 and cfg.optim.group_lr == {"decoder": 0.002} and cfg.optim.name == "adam"
    assert cfg.optim.betas == (0.8, 0.9)
    assert cfg.train.epochs == 3 and cfg.train.precision == "bf16" and cfg.data.augment is True
    loss = validate_loss_section(cfg)  # the HiSem objective's section
    assert isinstance(loss, HisemLossConfig) and loss.router_weight == 0.8  # default kept
    assert cfg.source == str(tmp_path / "cfg.yaml")


def test_round_trip_dict_and_yaml(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path), overrides=["model.fusion.bdam_layers=2"])
    again = TrainConfig.from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    saved = cfg.save(tmp_path / "run" / "config.yaml")
    assert load_config(saved) == cfg
    assert cfg.model["fusion"]["bdam_layers"] == 2 and cfg.model["architecture"] == "hisem"
    assert "source" not in cfg.to_dict()


def test_gt_routing_epoch_or_fraction(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path))
    assert validate_loss_section(cfg).gt_routing_last_epoch(cfg.train.epochs) == 40  # 0.8 of 50 = the paper's e <= 40
    cfg = load_config(write(tmp_path), overrides=["loss.gt_routing_until_epoch=12"])
    loss = validate_loss_section(cfg)
    assert loss.gt_routing_until_epoch == 12 and isinstance(loss.gt_routing_until_epoch, int)
    assert loss.gt_routing_last_epoch(cfg.train.epochs) == 12


@pytest.mark.parametrize(
    ("override", "field", "words"),
    [
        ("train.epoch=3", "train.epoch", "unknown key"),
        ("traning.epochs=3", "traning", "unknown key"),
        ("train.epochs=three", "train.epochs", "expected int"),
        ("train.epochs=2.5", "train.epochs", "expected int"),
        ("train.epochs=0", "train.epochs", "must be > 0"),
        ("optim.lr=-0.1", "optim.lr", ">= 0"),
        ("optim.lr=fast", "optim.lr", "expected float"),
        ("optim.lr=.nan", "optim.lr", "finite"),
        ("optim.betas=[0.9]", "optim.betas", "list of 2"),
        ("train.precision=fp16", "train.precision", "'fp32' | 'bf16'"),
        ("schedule.name=linear", "schedule.name", "'constant'"),
        ("data.resize_mode=crop", "data.resize_mode", "expected"),
        ("data.vocab.rule=gte", "data.vocab.rule", "expected"),
        ("data.max_length=long", "data.max_length", "expected int or 'auto' or null"),
        ("data.max_length=1", "data.max_length", "must be >= 2"),
        ("data.normalize=nonsense", "data.normalize", "unknown normalisation"),
        ("data.format=coco", "data.format", "unknown dataset format"),
        ("data.root=", "data.root", "expected str, got null"),
        ("data.root=' '", "data.root", "required"),
        ("data.packed=' '", "data.packed", "must name a pack folder or be null"),
        ("data.packed=[a]", "data.packed", "expected str"),
        ("loss.gt_routing_until_epoch=1.5", "loss.gt_routing_until_epoch", "fraction"),
        ("train.grad_accum=3", "train.batch_size", "not divisible by grad_accum 3"),
        ("train.frozen_feature_cache_gb=-1", "train.frozen_feature_cache_gb", "finite number >= 0"),
        ("train.frozen_feature_cache_gb=.nan", "train.frozen_feature_cache_gb", "finite number >= 0"),
        ("train.epochs.x=1", "train.epochs.x", "not a section"),
        ("train.epochs", "train.epochs", "section.key=value"),
        ("model.decoder.heads=3", "model.decoder.heads", "divisible"),
        ("model.fusion.dim=48", "model.fusion.dim", "hidden_size"),
        ("model.architecture=transformer", "model.architecture", "hisem, plain"),
        ("model.fusion.experts=4", "model.fusion.experts", "unknown"),
        ("optim.name=sgd", "optim.name", "'adam' | 'adamw'"),
        ("optim.group_lr.decoder=-1", "optim.group_lr.decoder", ">= 0"),
        ("loss.router_weght=1", "loss.router_weght", "unknown key"),
        ("loss.router_weight=-1", "loss.router_weight", ">= 0"),
    ],
)
def test_bad_values_name_file_and_field(tmp_path: Path, override: str, field: str, words: str) -> None:
    path = write(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides=[override])
    err = info.value
    assert err.field == field
    assert str(path) in str(err) and f"'{field}'" in str(err)
    assert words in str(err)
    assert "\n" not in str(err)


def test_yaml_syntax_error_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  epochs: [1, 2\n  batch_size: 4\n", model=False)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and "invalid YAML" in msg and "line" in msg
    assert "\n" not in msg


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- a\n- b\n", model=False))
    with pytest.raises(ConfigError, match=r"'train'.*expected a mapping"):
        load_config(write(tmp_path, "data: {root: x}\ntrain: 3\n"))


def test_empty_section_means_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "data: {root: x}\nloss:\nmodel:\n", model=False), check_model=False)
    assert cfg.loss == {} and cfg.model == {}
    with pytest.raises(ConfigError, match="'model.architecture'"):
        load_config(write(tmp_path, "data: {root: x}\n", model=False))


def test_frozen_feature_cache_and_compile_exclude_each_other(tmp_path: Path) -> None:
    path = write(tmp_path)
    with pytest.raises(ConfigError, match="train.frozen_feature_cache_gb.*cannot be combined with train.compile"):
        load_config(path, overrides=["train.frozen_feature_cache_gb=2", "train.compile=true"])
    assert load_config(path, overrides=["train.frozen_feature_cache_gb=2"]).train.frozen_feature_cache_gb == 2.0
