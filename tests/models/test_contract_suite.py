"""The contract suite: every registered system — the registry's (``architecture_names()``) and those the tests
register (``conftest.TEST_SYSTEMS``) — through every surface, on its own tiny config (``Architecture.tiny_config``)
and a tiny SynthCC set.

Per system, trained once (module-scoped ``run``: one epoch of one batch through the real trainer, validation
included) and the saved ``best/`` folder reused by every surface: build from the tiny config, the training update,
``predict`` (outputs and decoding options as declared), save → load bit-identical, ``changecap summary`` on the meta
device, ``evaluate`` and its HTML report, ``ChangeCaptioner``, ONNX export and onnxruntime parity (or its one-line
refusal), ``POST /api/caption`` through FastAPI's test client, and ``changecap scene`` on a tiny GeoTIFF pair. A
system added to the registry is in every test here without any edit to this file.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from changecap.cli.main import main
from changecap.data.vocab import Vocabulary
from changecap.engine import TrainConfig, TrainResult, train
from changecap.engine.model_setup import default_model_builder
from changecap.errors import ModelError
from changecap.inference import ChangeCaptioner
from changecap.inference.predictor import preprocess_pair
from changecap.models import architecture_names, config_from_dict, get_architecture, load_model, save_model
from changecap.models.contract import ChangeModel, Prediction, Sampling
from changecap.models.registry import ARCHITECTURES
from changecap.synth import generate_synthcc
from tests.models.conftest import TEST_SYSTEMS, registered_test_systems

with registered_test_systems() as TEST_SYSTEM_NAMES:
    SYSTEMS = architecture_names()  # the registry at collection time: one set of tests per system

TINY_SECTIONS = {"data", "model", "loss", "train"}  # what a tiny config may hold
SCENE_SIZE = (80, 100)  # rows, columns of the GeoTIFF pair


@dataclass
class Run:
    """One system trained on the tiny set: its registry name, the training result and the folder every surface
    reads (``best/``)."""

    name: str
    result: TrainResult
    model_dir: Path


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def images_for(model: ChangeModel, n: int = 3, seed: int = 0) -> torch.Tensor:
    side = model.image_size
    assert side is not None
    return torch.randn(n, 2, 3, side, side, generator=torch.Generator().manual_seed(seed))  # [B, 2, 3, S, S]


def pair_arrays(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return tuple(rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(2))  # type: ignore[return-value]


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def split_names(data_root: Path) -> list[str]:
    return sorted(p.name for p in (data_root / "images" / "test" / "A").iterdir())


def assert_declared(out: Prediction, name: str) -> None:
    """Every output the architecture declares is there, and no other."""
    can = get_architecture(name).capabilities
    assert (out.texts is not None) == (out.tokens is not None) == can.captions, name
    assert (out.change_probability is not None) == can.change_probability, name
    assert (out.mask is not None) == (out.mask_logits is not None) == can.change_mask, name


def assert_one_line(error: BaseException, *words: str) -> None:
    text = str(error)
    assert "\n" not in text and all(w in text for w in words), text


# ---------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def synthcc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """14 SynthCC pairs of 32 px (9 train, 2 val, 3 test), with captions and change masks."""
    return generate_synthcc(tmp_path_factory.mktemp("synthcc") / "tiny", pairs=14, size=32, seed=0, preset="tiny",
                            progress=False)  # fmt: skip


@pytest.fixture(scope="module", params=SYSTEMS)
def system(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def training_config(name: str, data_root: Path, out: Path) -> TrainConfig:
    """The system's tiny config over the tiny set: one epoch of one batch, validated at its end."""
    tiny = get_architecture(name).tiny_config()  # type: ignore[misc]
    data = {"root": str(data_root), "format": "levir-mci", "normalize": "clip", "vocab": {"threshold": 0},
            "max_length": "auto", **tiny.get("data", {})}  # fmt: skip
    run = {"epochs": 1, "batch_size": 16, "val_batch_size": 16, "seed": 0, "output_dir": str(out),
           **tiny.get("train", {})}  # fmt: skip
    return TrainConfig.from_dict({"data": data, "model": tiny["model"], "loss": tiny.get("loss", {}),
                                  "optim": {"name": "adamw", "lr": 1e-3}, "train": run,
                                  "logging": {"progress": False, "log_every": 1}})  # fmt: skip


