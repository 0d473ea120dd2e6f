"""Stand-ins named in configs (``standin:FILE``): the cache folder, the key, the one-line error and the command it
names, building and reusing them, and a training run that starts from one and saves a self-contained model."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from changecap.cli.main import main
from changecap.engine.pretrain import build_standins
from changecap.engine.standins import (
    CACHE_ENV,
    find_standins,
    resolve_standins,
    standin_cache,
)
from changecap.errors import ConfigError
from tests.data.single_date_fakes import make_synthcc_single_dates
from tests.models.foundations.tiny_targets import TINY_CLIP


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_torch_thread: None) -> Path:
    """Every test gets its own stand-in cache."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def pretrain_config(path: Path, target: str, model: dict[str, Any], **train: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "target": target,
        "data": {"root": "data/synthcc", "image_size": 16, "holdout": 0.2},
        "model": model,
        "schedule": {"warmup_steps": 1},
        "train": {"epochs": 1, "batch_size": 5, "device": "cpu", "output_dir": "runs/x", **train},
        "logging": {"progress": False},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_cache_folder_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert standin_cache() == tmp_path / "cache" / "standins"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert standin_cache() == tmp_path / "xdg" / "changecap" / "standins"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert standin_cache() == tmp_path / "home" / ".cache" / "changecap" / "standins"


def test_a_missing_stand_in_names_its_command_which_builds_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_synthcc_single_dates(tmp_path / "synthcc")
    pretrain_config(tmp_path / "configs" / "pretrain" / "clip.yaml", "clip", TINY_CLIP)
    source = tmp_path / "configs" / "system.yaml"
    section = {"encoder": {"pretrained": "standin:pretrain/clip.yaml", "trainable_layers": 1}}
    with pytest.raises(ConfigError) as e:
        resolve_standins(section, root, source)
    message = str(e.value)
    assert e.value.field == "model.encoder.pretrained" and e.value.path == str(source) and "\n" not in message
    command = message.split("build it with: ")[1]
    argv = shlex.split(command)
    assert argv[:3] == ["changecap", "pretrain", "clip"] and str(tmp_path / "cache" / "standins" / "clip-") in command
    assert main(argv[1:]) == 0
    folder = Path(argv[argv.index("--output-dir") + 1])
    resolved = resolve_standins(section, root, source)
    assert resolved == {"encoder": {"pretrained": str(folder), "trainable_layers": 1}}
    assert section["encoder"]["pretrained"] == "standin:pretrain/clip.yaml"  # the caller's section is left alone
    capsys.readouterr()
    build_standins(section, root, source)
    assert "reusing" in capsys.readouterr().out


def test_the_key_follows_the_config_and_the_data_not_their_place(tmp_path: Path) -> None:
    root = make_synthcc_single_dates(tmp_path / "synthcc")
    config = pretrain_config(tmp_path / "clip.yaml", "clip", TINY_CLIP)
    section = {"x": "standin:clip.yaml"}

    def key(data: Path = root) -> str:
        (plan,) = find_standins(section, data, tmp_path / "system.yaml")
        return plan.directory.name

    first = key()
    assert first.startswith("clip-") and key() == first
    shutil.copytree(root, tmp_path / "moved")
    assert key(tmp_path / "moved") == first  # the data's identity, not its path
    pretrain_config(config, "clip", TINY_CLIP, output_dir="elsewhere")
    assert key() == first  # where a run would write is not part of it
    pretrain_config(config, "clip", TINY_CLIP, epochs=2)
    assert key() != first
    pretrain_config(config, "clip", TINY_CLIP)
    doc = yaml.safe_load(config.read_text())
    doc["data"]["documents"] = False  # a field added later, at the value that keeps the old behaviour
    config.write_text(yaml.safe_dump(doc))
    assert key() == first  # stand-ins cached before the field existed stay valid
    doc["data"]["documents"] = True
    config.write_text(yaml.safe_dump(doc))
    assert key() != first
    pretrain_config(config, "clip", TINY_CLIP)
    doc = json.loads((root / "scene_captions.json").read_text())
    doc["images"][0]["sentences"][0] = "another caption"
    (root / "scene_captions.json").write_text(json.dumps(doc))
    assert key() != first


