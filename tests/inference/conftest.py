"""Fixtures for the inference tests: a tiny saved HiSem (and plain) model directory and a fake LEVIR-MCI set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from changecap.data.annotations import parse_annotations
from changecap.data.vocab import Vocabulary
from changecap.inference import PreprocessConfig
from changecap.models import build_model, config_from_dict, save_model
from changecap.models.hisem import tiny_config
from tests.data.fakes import make_levir
from tests.models.semantic_cc.conftest import WORDS, tiny

IMAGE_SIZE = 32


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every inference test uses the shared ``one_torch_thread`` fixture of ``tests/conftest.py``."""


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fake LEVIR-MCI: 6 train, 4 val, 4 test pairs of 40 px (resized to the model's 32 px)."""
    return make_levir(tmp_path_factory.mktemp("inference") / "mci", "levir-mci", {"train": 6, "val": 4, "test": 4}, 40)


@pytest.fixture(scope="session")
def vocab(data_root: Path) -> Vocabulary:
    records = parse_annotations(data_root, "levir-mci")
    return Vocabulary.from_captions([c for r in records for c in r.captions], threshold=0)


def _save(root: Path, vocab: Vocabulary, architecture: str) -> Path:
    torch.manual_seed(0)
    model = build_model(
        tiny_config(len(vocab), image_size=IMAGE_SIZE, patch_size=8, dim=32, architecture=architecture, max_length=20)
    ).eval()
    out = save_model(model, model.config, vocab, root / architecture)
    PreprocessConfig(image_size=IMAGE_SIZE, resize_mode="resize").save(out)
    return out


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, vocab: Vocabulary) -> Path:
    return _save(tmp_path_factory.mktemp("models"), vocab, "hisem")


@pytest.fixture(scope="session")
def plain_model_dir(tmp_path_factory: pytest.TempPathFactory, vocab: Vocabulary) -> Path:
    return _save(tmp_path_factory.mktemp("models"), vocab, "plain")


@pytest.fixture(scope="session")
def scc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny Semantic-CC (a model with a change-detection head), 64 px."""
    torch.manual_seed(0)
    model = build_model(config_from_dict(tiny()))
    vocab = Vocabulary.build([WORDS], threshold=0)
    model.config.vocab_size = len(vocab)
    out = save_model(model, None, vocab, tmp_path_factory.mktemp("scc") / "model")
    PreprocessConfig(image_size=64, resize_mode="resize", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).save(out)
    return out


@pytest.fixture(scope="session")
def cd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny change detector (masks only, no captions), 64 px."""
    from tests.models.change_detection.test_model import TINY as CD_TINY

    torch.manual_seed(0)
    model = build_model(config_from_dict(CD_TINY))
    vocab = Vocabulary.build([["a"]], threshold=0)
    model.config.vocab_size = len(vocab)
    out = save_model(model, None, vocab, tmp_path_factory.mktemp("cd") / "model")
    PreprocessConfig(image_size=64, resize_mode="resize").save(out)
    return out


@pytest.fixture(scope="session")
def dfm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny DFM (captions, no change probability, no mask), 32 px."""
    from tests.models.dfm.conftest import WORDS as DFM_WORDS
    from tests.models.dfm.conftest import tiny as dfm_tiny

    torch.manual_seed(0)
    model = build_model(config_from_dict(dfm_tiny())).eval()
    vocab = Vocabulary.build([DFM_WORDS[:12]], threshold=0)
    out = save_model(model, None, vocab, tmp_path_factory.mktemp("dfm") / "model")
    PreprocessConfig(image_size=32, resize_mode="resize").save(out)
    return out