@pytest.fixture(scope="module")
def run(system: str, synthcc: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The system trained once (every surface test of the system reads its folder)."""
    if get_architecture(system).tiny_config is None:
        pytest.fail(f"architecture {system!r} declares no tiny_config (Architecture(tiny_config=...))")
    folder = tmp_path_factory.mktemp(system)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as every model test (one_torch_thread): xdist already uses every core
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("XDG_CACHE_HOME", str(folder / "cache"))  # a system's caches (DFM's caption embeddings)
            result = train(training_config(system, synthcc, folder / "run"))
        yield Run(system, result, result.best_dir)
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------------- the zoo
def test_the_suite_runs_every_registered_system() -> None:
    assert architecture_names() == SYSTEMS  # the test systems are registered while tests/models runs
    assert set(SYSTEMS) == set(ARCHITECTURES) | set(TEST_SYSTEM_NAMES) and TEST_SYSTEM_NAMES


def test_a_test_system_is_its_package_and_one_registry_line() -> None:
    """Nothing outside a test system's package names it but its one entry in ``TEST_SYSTEMS``."""
    tests = Path(__file__).resolve().parents[1]
    repo = tests.parent
    for entry in TEST_SYSTEMS:
        module = entry.partition(":")[0]
        package = repo / Path(*module.split("."))
        assert (package / "__init__.py").is_file(), entry
        mentions = [
            (path.relative_to(repo).as_posix(), line)
            for root in (tests, repo / "src")
            for path in root.rglob("*.py")
            if package not in path.parents
            for line in path.read_text(encoding="utf-8").splitlines()
            if module in line
        ]
        assert mentions == [("tests/models/conftest.py", f'    "{entry}",')], mentions


# ---------------------------------------------------------------------------------------------------------- surfaces
def test_builds_from_its_tiny_config(system: str) -> None:
    spec = get_architecture(system)
    assert spec.tiny_config is not None, f"architecture {system!r} declares no tiny_config"
    tiny = spec.tiny_config()
    assert set(tiny) <= TINY_SECTIONS and tiny["model"]["architecture"] == system
    vocab = Vocabulary.build([["a", "house", "is", "built"]], threshold=0)
    model, config = default_model_builder(tiny["model"], vocab, 12)
    assert isinstance(model, ChangeModel) and model.architecture == system
    assert model.capabilities == spec.capabilities and model.config is not None
    assert config_from_dict(config.to_dict()) == config  # the config round-trips
    assert isinstance(model.image_size, int) and model.image_size > 0
    assert sum(p.numel() for p in model.parameters()) < 1_000_000  # tiny: trains in a second on one CPU thread


def test_one_training_update_through_the_trainer(run: Run) -> None:
    result = run.result
    assert result.finished and result.global_step >= 1 and result.best_dir == result.output_dir / "best"
    records = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    trains = [r for r in records if r["kind"] == "train"]
    assert len(trains) >= 1 and all(math.isfinite(r["loss"]) for r in trains)
    [val] = [r for r in records if r["kind"] == "val"]  # validation ran through the model's predict
    assert math.isfinite(val[result.select_metric])
    names = {p.name for p in run.model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "preprocess.json", "README.md"} <= names
    assert json.loads((run.model_dir / "config.json").read_text())["architecture"] == run.name


def test_predict_is_the_one_entry_point_and_honours_every_option(run: Run) -> None:
    model = load_model(run.model_dir).eval()
    can = model.capabilities
    images = images_for(model)
    out = model.predict(images)
    assert_declared(out, run.name)
    assert len(out) == 3
    side = model.image_size
    if can.change_probability:
        assert out.change_probability.shape == (3,) and bool(((out.change_probability >= 0)
                                                              & (out.change_probability <= 1)).all())  # fmt: skip
    if can.change_mask:
        assert out.mask.shape == (3, side, side) and set(out.mask.unique().tolist()) <= {0, 1}
        assert out.mask_logits.shape[0] == 3 and out.mask_logits.shape[-2:] == (side, side)
    if not can.captions:
        with pytest.raises(ModelError) as e:
            model.predict(images, beam_size=2)
        assert_one_line(e.value, run.name, "writes no captions")
        return
    assert all(isinstance(t, str) for t in out.texts) and all(len(t) >= 2 for t in out.tokens)
    short = model.predict(images, max_length=2)  # max_length reaches the decoder
    assert all(len(a) <= len(b) for a, b in zip(short.tokens, out.tokens, strict=True))
    if can.beam_search:
        beams = model.predict(images, beam_size=2)
        assert_declared(beams, run.name)
        assert len(beams.texts) == 3
    else:
        with pytest.raises(ModelError) as e:
            model.predict(images, beam_size=2)
        assert_one_line(e.value, run.name, "beam")
    if can.sampling:
        draws = [model.predict(images, sampling=Sampling(top_p=0.9, seed=3)).tokens for _ in range(2)]
        assert draws[0] == draws[1]  # the seed fixes the draw
    else:
        with pytest.raises(ModelError) as e:
            model.predict(images, sampling=Sampling())
        assert_one_line(e.value, run.name, "sampling")
    if can.attention_maps:  # one row per word of each caption, over a square grid (normalise checks the shapes)
        looked = model.predict(images, attention_maps=True)
        assert looked.tokens == out.tokens and out.attention_maps is None
        for text, maps in zip(looked.texts, looked.attention_maps, strict=True):
            assert maps.shape[0] == len(text.split()) and torch.allclose(maps.sum(-1), torch.ones(len(maps)))
    else:
        with pytest.raises(ModelError) as e:
            model.predict(images, attention_maps=True)
        assert_one_line(e.value, run.name, "attention maps")


def test_save_and_reload_give_bit_identical_outputs(run: Run, tmp_path: Path) -> None:
    model = load_model(run.model_dir).eval()
    images = images_for(model, seed=1)
    before = model.predict(images)
    copy = save_model(model, model.config, model.vocab, tmp_path / "copy")
    again = load_model(copy).eval()
    saved, reread = load_file(str(run.model_dir / "model.safetensors")), load_file(str(copy / "model.safetensors"))
    assert saved.keys() == reread.keys() and all(torch.equal(saved[k], reread[k]) for k in saved)
    after = again.predict(images)
    assert after.tokens == before.tokens and after.texts == before.texts
    for name in ("change_probability", "mask_logits", "mask"):
        a, b = getattr(before, name), getattr(after, name)  # a field of the Prediction dataclass
        assert (a is None and b is None) or torch.equal(a, b), name


def test_summary_runs_on_the_meta_device(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``changecap summary`` of the saved folder without its weights file: nothing is loaded, yet the counts are
    the real model's."""
    folder = shutil.copytree(run.model_dir, tmp_path / "no_weights")
    (folder / "model.safetensors").unlink()
    capsys.readouterr()
    assert main(["summary", str(folder), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    model = load_model(run.model_dir)
    assert summary["architecture"] == run.name and summary["capabilities"] == model.capabilities.names()
    assert summary["total"] == sum(p.numel() for p in model.parameters())


def test_evaluate_a_tiny_dataset_and_its_report(run: Run, synthcc: Path, tmp_path: Path) -> None:
    from changecap.inference import evaluate_model, write_html_report

    can = get_architecture(run.name).capabilities
    ev = evaluate_model(run.model_dir, synthcc, "levir-mci", "test", out_dir=tmp_path / "eval", meteor="off",
                        batch_size=2, device="cpu", progress=False)  # fmt: skip
    names = split_names(synthcc)
    assert Path(ev.files["metrics"]).is_file() and Path(ev.files["predictions"]).is_file()
    if can.captions:
        assert sorted(ev.predictions) == names and set(ev.results) == {"rsicc", "coco"}
        assert math.isfinite(ev.result.scores["Bleu_4"])
        captioner = ChangeCaptioner.from_pretrained(run.model_dir, device="cpu")
        pair = synthcc / "images" / "test"
        first = captioner(pair / "A" / names[0], pair / "B" / names[0])
        assert ev.predictions[names[0]] == first.caption  # the predictor's caption of that pair
        assert all((p is not None) == can.change_probability for p in ev.change_probability.values())
    else:
        assert ev.predictions == {} and ev.results == {}
    if can.change_mask:
        assert sorted(ev.masks) == names and ev.change_detection is not None  # SynthCC has masks
        assert len(list(Path(ev.files["masks"]).glob("*.png"))) == len(names)
    else:
        assert ev.masks == {} and ev.change_detection is None
    page = write_html_report(tmp_path / "report.html", evaluation=ev, data_root=synthcc, fmt="levir-mci",
                             split="test", num_examples=2).read_text()  # fmt: skip
    assert page.startswith("<!doctype html>") and page.count('<div class="card">') == 2


def test_change_captioner(run: Run) -> None:
    captioner = ChangeCaptioner.from_pretrained(run.model_dir, device="cpu")
    can = captioner.capabilities
    assert captioner.architecture == run.name and can == get_architecture(run.name).capabilities
    before, after = pair_arrays(40, 56, seed=2)
    res = captioner(before, after)
    assert (res.caption is not None) == can.captions and (res.change_probability is not None) == can.change_probability
    assert (res.mask is not None) == can.change_mask
    if can.change_mask:
        assert res.mask.shape == (40, 56) and res.mask.dtype == np.uint8  # at the images' size
    # the caller's decoding options reach the model's predict
    options: dict[str, Any] = {"max_length": 3, "beam_size": 2 if can.beam_search else None}
    if can.captions:
        got = captioner(before, after, **options)
        pairs = preprocess_pair(before, after, captioner.preprocess)[None]  # [1, 2, 3, S, S]
        want = captioner.model.predict(pairs, **options)
        assert got.tokens == want.tokens[0] and got.caption == want.texts[0]
    else:  # an option the model cannot honour is refused, never dropped
        with pytest.raises(ModelError) as e:
            captioner(before, after, beam_size=2)
        assert_one_line(e.value, run.name)


def test_onnx_export_matches_pytorch_where_declared(run: Run, tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="ONNX export needs onnx")
    pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime")
    from changecap.inference.onnx_export import OnnxCaptioner, export_onnx

    can = get_architecture(run.name).capabilities
    if not can.onnx:  # a system that declares no graphs is refused in one line, by name
        with pytest.raises(ModelError) as e:
            export_onnx(run.model_dir, tmp_path / "onnx")
        assert_one_line(e.value, f"{run.name} models provide no ONNX graphs")
        assert not (tmp_path / "onnx").exists()
        return
    ort = OnnxCaptioner(export_onnx(run.model_dir, tmp_path / "onnx"))
    pt = ChangeCaptioner.from_pretrained(run.model_dir, device="cpu")
    assert set(ort.capabilities.names()) <= set(can.names())
    before, after = zip(*(pair_arrays(40, 40, seed=s) for s in range(3)), strict=True)
    got, want = ort(list(before), list(after)), pt(list(before), list(after))
    assert [r.tokens for r in got] == [r.tokens for r in want] and [r.caption for r in got] == [r.caption for r in want]
    for g, w in zip(got, want, strict=True):
        assert (g.change_probability is None) == (w.change_probability is None)
        if w.change_probability is not None:
            assert g.change_probability == pytest.approx(w.change_probability, abs=1e-5)


def test_serve_answers_post_api_caption(run: Run) -> None:
    pytest.importorskip("fastapi", reason="changecap serve needs the 'serve' extra (FastAPI)")
    pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")
    from fastapi.testclient import TestClient

    from changecap.serve import create_app

    captioner = ChangeCaptioner.from_pretrained(run.model_dir, device="cpu")
    client = TestClient(create_app(captioner, str(run.model_dir)), base_url="http://localhost:8000")
    before, after = pair_arrays(48, 40, seed=4)
    files = {"before": ("b.png", png(before), "image/png"), "after": ("a.png", png(after), "image/png")}
    r = client.post("/api/caption", files=files)
    assert r.status_code == 200, r.text
    body, want = r.json(), captioner(before, after)
    assert body["caption"] == want.caption
    assert body["change_probability"] == (None if want.change_probability is None else
                                          pytest.approx(want.change_probability))  # fmt: skip
    if want.mask is None:
        assert body["mask_png"] is None
    else:
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask_png"]))))
        assert mask.shape == (48, 40) and np.array_equal(mask > 0, want.mask > 0)
    health = client.get("/api/health").json()
    assert health["architecture"] == run.name and health["capabilities"] == captioner.capabilities.names()


def write_geotiff(path: Path, seed: int) -> Path:
    """A 3-band uint8 GeoTIFF of :data:`SCENE_SIZE` in UTM 33N, 10 m pixels."""
    import rasterio
    from rasterio.transform import from_origin

    rows, cols = SCENE_SIZE
    data = np.random.default_rng(seed).integers(1, 255, (3, rows, cols)).astype("uint8")
    profile = {"driver": "GTiff", "height": rows, "width": cols, "count": 3, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": from_origin(500_000.0, 4_100_000.0, 10.0, 10.0)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def test_scene_captions_a_tiny_geotiff_pair(run: Run, tmp_path: Path) -> None:
    pytest.importorskip("rasterio", reason="changecap scene needs the 'geo' extra (rasterio)")
    can = get_architecture(run.name).capabilities
    before, after = write_geotiff(tmp_path / "before.tif", 1), write_geotiff(tmp_path / "after.tif", 2)
    out = tmp_path / "scene"
    argv = ["scene", str(before), str(after), "--model", str(run.model_dir), "--out", str(out), "--device", "cpu"]
    assert main([*argv, "--no-progress"]) == 0
    tile = load_model(run.model_dir).image_size  # the model's pair size, without overlap
    rows, cols = SCENE_SIZE
    features = json.loads((out / "changes.geojson").read_text())["features"]
    assert len(features) == math.ceil(rows / tile) * math.ceil(cols / tile)
    for feature in features:
        props = feature["properties"]
        assert isinstance(props["changed"], bool) and ("change_probability" in props) == can.change_probability
        assert isinstance(props.get("caption"), str) == can.captions
    assert (out / "change_mask.tif").exists() == can.change_mask
    assert (out / "report.html").is_file()
    # the first tile's answer is the predictor's answer on that window (uint8 bands are read as they are)
    import rasterio

    window = rasterio.windows.Window(0, 0, tile, tile)
    with rasterio.open(before) as b, rasterio.open(after) as a:
        first = ChangeCaptioner.from_pretrained(run.model_dir, device="cpu")(
            b.read(window=window).transpose(1, 2, 0), a.read(window=window).transpose(1, 2, 0)
        )
    [props] = [f["properties"] for f in features if f["properties"]["tile"] == [0, 0]]
    assert props.get("caption") == first.caption
    if can.change_mask:
        with rasterio.open(out / "change_mask.tif") as m:
            assert np.array_equal(m.read(1, window=window), first.mask)
