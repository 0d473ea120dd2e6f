"""Saved model directories: round trip, model card, atomic re-save, shared/non-contiguous tensors, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import changecap
from changecap.data.vocab import Vocabulary
from changecap.errors import ChangeCapError, ConfigError, ModelError
from changecap.models import build_model, load_model, load_model_bundle, save_model
from changecap.models.hisem import HiSem, tiny_config
from changecap.models.io import CONFIG_FILE, FORMAT_TAG, VOCAB_FILE, WEIGHTS_FILE

WORDS = ["a", "building", "road", "house", "the", "is", "are", "new", "built", "scene", "same", "before", "there"]
WORDS += ["no", "change"]


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.build([WORDS], threshold=0)


def _model(vocab: Vocabulary, **kw: Any) -> HiSem:
    torch.manual_seed(0)
    return build_model(tiny_config(len(vocab), image_size=32, patch_size=8, dim=32, **kw)).eval()


def _images() -> torch.Tensor:
    return torch.randn(3, 2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def saved(tmp_path: Path, vocab: Vocabulary) -> Path:
    model = _model(vocab)
    return save_model(model, model.config, vocab, tmp_path / "model")


@pytest.mark.parametrize("kw", [{}, {"architecture": "plain"}])
def test_round_trip_gives_identical_captions(tmp_path: Path, vocab: Vocabulary, kw: dict[str, Any]) -> None:
    model = _model(vocab, **kw)
    out = save_model(model, model.config, vocab, tmp_path / "m")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE]
    loaded, config, vocab2 = load_model_bundle(out)
    assert not loaded.training
    assert config == model.config and loaded.config is config
    assert vocab2 == vocab and loaded.vocab == vocab
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    images = _images()
    assert loaded.caption(images)[0] == model.caption(images)[0]
    assert loaded.caption(images, beam_size=2)[0] == model.caption(images, beam_size=2)[0]


def test_saved_models_get_the_umask_modes_and_leave_no_temporary(tmp_path: Path, vocab: Vocabulary) -> None:
    import os

    from changecap.models import PreprocessConfig

    model = _model(vocab)
    old_umask = os.umask(0o027)
    try:
        out = save_model(model, model.config, vocab, tmp_path / "m")  # a new folder
        (out / "notes.txt").write_text("mine")
        save_model(model, model.config, vocab, out)  # into the existing one, file by file
        PreprocessConfig(image_size=32).save(out)
    finally:
        os.umask(old_umask)
    names = ["README.md", CONFIG_FILE, WEIGHTS_FILE, "notes.txt", "preprocess.json", VOCAB_FILE]
    assert sorted(p.name for p in out.iterdir()) == names and [p.name for p in tmp_path.iterdir()] == ["m"]
    assert out.stat().st_mode & 0o777 == 0o750  # not a temporary folder's 0700
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.name != "notes.txt"} == dict.fromkeys(
        set(names) - {"notes.txt"}, 0o640
    )  # safetensors writes 0600, temporary files are created 0600


def test_model_without_backbone_round_trip(tmp_path: Path, vocab: Vocabulary) -> None:
    model = _model(vocab, encoder=False)
    loaded = load_model(save_model(model, model.config, vocab, tmp_path / "m"))
    assert loaded.encoder is None
    f = torch.randn(2, 16, 32)
    assert loaded.caption_features(f, f.flip(0))[0] == model.caption_features(f, f.flip(0))[0]


def test_package_level_load_model(saved: Path) -> None:
    model = changecap.load_model(str(saved))
    assert isinstance(model, HiSem) and model.vocab is not None and model.config.architecture == "hisem"


def test_config_json_and_card(tmp_path: Path, vocab: Vocabulary) -> None:
    model = _model(vocab)
    card = {
        "title": "HiSem tiny",
        "training_data": "SynthCC train split",
        "metrics": {"BLEU-4": 0.123, "CIDEr-D": 1.5},
        "protocol": "greedy, id strings",
        "seed": 7,
    }
    out = save_model(model, model.config, vocab, tmp_path / "m", card=card)
    payload = json.loads((out / CONFIG_FILE).read_text())
    assert payload["format"] == FORMAT_TAG and payload["format_version"] == 2 and payload["architecture"] == "hisem"
    assert payload["changecap_version"] == changecap.__version__
    assert payload["model"] == model.config.to_dict()
    text = (out / "README.md").read_text()
    assert text.startswith("# HiSem tiny")
    total = sum(p.numel() for p in model.parameters())
    assert f"**{total:,}**" in text
    for needle in ("SynthCC train split", "| BLEU-4 | 0.123 |", "greedy, id strings", "**seed**: 7", "Vocabulary: 19"):
        assert needle in text
    assert json.loads((out / VOCAB_FILE).read_text()) == vocab.word_to_id


def test_resave_into_existing_directory_keeps_other_files(saved: Path, vocab: Vocabulary) -> None:
    (saved / "preprocess.json").write_text("{}")
    model = _model(vocab)
    with torch.no_grad():
        model.decoder.output_proj.bias.fill_(0.5)
    save_model(model, model.config, vocab, saved)
    assert (saved / "preprocess.json").read_text() == "{}"
    assert not [p for p in saved.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    assert torch.all(load_model(saved).decoder.output_proj.bias == 0.5)


def test_shared_and_non_contiguous_tensors_are_saved(tmp_path: Path, vocab: Vocabulary) -> None:
    model = _model(vocab)
    model.decoder.output_proj.weight = model.decoder.word_embedding.weight  # tied: one storage, two names
    with torch.no_grad():
        w = model.decoder.layers[0].linear1.weight
        model.decoder.layers[0].linear1.weight = torch.nn.Parameter(w.t().contiguous().t())  # non-contiguous view
    assert not model.decoder.layers[0].linear1.weight.is_contiguous()
    out = save_model(model, model.config, vocab, tmp_path / "m")
    loaded = load_model(out)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_weights_are_plain_safetensors(saved: Path) -> None:
    state = load_file(str(saved / WEIGHTS_FILE))
    assert "decoder.output_proj.weight" in state and "encoder.vision.post_layernorm.weight" in state
    assert any(k.startswith("fusion.") for k in state)


# ------------------------------------------------------------------------------------------------ errors
def _raises(path: Path, exc: type[ChangeCapError], match: str) -> None:
    with pytest.raises(exc, match=match) as info:
        load_model(path)
    assert "\n" not in str(info.value)


def test_missing_directory_and_files(saved: Path, tmp_path: Path) -> None:
    _raises(tmp_path / "nope", ModelError, "model directory not found")
    for name, what in ((WEIGHTS_FILE, "model weights"), (VOCAB_FILE, "vocabulary"), (CONFIG_FILE, "not a saved")):
        (saved / name).rename(saved / (name + ".bak"))
        _raises(saved, ModelError, f"{name}: missing.*{what}")
        (saved / (name + ".bak")).rename(saved / name)


def test_unparsable_or_foreign_config(saved: Path) -> None:
    path = saved / CONFIG_FILE
    good = path.read_text()
    path.write_text("{not json")
    _raises(saved, ModelError, "config.json: not valid JSON")
    path.write_text(json.dumps({"format": "other"}))
    _raises(saved, ModelError, "field 'format' must be 'changecap-model'")
    payload = json.loads(good)
    payload["format_version"] = 99
    path.write_text(json.dumps(payload))
    _raises(saved, ModelError, "format_version 99")
    payload = json.loads(good)
    payload["model"]["decoder"]["heads"] = 5
    path.write_text(json.dumps(payload))
    _raises(saved, ConfigError, r"config.json: config field 'model.decoder.heads'")


def test_vocabulary_size_mismatch(saved: Path, vocab: Vocabulary) -> None:
    Vocabulary.build([WORDS[:-2]], threshold=0).save(saved / VOCAB_FILE)
    n = len(vocab)
    _raises(saved, ModelError, f"vocab.json has {n - 2} entries but the checkpoint's decoder expects {n}")
    model = _model(vocab)
    with pytest.raises(ModelError, match=f"vocabulary has {n - 2} entries"):
        save_model(model, model.config, Vocabulary.build([WORDS[:-2]], threshold=0), saved)


def test_weights_mismatch_names_the_key(saved: Path) -> None:
    path = saved / WEIGHTS_FILE
    state = load_file(str(path))
    missing = dict(state)
    del missing["decoder.output_proj.bias"]
    save_file(missing, str(path))
    _raises(saved, ModelError, "missing tensor 'decoder.output_proj.bias'")
    save_file({**state, "decoder.extra": torch.zeros(1)}, str(path))
    _raises(saved, ModelError, "unexpected tensor 'decoder.extra'")
    save_file({**state, "decoder.output_proj.bias": torch.zeros(3)}, str(path))
    _raises(saved, ModelError, r"tensor 'decoder.output_proj.bias' has shape \[3\] but .* expects \[19\]")
    path.write_bytes(b"garbage")
    _raises(saved, ModelError, "cannot read safetensors file")
