"""Hub-style loading: a local directory or a Hugging Face Hub repo id, offline-aware one-line errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from changecap.errors import ModelError
from changecap.inference import ChangeCaptioner
from changecap.models import load_model
from changecap.models.hub import looks_like_repo_id, resolve_model_dir

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("user/changecap-hisem", True), ("user/model@v1.0", True), ("./runs/best", False), ("/abs/path", False),
     ("runs/a/b", False), ("single", False), ("", False)],
)  # fmt: skip
def test_repo_id_recognition(name: str, expected: bool) -> None:
    assert looks_like_repo_id(name) is expected


def test_a_local_directory_is_used_as_is(tmp_path: Path) -> None:
    assert resolve_model_dir(DATA / "hisem_v0.1") == DATA / "hisem_v0.1"
    with pytest.raises(ModelError, match="model directory not found"):
        resolve_model_dir(tmp_path / "missing" / "dir")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model_dir(tmp_path / "file")


def test_offline_hub_id_not_in_cache_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelError) as e:
        load_model("nobody/changecap-no-such-model")
    text = str(e.value)
    assert "nobody/changecap-no-such-model" in text and "HF_HUB_OFFLINE" in text and "\n" not in text


def test_hub_id_loads_from_the_local_cache_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A model downloaded once (here: laid out by hand as huggingface_hub caches it) loads offline by its id."""
    cache = tmp_path / "cache"
    snapshot = cache / "models--someone--tiny-hisem" / "snapshots" / ("0" * 40)
    shutil.copytree(DATA / "hisem_v0.1", snapshot)
    (cache / "models--someone--tiny-hisem" / "refs").mkdir()
    (cache / "models--someone--tiny-hisem" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = load_model("someone/tiny-hisem")
    assert model.config.architecture == "hisem" and Path(model.model_dir) == snapshot
    captioner = ChangeCaptioner.from_pretrained("someone/tiny-hisem", device="cpu")
    assert captioner.preprocess.image_size == 32  # no preprocess.json: CLIP rule at the encoder's size