def test_stand_ins_that_need_stand_ins_and_a_cycle(tmp_path: Path) -> None:
    root = make_synthcc_single_dates(tmp_path / "synthcc")
    pretrain_config(tmp_path / "p" / "sam.yaml", "sam", {})
    pretrain_config(tmp_path / "p" / "lm.yaml", "lm", {})
    pretrain_config(tmp_path / "p" / "qformer.yaml", "qformer", {"sam": "standin:sam.yaml",
                                                                 "tokenizer": "standin:lm.yaml"})  # fmt: skip
    section = {"caption": {"qformer_pretrained": "standin:p/qformer.yaml", "llm": "standin:p/lm.yaml"}}
    plan, lm = find_standins(section, root, tmp_path / "system.yaml")
    assert [p.target for p in plan.walk()] == ["sam", "lm", "qformer"]
    assert lm.directory == plan.needs[1].directory and (lm.ref, lm.field) == ("standin:p/lm.yaml", "model.caption.llm")
    _, again = find_standins({"a": "standin:p/sam.yaml", "b": "standin:p/qformer.yaml"}, root, tmp_path / "s.yaml")
    assert again.directory == plan.directory  # the key does not depend on what was met first
    with pytest.raises(ConfigError, match=r"stand-in standin:sam.yaml \(needed by standin:p/qformer.yaml\)") as e:
        resolve_standins(section, root, tmp_path / "system.yaml")
    assert e.value.field == "model.caption.qformer_pretrained" and "changecap pretrain sam" in str(e.value)
    pretrain_config(tmp_path / "p" / "lm.yaml", "lm", {"x": "standin:qformer.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        find_standins(section, root, tmp_path / "system.yaml")
    with pytest.raises(ConfigError, match="no pretraining config at"):
        find_standins({"x": "standin:nowhere.yaml"}, root, tmp_path / "system.yaml")


def test_training_from_a_stand_in_saves_a_model_that_needs_no_cache(tmp_path: Path, _cache: Path) -> None:
    from changecap.models.io import load_model
    from changecap.synth import generate_synthcc
    from tests.engine.toy import TINY_MODEL

    root = generate_synthcc(tmp_path / "synthcc", pairs=12, size=32, progress=False)
    vision = {**TINY_CLIP["vision"], "hidden_size": 32, "num_hidden_layers": 2, "image_size": 32}
    clip = {**TINY_CLIP, "vision": vision}
    pretrain_config(tmp_path / "configs" / "pretrain" / "clip.yaml", "clip", clip)
    with open(tmp_path / "configs" / "pretrain" / "clip.yaml") as f:
        doc = yaml.safe_load(f)
    doc["data"].update(image_size=32, resize_mode="resize", normalize="clip", holdout=0.1)
    (tmp_path / "configs" / "pretrain" / "clip.yaml").write_text(yaml.safe_dump(doc))
    encoder = {"pretrained": "standin:pretrain/clip.yaml", "config": {**TINY_MODEL["encoder"]["config"],
               "num_hidden_layers": 2, "intermediate_size": vision["intermediate_size"]}, "trainable_layers": 1}
    system = {
        "data": {"root": str(root), "format": "levir-mci", "image_size": 32, "normalize": "clip",
                 "vocab": {"threshold": 0}, "max_length": "auto"},
        "model": {**TINY_MODEL, "encoder": encoder},
        "loss": {"router_warmup_epochs": 0, "gt_routing_until_epoch": 0},
        "train": {"epochs": 1, "batch_size": 4, "max_steps": 2, "val_every": 0, "frozen_feature_cache_gb": 0.01,
                  "output_dir": str(tmp_path / "run")},
        "logging": {"progress": False},
    }  # fmt: skip
    path = tmp_path / "configs" / "system.yaml"
    path.write_text(yaml.safe_dump(system))
    assert main(["train", str(path)]) == 2  # not built: the one-line error
    assert main(["train", str(path), "--build-standins"]) == 0
    (folder,) = (_cache / "standins").iterdir()
    run_config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert run_config["model"]["encoder"]["pretrained"] == str(folder)  # what was loaded, recorded
    model = load_model(tmp_path / "run" / "last")
    from safetensors.torch import load_file

    saved = load_file(folder / "model.safetensors")
    frozen = model.encoder.vision.state_dict()["encoder.layers.0.mlp.fc1.weight"]
    assert torch.equal(frozen, saved["vision_model.encoder.layers.0.mlp.fc1.weight"])  # the frozen block, as loaded
    shutil.rmtree(_cache)
    again = load_model(tmp_path / "run" / "last")  # the stand-in's weights are in the model's own safetensors
    assert torch.equal(again.encoder.vision.state_dict()["encoder.layers.0.mlp.fc1.weight"], frozen)


def test_a_synthcc_stand_in_on_data_without_single_dates_says_what_to_do(tmp_path: Path) -> None:
    root = make_synthcc_single_dates(tmp_path / "own")
    (root / "scene_captions.json").unlink()  # pairs and captions as a user's own LEVIR-CC-layout set has them
    config = pretrain_config(tmp_path / "configs" / "pretrain" / "clip.yaml", "clip", TINY_CLIP)
    doc = yaml.safe_load(config.read_text())
    doc["data"]["source"] = "synthcc"
    config.write_text(yaml.safe_dump(doc))
    section = {"encoder": {"pretrained": "standin:pretrain/clip.yaml"}}
    with pytest.raises(ConfigError) as e:
        build_standins(section, root, tmp_path / "configs" / "system.yaml")
    message = str(e.value)
    assert e.value.field == "model.encoder.pretrained" and "\n" not in message
    assert "scene_captions.json" in message and "_scratch.yaml" in message and str(root) in message
    assert not (tmp_path / "cache" / "standins").exists() or not any((tmp_path / "cache" / "standins").iterdir())
