"""Model directories written by changecap 0.1 (format_version 1, no top-level ``architecture``) still load, and
compute exactly what they computed then.

``tests/models/data/{hisem,plain}_v0.1/`` were written by ``save_model`` of changecap 0.1.0 (commit 392b5cf, before
the model-zoo restructuring) from tiny random-init models; ``v0.1_expected.json`` holds that version's outputs on a
fixed input: greedy tokens, change probabilities, router logits and the first teacher-forced logits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from changecap.errors import ConfigError, ModelError
from changecap.inference import ChangeCaptioner
from changecap.models import load_model, save_model
from changecap.models.hisem import HiSem, HiSemConfig, PlainConfig

DATA = Path(__file__).parent / "data"
EXPECTED = json.loads((DATA / "v0.1_expected.json").read_text())


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.randn(2, 2, 3, 32, 32, generator=g)
    tokens = torch.tensor([[2, 4, 5, 6, 3, 0], [2, 7, 8, 3, 0, 0]])
    return image, tokens


@pytest.mark.parametrize(("name", "config_class"), [("hisem", HiSemConfig), ("plain", PlainConfig)])
def test_v0_1_directories_load_and_compute_as_before(name: str, config_class: type) -> None:
    folder = DATA / f"{name}_v0.1"
    assert json.loads((folder / "config.json").read_text())["format_version"] == 1
    model = load_model(folder)
    assert isinstance(model, HiSem) and isinstance(model.config, config_class)
    image, tokens = _inputs()
    expected = EXPECTED[name]
    with torch.no_grad():
        seqs, prob = model.caption(image, max_length=12)
        out = model(image, tokens)
    assert seqs == expected["tokens"]
    assert torch.allclose(out.logits[0, :3], torch.tensor(expected["logits_first_row"]), atol=1e-5)
    if name == "hisem":
        assert torch.allclose(prob, torch.tensor(expected["change_probability"]), atol=1e-6)
        assert torch.allclose(out.router_logits, torch.tensor(expected["router_logits"]), atol=1e-5)
    else:
        assert prob is None


def test_v0_1_directory_captions_through_the_predictor_and_resaves_as_v2(tmp_path: Path) -> None:
    captioner = ChangeCaptioner.from_pretrained(DATA / "hisem_v0.1", device="cpu")
    assert isinstance(captioner(torch.rand(3, 32, 32), torch.rand(3, 32, 32)).caption, str)
    model = load_model(DATA / "hisem_v0.1")
    out = save_model(model, None, model.vocab, tmp_path / "v2")
    payload = json.loads((out / "config.json").read_text())
    assert payload["format_version"] == 2 and payload["architecture"] == "hisem"
    again = load_model(out)
    assert again.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_config_json_errors_name_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(DATA / "hisem_v0.1", folder)
    path = folder / "config.json"
    payload = json.loads(path.read_text())

    payload["model"]["architecture"] = "transformer"
    path.write_text(json.dumps(payload))
    with pytest.raises(ConfigError, match="model.architecture") as e:
        load_model(folder)
    assert str(path) in str(e.value) and "hisem" in str(e.value)

    payload["model"]["architecture"] = "hisem"
    payload.update(format_version=2, architecture="plain")
    path.write_text(json.dumps(payload))
    with pytest.raises(ModelError, match="'architecture' is 'plain' but 'model.architecture' is 'hisem'"):
        load_model(folder)

    payload.update(format_version=3)
    path.write_text(json.dumps(payload))
    with pytest.raises(ModelError, match="format_version 3 is not supported"):
        load_model(folder)
