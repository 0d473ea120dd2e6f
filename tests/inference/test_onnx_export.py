"""``changecap export onnx`` and the onnxruntime captioner: the same greedy captions and change probabilities as
PyTorch (HiSem and DFM), dynamic batch, the CLI backend, and a one-line error for a model it cannot export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="ONNX export needs onnx")
pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime")

from changecap.cli.main import main  # noqa: E402
from changecap.inference import ChangeCaptioner  # noqa: E402
from changecap.inference.onnx_export import OnnxCaptioner, export_onnx  # noqa: E402


def pairs(n: int, size: int = 40, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    make = lambda: rng.integers(0, 256, (size, size, 3), dtype=np.uint8)  # noqa: E731
    return [make() for _ in range(n)], [make() for _ in range(n)]


@pytest.fixture(scope="module")
def exported(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(model_dir, tmp_path_factory.mktemp("onnx") / "hisem")


def test_onnx_captions_equal_pytorch(exported: Path, model_dir: Path, data_root: Path) -> None:
    ort, pt = OnnxCaptioner(exported), ChangeCaptioner.from_pretrained(model_dir, device="cpu")
    before, after = pairs(7)  # batch 7 through graphs exported at batch 2: the batch axis is dynamic
    images = sorted((data_root / "images" / "test" / "A").iterdir())
    before += [str(p) for p in images]
    after += [str(p).replace("/A/", "/B/") for p in images]
    got, want = ort(before, after, batch_size=16), pt(before, after, batch_size=16)
    assert [r.caption for r in got] == [r.caption for r in want]
    assert [r.tokens for r in got] == [r.tokens for r in want]
    np.testing.assert_allclose([r.change_probability for r in got], [r.change_probability for r in want], atol=1e-5)
    assert len({r.caption for r in want}) > 1 or len(want) < 3  # not a trivially constant check


def test_dfm_exports_too(tmp_path: Path) -> None:
    from changecap.data.vocab import Vocabulary
    from changecap.models import PreprocessConfig, build_model, config_from_dict, save_model
    from tests.models.dfm.conftest import WORDS, tiny

    torch.manual_seed(0)
    model = build_model(config_from_dict(tiny())).eval()
    folder = save_model(model, None, Vocabulary.build([WORDS[:12]], threshold=0), tmp_path / "dfm")
    PreprocessConfig(image_size=32, resize_mode="resize").save(folder)
    ort = OnnxCaptioner(export_onnx(folder, tmp_path / "onnx"))
    pt = ChangeCaptioner.from_pretrained(folder, device="cpu")
    before, after = pairs(3, 32, seed=5)
    got, want = ort(before, after), pt(before, after)
    assert [r.tokens for r in got] == [r.tokens for r in want]
    assert all(r.change_probability is None for r in got)


def test_cli_export_and_backend(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    out = tmp_path / "onnx"
    assert main(["export", "onnx", "--model", str(model_dir), "--out", str(out)]) == 0
    assert {"encoder.onnx", "decoder_step.onnx", "onnx_config.json", "vocab.json"} <= {p.name for p in out.iterdir()}
    before, after = pairs(1)
    Image.fromarray(before[0]).save(tmp_path / "b.png")
    Image.fromarray(after[0]).save(tmp_path / "a.png")
    capsys.readouterr()
    argv = ["caption", str(tmp_path / "b.png"), str(tmp_path / "a.png"), "--json"]
    assert main([*argv, "--model", str(out), "--backend", "onnx"]) == 0
    onnx_answer = json.loads(capsys.readouterr().out)
    assert main([*argv, "--model", str(model_dir), "--device", "cpu"]) == 0
    torch_answer = json.loads(capsys.readouterr().out)
    assert onnx_answer["caption"] == torch_answer["caption"] and onnx_answer["tokens"] == torch_answer["tokens"]
    # the exported graphs run as they are: a lower precision is for the PyTorch backend
    assert main([*argv, "--model", str(out), "--backend", "onnx", "--precision", "int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--precision int8 goes with --backend torch" in err and len(err.splitlines()) == 1


def test_a_model_without_onnx_graphs_is_refused(scc_dir: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert main(["export", "onnx", "--model", str(scc_dir), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "semantic_cc models provide no ONNX graphs" in err and len(err.splitlines()) == 1
