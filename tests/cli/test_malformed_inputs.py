"""Malformed inputs and unusable outputs, command by command (images through each reader, CSVs of pairs,
GeoTIFFs, configs, datasets, caption and prediction JSON, official checkpoints, hostile pickles included, model
folders, arguments): each row builds one bad input in a fresh folder and runs the CLI in-process. Every row must
end with exit status 2 and ONE line on stderr that names the file (or option) and the field, and leave nothing
behind: no temporary file anywhere under the row's folder, and none of the row's outputs created.

Damaged model folders and checkpoints have their own catalogue (``tests/inference/malformed_models.py``, run by
``tests/cli/test_model_inputs_cli.py``) and the web API its table (``UPLOAD_ROWS`` in ``tests/serve/test_api.py``).

To add a row: append a :class:`Row` to ``ROWS`` (or build a list of your own and parametrize over it with
:func:`check_row`). ``make(tmp, ctx)`` writes the bad input under ``tmp`` and returns the command's arguments;
``ctx`` hands out shared good inputs (a tiny saved model, a folder of good pairs, a shipped config, single-date
pretraining data, the references of ``compare``) built once.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from changecap.cli.main import main
from changecap.data import files
from changecap.data.files import is_temp_name
from changecap.data.vocab import Vocabulary
from changecap.inference import PreprocessConfig
from changecap.models import build_model, save_model
from changecap.models.hisem import tiny_config
from tests.conftest import REPO_ROOT
from tests.data.fakes import bomb_png, make_levir

NO_MODEL = "no-model-here"  # a --model that does not exist: a row using it must fail before the model is read


class Ctx:
    """Good inputs shared by the rows, each built on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._model: Path | None = None
        self._dataset: Path | None = None
        self._single_dates: Path | None = None
        self._compare_data: Path | None = None

    @property
    def model(self) -> Path:
        """A tiny saved plain model (32 px), on the CPU."""
        if self._model is None:
            torch.manual_seed(0)
            vocab = Vocabulary.build([["a", "house", "is", "built"]], threshold=0)
            model = build_model(tiny_config(len(vocab), image_size=32, patch_size=8, dim=32, architecture="plain"))
            self._model = save_model(model.eval(), model.config, vocab, self.root / "model")
            PreprocessConfig(image_size=32, resize_mode="resize").save(self._model)
        return self._model

    @property
    def dataset(self) -> Path:
        """A tiny LEVIR-CC set (good)."""
        if self._dataset is None:
            self._dataset = make_levir(self.root / "levir", "levir-cc", {"train": 2, "val": 1, "test": 1}, 16)
        return self._dataset

    @property
    def single_dates(self) -> Path:
        """A tiny SynthCC set with single-date captions and land-cover maps (good), for pretraining."""
        if self._single_dates is None:
            from tests.data.single_date_fakes import make_synthcc_single_dates

            self._single_dates = make_synthcc_single_dates(self.root / "single")
        return self._single_dates

    @property
    def compare_data(self) -> Path:
        """A tiny LEVIR-CC set with three test pairs (good), the references of ``compare``."""
        if self._compare_data is None:
            self._compare_data = make_levir(self.root / "refs", "levir-cc", {"train": 1, "val": 0, "test": 3}, 16)
        return self._compare_data

    def pairs(self, tmp: Path) -> Path:
        """A folder of two good pairs under ``tmp``."""
        rng = np.random.default_rng(0)
        for side in ("A", "B"):
            for name in ("p0.png", "p1.png"):
                png(tmp / "pairs" / side / name, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        return tmp / "pairs"

    def dataset_copy(self, tmp: Path) -> Path:
        """A copy of the good dataset under ``tmp`` (to damage)."""
        import shutil

        return shutil.copytree(self.dataset, tmp / "levir")

    @staticmethod
    def config() -> Path:
        return REPO_ROOT / "configs" / "plain_synthcc_cpu.yaml"


def png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def rgb(tmp: Path, name: str = "rgb.png", size: int = 32) -> Path:
    return png(tmp / name, np.full((size, size, 3), 90, np.uint8))


def truncated_png(path: Path) -> Path:
    """A PNG cut after its header: it opens, and fails when decoded."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
    return text_file(path, buf.getvalue()[:120])


def text_file(path: Path, content: str | bytes = "not an image") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def json_file(path: Path, content: object) -> Path:
    return text_file(path, json.dumps(content))


def tiff(path: Path, arr: np.ndarray) -> Path:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, arr)
    return path


def cut_jpeg(path: Path) -> Path:
    """A JPEG cut halfway through its data."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return text_file(path, buf.getvalue()[: len(buf.getvalue()) // 2])


def geotiff(path: Path, *, crs: str | None = "EPSG:32633", origin: tuple[float, float] = (500_000.0, 4_100_000.0),
            res: float = 10.0, count: int = 3, size: int = 48, nodata_everywhere: bool = False) -> Path:  # fmt: skip
    """A small GeoTIFF scene (UTM 33N, 10 m pixels by default)."""
    import rasterio
    from rasterio.transform import from_origin

    data = np.random.default_rng(0).integers(1, 255, (count, size, size)).astype(np.uint8)
    if nodata_everywhere:
        data[:] = 0
    profile = {"driver": "GTiff", "height": size, "width": size, "count": count, "dtype": "uint8", "crs": crs,
               "transform": from_origin(*origin, res, res), "nodata": 0 if nodata_everywhere else None}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


class Payload:
    """A pickle that would create the folder ``marker`` when unpickled by anything but a weights-only reader."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.makedirs, (str(self.marker),)


def hostile_pickle(path: Path, marker: Path) -> Path:
    torch.save({"encoder_trans_dict": Payload(marker)}, path)
    return path


def read_only_fs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a read-only file system (tests run as root, where permission bits do not stop writes)."""
    monkeypatch.setattr(files.os, "access", lambda path, mode: not mode & os.W_OK)
    monkeypatch.setattr(files, "_read_only_fs", lambda folder: True)


def no_write_permission(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files.os, "access", lambda path, mode: not mode & os.W_OK)
    monkeypatch.setattr(files, "_read_only_fs", lambda folder: False)


@dataclass(frozen=True)
class Row:
    """One malformed input: ``make`` builds it and returns argv; the message must hold every string of
    ``expect`` (``{tmp}`` stands for the row's folder); ``absent`` paths (relative to it) must not exist after."""

    id: str
    make: Callable[[Path, Ctx], list[str]]
    expect: tuple[str, ...]
    absent: tuple[str, ...] = ()
    patch: Callable[[pytest.MonkeyPatch], None] | None = None
    skip_if_missing: tuple[str, ...] = field(default=())  # optional modules the command needs


def caption(tmp: Path, ctx: Ctx, before: Path, after: Path | None = None, *extra: str, model: bool = True) -> list[str]:
    after = after if after is not None else rgb(tmp)
    return ["caption", str(before), str(after), "--model", str(ctx.model if model else tmp / NO_MODEL),
            "--device", "cpu", *extra]  # fmt: skip


def pairs(tmp: Path, ctx: Ctx, source: Path, *extra: str, model: bool = True) -> list[str]:
    return ["caption", "--pairs", str(source), "--model", str(ctx.model if model else tmp / NO_MODEL),
            "--device", "cpu", "--no-progress", *extra]  # fmt: skip


def train(tmp: Path, ctx: Ctx, config: Path, *extra: str) -> list[str]:
    return ["train", str(config), "--set", "data.root=" + str(tmp / "no-data"), *extra]


def train_on_data(tmp: Path, ctx: Ctx, *extra: str) -> list[str]:
    """``train`` with the shipped CPU config on the good tiny dataset, run folder under ``tmp``."""
    return ["train", str(ctx.config()), "--set", f"data.root={ctx.dataset}", "--set", "data.format=levir-cc",
            "--output-dir", str(tmp / "run"), *extra]  # fmt: skip


def scene(tmp: Path, ctx: Ctx, before: Path, after: Path | None = None, *extra: str, model: bool = True) -> list[str]:
    after = after if after is not None else geotiff(tmp / "after.tif")
    return ["scene", str(before), str(after), "--model", str(ctx.model if model else tmp / NO_MODEL),
            "--out", str(tmp / "out"), "--device", "cpu", "--no-progress", *extra]  # fmt: skip


def eval_captions(tmp: Path, pred: object, refs: object, *extra: str) -> list[str]:
    files = []
    for name, content in (("pred.json", pred), ("refs.json", refs)):
        path = tmp / name
        if isinstance(content, (bytes, str)):
            text_file(path, content)
        else:
            json_file(path, content)
        files.append(str(path))
    return ["eval-captions", "--pred", files[0], "--refs", files[1], "--meteor", "off", *extra]


PREDS = {"a": "a house is built", "b": "no change"}
REFS = {"a": ["a house is built", "a new house"], "b": ["no change", "the same"]}


def config_with(tmp: Path, ctx: Ctx, section: str, key: str, value: object) -> Path:
    """The shipped CPU config with ``section.key`` set to ``value``, as ``tmp/c.yaml``."""
    import yaml

    data = yaml.safe_load(ctx.config().read_text())
    data[section][key] = value
    return text_file(tmp / "c.yaml", yaml.safe_dump(data))


def damaged_levir(tmp: Path, content: str | bytes) -> Path:
    """A tiny LEVIR-CC set whose captions file holds ``content``."""
    root = make_levir(tmp / "levir", "levir-cc", {"train": 2, "val": 1, "test": 1}, 16)
    text_file(root / "LevirCCcaptions.json", content)
    return root


def damaged_model(tmp: Path, ctx: Ctx, name: str, content: str | bytes) -> Path:
    """A copy of the good model with ``name`` replaced by ``content``."""
    import shutil

    model = shutil.copytree(ctx.model, tmp / "model")
    text_file(model / name, content)
    return model


def convert(tmp: Path, ckpt: Path, vocab: Path | None = None, *extra: str) -> list[str]:
    vocab = vocab if vocab is not None else json_file(tmp / "vocab.json", {"<NULL>": 0, "<UNK>": 1, "<START>": 2,
                                                                             "<END>": 3, "a": 4})  # fmt: skip
    return ["convert", "hisem-official", str(ckpt), str(tmp / "converted"), "--vocab", str(vocab), "--no-encoder",
            *extra]  # fmt: skip


ROWS: list[Row] = [
    # ---- caption BEFORE AFTER: images
    Row("caption-bomb", lambda t, c: caption(t, c, bomb_png(t / "bomb.png")),
        ("{tmp}/bomb.png", "30000×30000", "above the limit")),
    Row("caption-missing-image", lambda t, c: caption(t, c, t / "gone.png"), ("{tmp}/gone.png", "not found")),
    Row("caption-not-an-image", lambda t, c: caption(t, c, text_file(t / "a.png")),
        ("{tmp}/a.png", "not a readable image")),
    Row("caption-truncated-png", lambda t, c: caption(t, c, truncated_png(t / "a.png")),
        ("{tmp}/a.png", "corrupt image")),
    Row("caption-folder-as-image", lambda t, c: caption(t, c, (t / "dir.png").mkdir() or t / "dir.png"),
        ("{tmp}/dir.png", "found a directory")),
    Row("caption-grayscale", lambda t, c: caption(t, c, png(t / "g.png", np.zeros((32, 32), np.uint8))),
        ("{tmp}/g.png", "single-band")),
    Row("caption-transparent", lambda t, c: caption(t, c, png(t / "t.png", np.zeros((32, 32, 4), np.uint8))),
        ("{tmp}/t.png", "transparent alpha")),
    Row("caption-sizes-differ", lambda t, c: caption(t, c, rgb(t, "a.png", 32), rgb(t, "b.png", 40)),
        ("{tmp}/b.png: 40×40 pixels but the before image {tmp}/a.png is 32×32", "same size")),
    Row("caption-beam-0", lambda t, c: caption(t, c, rgb(t), None, "--beam-size", "0", model=False),
        ("--beam-size must be >= 1",)),
    # ---- caption --mask: the output path, refused before the model is read
    Row("mask-is-a-folder", lambda t, c: caption(t, c, rgb(t), None, "--mask", str(t), model=False),
        ("{tmp} [--mask]", "is a folder")),
    Row("mask-under-a-file", lambda t, c: caption(t, c, rgb(t), None, "--mask", str(text_file(t / "f") / "m.png"),
                                                  model=False),
        ("[--mask]", "{tmp}/f is a file, not a folder"), absent=("f/m.png",)),
    Row("mask-read-only-fs", lambda t, c: caption(t, c, rgb(t), None, "--mask", str(t / "out" / "m.png"),
                                                  model=False),
        ("[--mask]", "read-only file system"), absent=("out",), patch=read_only_fs),
    Row("mask-is-an-input", lambda t, c: caption(t, c, rgb(t, "a.png"), None, "--mask", str(t / "a.png"),
                                                 model=False),
        ("{tmp}/a.png [--mask]", "is one of the input images")),
    # ---- caption --pairs: sources
    Row("pairs-missing", lambda t, c: pairs(t, c, t / "nowhere", model=False), ("{tmp}/nowhere", "no such file")),
    Row("pairs-no-A-B", lambda t, c: pairs(t, c, (t / "p").mkdir() or t / "p", model=False), ("{tmp}/p", "A/")),
    Row("pairs-csv-not-utf8", lambda t, c: pairs(t, c, text_file(t / "l.csv", b"\xff\xfe\x00bad"), model=False),
        ("{tmp}/l.csv", "cannot read the CSV")),
    Row("pairs-csv-empty", lambda t, c: pairs(t, c, text_file(t / "l.csv", "before,after\n"), model=False),
        ("{tmp}/l.csv", "no pairs")),
    Row("pairs-wrong-source-kind", lambda t, c: pairs(t, c, text_file(t / "l.txt"), model=False),
        ("{tmp}/l.txt", "expected a folder")),
    # ---- caption --pairs: outputs and arguments, refused before the pairs are read or the model loaded
    Row("pairs-out-suffix", lambda t, c: pairs(t, c, c.pairs(t), "--out", str(t / "o.txt"), model=False),
        ("{tmp}/o.txt [--out]", ".jsonl or .csv"), absent=("o.txt",)),
    Row("pairs-out-is-a-folder", lambda t, c: pairs(t, c, c.pairs(t), "--out", str((t / "o.csv").mkdir() or
                                                                                   t / "o.csv"), model=False),
        ("{tmp}/o.csv [--out]", "is a folder")),
    Row("pairs-out-under-a-file", lambda t, c: pairs(t, c, c.pairs(t), "--out", str(text_file(t / "f") / "o.csv"),
                                                     model=False),
        ("[--out]", "{tmp}/f is a file")),
    Row("pairs-out-no-permission", lambda t, c: pairs(t, c, c.pairs(t), "--out", str(t / "o.csv"), model=False),
        ("{tmp}/o.csv [--out]", "no permission to write"), absent=("o.csv",), patch=no_write_permission),
    Row("pairs-mask-dir-is-a-file", lambda t, c: pairs(t, c, c.pairs(t), "--mask-dir", str(text_file(t / "m")),
                                                       model=False),
        ("{tmp}/m [--mask-dir]", "is a file")),
    Row("pairs-batch-size-0", lambda t, c: pairs(t, c, c.pairs(t), "--out", str(t / "o.csv"), "--batch-size", "0",
                                                 model=False),
        ("--batch-size must be >= 1",), absent=("o.csv",)),
    Row("pairs-out-is-the-input-csv", lambda t, c: pairs(t, c, pair_list(t, c), "--out", str(t / "l.csv"),
                                                         model=False),
        ("{tmp}/l.csv [--out]", "is one of the inputs")),
    Row("pairs-mask-over-an-input", lambda t, c: pairs(t, c, c.pairs(t), "--mask-dir", str(t / "pairs" / "B"),
                                                       model=False),
        ("{tmp}/pairs/B/p0.png [--mask-dir]", "would overwrite this input image")),
    Row("pairs-two-masks-one-file", lambda t, c: pairs(t, c, same_stems(t, c), "--mask-dir", str(t / "m"),
                                                       model=False),
        ("{tmp}/m/p0.png [--mask-dir]", "p0.jpg and p0.png would both write this mask"), absent=("m",)),
    # ---- train: the config and the run folder, refused before data or model
    Row("train-config-missing", lambda t, c: train(t, c, t / "none.yaml"), ("{tmp}/none.yaml",)),
    Row("train-config-bad-yaml", lambda t, c: train(t, c, text_file(t / "c.yaml", "data: [\n")),
        ("{tmp}/c.yaml", "invalid YAML")),
    Row("train-config-unknown-field", lambda t, c: train(t, c, c.config(), "--set", "train.epochz=3"),
        ("train.epochz",)),
    Row("train-output-dir-is-a-file", lambda t, c: train(t, c, c.config(), "--output-dir", str(text_file(t / "r"))),
        ("{tmp}/r [train.output_dir]", "is a file")),
    Row("train-output-dir-under-a-file", lambda t, c: train(t, c, c.config(), "--output-dir",
                                                            str(text_file(t / "r") / "run")),
        ("[train.output_dir]", "{tmp}/r is a file")),
    Row("train-output-dir-read-only", lambda t, c: train(t, c, c.config(), "--output-dir", str(t / "run")),
        ("{tmp}/run [train.output_dir]", "read-only"), absent=("run",), patch=read_only_fs),
    # ---- other commands' outputs
    Row("vocab-out-is-a-folder", lambda t, c: ["vocab", "--root", str(c.dataset), "--format", "levir-cc",
                                               "--out", str(t)],
        ("{tmp} [--out]", "is a folder")),
    Row("synth-out-is-a-file", lambda t, c: ["synth", "--out", str(text_file(t / "s")), "--no-progress"],
        ("{tmp}/s [--out]", "is a file")),
    Row("synth-figure-is-a-folder", lambda t, c: ["synth", "--figure", str(t), "--from", str(t)],
        ("{tmp} [--figure]", "is a folder")),
    Row("evaluate-out-is-a-file", lambda t, c: ["evaluate", "--model", str(t / NO_MODEL), "--data", str(t),
                                                "--out", str(text_file(t / "e"))],
        ("{tmp}/e [--out]", "is a file")),
    Row("baselines-out-is-a-file", lambda t, c: ["baselines", "--root", str(t), "--format", "levir-cc",
                                                 "--out", str(text_file(t / "b"))],
        ("{tmp}/b [--out]", "is a file")),
    # ---- data check: a bad image inside a dataset
    Row("data-check-bomb", lambda t, c: ["data", "check", "--root", str(with_bomb(t)), "--format", "levir-cc",
                                         "--no-progress"],
        ("{tmp}/levir/images/train/A/train_000001.png", "30000×30000")),
]  # fmt: skip

ROWS += [
    # ---- caption: each image reader (Pillow, tifffile) and format
    Row("caption-jpeg-cut", lambda t, c: caption(t, c, cut_jpeg(t / "a.jpg")), ("{tmp}/a.jpg", "corrupt image")),
    Row("caption-tiff-garbage", lambda t, c: caption(t, c, text_file(t / "a.tif", b"II*\x00garbage")),
        ("{tmp}/a.tif", "not a readable image")),
    Row("caption-tiff-16-bit-values", lambda t, c: caption(t, c, tiff(t / "a.tif", np.full((32, 32, 3), 4000,
                                                                                          np.uint16))),
        ("{tmp}/a.tif", "uint16 pixel values span [4000, 4000]"), skip_if_missing=("tifffile",)),
    Row("caption-tiff-two-bands", lambda t, c: caption(t, c, tiff(t / "a.tif", np.zeros((32, 32, 2), np.uint8))),
        ("{tmp}/a.tif", "2-band"), skip_if_missing=("tifffile",)),
    Row("caption-tiff-bomb", lambda t, c: caption(t, c, tiff_bomb(t / "a.tif")),
        ("{tmp}/a.tif", "30000×30000", "above the limit"), skip_if_missing=("tifffile",)),
    # ---- caption --pairs: the CSV of pairs
    Row("pairs-csv-nul-byte", lambda t, c: pairs(t, c, text_file(t / "l.csv", "before,after\na.png,b\x00.png\n"),
                                                 model=False),
        ("{tmp}/l.csv", "cannot read the CSV")),
    Row("pairs-csv-is-a-folder", lambda t, c: pairs(t, c, (t / "l.csv").mkdir() or t / "l.csv", model=False),
        ("{tmp}/l.csv", "A/ (before) and B/ (after)")),
    # ---- scene: GeoTIFFs
    Row("scene-missing", lambda t, c: scene(t, c, t / "gone.tif"), ("{tmp}/gone.tif", "no such file"),
        absent=("out",), skip_if_missing=("rasterio",)),
    Row("scene-not-a-raster", lambda t, c: scene(t, c, text_file(t / "b.tif")), ("{tmp}/b.tif", "cannot read"),
        absent=("out",), skip_if_missing=("rasterio",)),
    Row("scene-no-crs", lambda t, c: scene(t, c, geotiff(t / "b.tif", crs=None)), ("{tmp}/b.tif", "has no CRS"),
        absent=("out",), skip_if_missing=("rasterio",)),
    Row("scene-other-crs-without-align", lambda t, c: scene(t, c, geotiff(t / "b.tif", crs="EPSG:32634")),
        ("{tmp}/b.tif and {tmp}/after.tif", "different CRS", "--align"), absent=("out",),
        skip_if_missing=("rasterio",)),
    Row("scene-other-resolution", lambda t, c: scene(t, c, geotiff(t / "b.tif", res=20.0)),
        ("{tmp}/b.tif and {tmp}/after.tif", "different resolutions"), absent=("out",), skip_if_missing=("rasterio",)),
    Row("scene-no-overlap", lambda t, c: scene(t, c, geotiff(t / "b.tif", origin=(600_000.0, 4_100_000.0))),
        ("{tmp}/b.tif and {tmp}/after.tif", "do not overlap"), absent=("out",), skip_if_missing=("rasterio",)),
    Row("scene-one-band", lambda t, c: scene(t, c, geotiff(t / "b.tif", count=1)),
        ("{tmp}/b.tif", "has 1 band(s)", "--bands"), absent=("out",), skip_if_missing=("rasterio",)),
    Row("scene-bands-past-the-count", lambda t, c: scene(t, c, geotiff(t / "b.tif"), None, "--bands", "1,2,5"),
        ("{tmp}/b.tif", "--bands 1,2,5", "3 band(s)"), absent=("out",), skip_if_missing=("rasterio",)),
    Row("scene-tile-too-big", lambda t, c: scene(t, c, geotiff(t / "b.tif"), None, "--tile", "50000"),
        ("--tile 50000", "{tmp}/b.tif", "48 × 48 px"), absent=("out",), skip_if_missing=("rasterio",)),
    Row("scene-nodata-everywhere", lambda t, c: scene(t, c, geotiff(t / "b.tif", nodata_everywhere=True)),
        ("{tmp}/b.tif", "no data in the overlap"), absent=("out",), skip_if_missing=("rasterio",)),
    Row("scene-overlap-not-below-tile", lambda t, c: scene(t, c, geotiff(t / "b.tif"), None, "--tile", "16",
                                                           "--overlap", "16"),
        ("--overlap must be in [0, tile)",), absent=("out",), skip_if_missing=("rasterio",)),
    Row("scene-out-is-a-file", lambda t, c: scene(t, c, geotiff(t / "b.tif"), None, model=False)
        + ["--out", str(text_file(t / "o"))], ("{tmp}/o [--out]", "is a file"), skip_if_missing=("rasterio",)),
    Row("scene-output-name-is-a-folder", lambda t, c: scene(t, c, geotiff(t / "b.tif"), None, model=False)
        if (t / "out" / "changes.geojson").mkdir(parents=True) is None else [],
        ("{tmp}/out/changes.geojson", "is a folder where the run writes a file"), skip_if_missing=("rasterio",)),
    Row("scene-recorded-settings-garbage", lambda t, c: scene(t, c, geotiff(t / "b.tif"))
        if text_file(t / "out" / "scene_run.json", "{oops") else [],
        ("{tmp}/out/scene_run.json", "unreadable"), skip_if_missing=("rasterio",)),
    Row("scene-damaged-model", lambda t, c: scene(t, c, geotiff(t / "b.tif"), None, "--model",
                                                  str(damaged_model(t, c, "config.json", "{oops"))),
        ("{tmp}/model/config.json",), absent=("out",), skip_if_missing=("rasterio",)),
    # ---- train: the config's values and the data it names
    Row("train-config-not-a-mapping", lambda t, c: train(t, c, text_file(t / "c.yaml", "- a\n- b\n")),
        ("{tmp}/c.yaml",)),
    Row("train-config-empty", lambda t, c: train(t, c, text_file(t / "c.yaml", "")), ("{tmp}/c.yaml",)),
    Row("train-set-without-value", lambda t, c: train(t, c, c.config(), "--set", "train.epochs"),
        ("train.epochs", "section.key=value")),
    Row("train-epochs-not-a-number", lambda t, c: train(t, c, c.config(), "--set", "train.epochs=many"),
        ("train.epochs", "many")),
    Row("train-epochs-negative", lambda t, c: train(t, c, c.config(), "--set", "train.epochs=-1"),
        ("train.epochs", "-1")),
    Row("train-batch-size-0", lambda t, c: train(t, c, c.config(), "--set", "train.batch_size=0"),
        ("train.batch_size",)),
    Row("train-lr-negative", lambda t, c: train(t, c, c.config(), "--set", "optim.lr=-0.1"), ("optim.lr",)),
    Row("train-unknown-section", lambda t, c: train(t, c, c.config(), "--set", "trian.epochs=1"), ("trian",)),
    Row("train-data-root-missing", lambda t, c: train_on_data(t, c, "--set", f"data.root={t / 'nowhere'}"),
        ("{tmp}/nowhere",), absent=("run",)),
    Row("train-data-captions-garbage", lambda t, c: train_on_data(t, c, "--set",
                                                                  f"data.root={damaged_levir(t, '{oops')}"),
        ("{tmp}/levir/LevirCCcaptions.json", "not valid JSON"), absent=("run",)),
    Row("train-vocab-file-garbage", lambda t, c: train_on_data(t, c, "--set",
                                                               f"data.vocab.path={text_file(t / 'v.json', '[1]')}"),
        ("{tmp}/v.json",), absent=("run",)),
    # ---- data check: the captions file
    Row("data-check-root-missing", lambda t, c: ["data", "check", "--root", str(t / "nowhere"), "--format",
                                                 "levir-cc", "--no-progress"], ("{tmp}/nowhere",)),
    Row("data-check-captions-not-json", lambda t, c: ["data", "check", "--root", str(damaged_levir(t, "{oops")),
                                                      "--format", "levir-cc", "--no-progress"],
        ("{tmp}/levir/LevirCCcaptions.json", "not valid JSON")),
    Row("data-check-captions-not-utf8", lambda t, c: ["data", "check", "--root", str(damaged_levir(t, b"\xff\xfe")),
                                                      "--format", "levir-cc", "--no-progress"],
        ("{tmp}/levir/LevirCCcaptions.json",)),
    Row("data-check-captions-a-list", lambda t, c: ["data", "check", "--root", str(damaged_levir(t, "[1, 2]")),
                                                    "--format", "levir-cc", "--no-progress"],
        ("{tmp}/levir/LevirCCcaptions.json",)),
    # ---- eval-captions: predictions and references
    Row("eval-pred-not-json", lambda t, c: eval_captions(t, "{oops", REFS), ("{tmp}/pred.json", "not valid JSON")),
    Row("eval-pred-a-list", lambda t, c: eval_captions(t, ["a"], REFS), ("{tmp}/pred.json", "expected a JSON object")),
    Row("eval-pred-not-a-string", lambda t, c: eval_captions(t, {**PREDS, "a": 7}, REFS),
        ("{tmp}/pred.json [a]", "must be a string")),
    Row("eval-pred-unknown-id", lambda t, c: eval_captions(t, {**PREDS, "zz": "x"}, REFS),
        ("{tmp}/pred.json [zz]", "refs.json")),
    Row("eval-pred-not-utf8", lambda t, c: eval_captions(t, b"\xff{}", REFS), ("{tmp}/pred.json", "not UTF-8")),
    Row("eval-pred-is-a-folder", lambda t, c: eval_captions(t, PREDS, REFS)[:2] + [str(t)]
        + eval_captions(t, PREDS, REFS)[3:], ("{tmp}", "is a directory")),
    Row("eval-refs-not-a-list", lambda t, c: eval_captions(t, PREDS, {**REFS, "b": "no change"}),
        ("{tmp}/refs.json [b]",)),
    Row("eval-refs-empty-list", lambda t, c: eval_captions(t, PREDS, {**REFS, "b": []}),
        ("{tmp}/refs.json [b]", "empty")),
    Row("eval-refs-empty-object", lambda t, c: eval_captions(t, PREDS, {}), ("{tmp}/refs.json", "no captions")),
    Row("eval-vocab-garbage", lambda t, c: eval_captions(t, PREDS, REFS, "--vocab", str(text_file(t / "v.json",
                                                                                                   "{oops"))),
        ("{tmp}/v.json", "not valid JSON")),
    # ---- vocab
    Row("vocab-root-missing", lambda t, c: ["vocab", "--root", str(t / "nowhere"), "--format", "levir-cc", "--out",
                                            str(t / "v.json")], ("{tmp}/nowhere",), absent=("v.json",)),
    Row("vocab-captions-not-json", lambda t, c: ["vocab", "--root", str(damaged_levir(t, "{oops")), "--format",
                                                 "levir-cc", "--out", str(t / "v.json")],
        ("{tmp}/levir/LevirCCcaptions.json", "not valid JSON"), absent=("v.json",)),
    Row("vocab-out-under-a-file", lambda t, c: ["vocab", "--root", str(c.dataset), "--format", "levir-cc", "--out",
                                                str(text_file(t / "f") / "v.json")],
        ("[--out]", "{tmp}/f is a file")),
    # ---- synth
    Row("synth-pairs-0", lambda t, c: ["synth", "--out", str(t / "s"), "--pairs", "0", "--no-progress"],
        ("pairs",), absent=("s",)),
    Row("synth-size-too-small", lambda t, c: ["synth", "--out", str(t / "s"), "--size", "4", "--no-progress"],
        ("size",), absent=("s",)),
    Row("synth-unknown-preset", lambda t, c: ["synth", "--out", str(t / "s"), "--preset", "huge", "--no-progress"],
        ("huge",), absent=("s",)),
    Row("synth-workers-0", lambda t, c: ["synth", "--out", str(t / "s"), "--workers", "0", "--no-progress"],
        ("workers",), absent=("s",)),
    Row("synth-out-is-a-foreign-folder", lambda t, c: ["synth", "--out", str(text_file(t / "s" / "mine.txt").parent),
                                                       "--pairs", "6", "--size", "32", "--no-progress"],
        ("{tmp}/s", "not a SynthCC set", "mine.txt")),
    Row("synth-stats-captions-not-json", lambda t, c: ["synth", "--stats", str(damaged_levir(t, "{oops"))],
        ("{tmp}/levir/LevirCCcaptions.json", "not valid JSON")),
    Row("synth-stats-entry-not-an-object", lambda t, c: ["synth", "--stats", str(damaged_levir(t, '{"images": [1]}'))],
        ("{tmp}/levir/LevirCCcaptions.json [images[0]]", "expected an object")),
    Row("synth-stats-sentence-without-text", lambda t, c: ["synth", "--stats", str(damaged_levir(
        t, '{"images": [{"filename": "a.png", "split": "train", "sentences": [{"x": 1}]}]}'))],
        ("{tmp}/levir/LevirCCcaptions.json [images[0].sentences[0]]", "neither 'raw' nor 'tokens'")),
    Row("synth-stats-meta-garbage", lambda t, c: ["synth", "--stats", str(json_file(
        c.dataset_copy(t) / "synthcc_meta.json", {"items": [{"changed": True}]}).parent)],
        ("{tmp}/levir/synthcc_meta.json", "not a SynthCC meta file")),
    Row("synth-stats-missing", lambda t, c: ["synth", "--stats", str(t / "nowhere")], ("{tmp}/nowhere",)),
    Row("synth-figure-from-not-synthcc", lambda t, c: ["synth", "--figure", str(t / "f.png"), "--from", str(t)],
        ("{tmp}",), absent=("f.png",)),
    Row("synth-geotiff-grid-0", lambda t, c: ["synth", "--geotiff", str(t / "g"), "--grid", "0"], ("--grid",),
        absent=("g",), skip_if_missing=("rasterio",)),
    Row("synth-geotiff-is-a-file", lambda t, c: ["synth", "--geotiff", str(text_file(t / "g"))],
        ("{tmp}/g [--geotiff]", "is a file"), skip_if_missing=("rasterio",)),
    # ---- export
    Row("export-model-missing", lambda t, c: ["export", "onnx", "--model", str(t / NO_MODEL), "--out", str(t / "x")],
        ("{tmp}/" + NO_MODEL,), absent=("x",), skip_if_missing=("onnx",)),
    Row("export-model-damaged", lambda t, c: ["export", "onnx", "--model", str(damaged_model(
        t, c, "model.safetensors", b"garbage")), "--out", str(t / "x")],
        ("{tmp}/model/model.safetensors",), absent=("x",), skip_if_missing=("onnx",)),
    Row("export-out-is-a-file", lambda t, c: ["export", "onnx", "--model", str(c.model), "--out",
                                              str(text_file(t / "x"))], ("{tmp}/x [--out]", "is a file")),
    # ---- summary
    Row("summary-missing", lambda t, c: ["summary", str(t / "none.yaml")], ("{tmp}/none.yaml", "not found")),
    Row("summary-bad-yaml", lambda t, c: ["summary", str(text_file(t / "c.yaml", "model: [\n"))],
        ("{tmp}/c.yaml", "invalid YAML")),
    Row("summary-bad-field", lambda t, c: ["summary", str(config_with(t, c, "model", "architecture", "nope"))],
        ("{tmp}/c.yaml", "model.architecture")),
    Row("summary-model-config-garbage", lambda t, c: ["summary", str(damaged_model(t, c, "config.json", "{oops"))],
        ("{tmp}/model/config.json",)),
    Row("summary-vocab-size-with-a-model", lambda t, c: ["summary", str(c.model), "--vocab-size", "9"],
        ("--vocab-size",)),
    # ---- convert: the official checkpoint (read weights-only: a pickle never runs) and the vocabulary
    Row("convert-checkpoint-missing", lambda t, c: convert(t, t / "none.pth"), ("{tmp}/none.pth",),
        absent=("converted",)),
    Row("convert-checkpoint-garbage", lambda t, c: convert(t, text_file(t / "c.pth", b"\x80garbage" * 10)),
        ("{tmp}/c.pth",), absent=("converted",)),
    Row("convert-checkpoint-truncated", lambda t, c: convert(t, truncated_checkpoint(t / "c.pth")),
        ("{tmp}/c.pth",), absent=("converted",)),
    Row("convert-checkpoint-hostile-pickle", lambda t, c: convert(t, hostile_pickle(t / "c.pth", t / "pwned")),
        ("{tmp}/c.pth", "pickles a Python object (os.makedirs), which is never run"), absent=("converted", "pwned")),
    Row("convert-checkpoint-not-a-dict", lambda t, c: convert(t, saved_tensor(t / "c.pth")),
        ("{tmp}/c.pth",), absent=("converted",)),
    Row("convert-vocab-garbage", lambda t, c: convert(t, saved_tensor(t / "c.pth"), text_file(t / "v.json", "{oops")),
        ("{tmp}/v.json",), absent=("converted",)),
    Row("convert-out-is-a-file", lambda t, c: convert(t, saved_tensor(t / "c.pth"))[:3] + [str(text_file(t / "o"))]
        + convert(t, saved_tensor(t / "c.pth"))[4:], ("{tmp}/o",)),
    # ---- evaluate
    Row("evaluate-batch-size-0", lambda t, c: ["evaluate", "--model", str(t / NO_MODEL), "--data", str(t),
                                               "--out", str(t / "e"), "--batch-size", "0"],
        ("--batch-size",), absent=("e",)),
    Row("evaluate-model-missing", lambda t, c: ["evaluate", "--model", str(t / NO_MODEL), "--data", str(c.dataset),
                                                "--out", str(t / "e"), "--device", "cpu"],
        ("{tmp}/" + NO_MODEL,), absent=("e",)),
    Row("evaluate-data-missing", lambda t, c: ["evaluate", "--model", str(c.model), "--data", str(t / "nowhere"),
                                               "--out", str(t / "e"), "--device", "cpu"],
        ("{tmp}/nowhere",), absent=("e",)),
    Row("evaluate-captions-garbage", lambda t, c: ["evaluate", "--model", str(c.model), "--data",
                                                   str(damaged_levir(t, "{oops")), "--out", str(t / "e"),
                                                   "--device", "cpu"],
        ("{tmp}/levir/LevirCCcaptions.json", "not valid JSON"), absent=("e",)),
    # ---- baselines
    Row("baselines-root-missing", lambda t, c: ["baselines", "--root", str(t / "nowhere"), "--format", "levir-cc",
                                                "--out", str(t / "b"), "--meteor", "off"],
        ("{tmp}/nowhere",), absent=("b",)),
    Row("baselines-vocab-garbage", lambda t, c: ["baselines", "--root", str(c.dataset), "--format", "levir-cc",
                                                 "--vocab", str(text_file(t / "v.json", "[1]")), "--meteor", "off"],
        ("{tmp}/v.json",)),
    # ---- serve: refused before a server starts
    Row("serve-model-missing", lambda t, c: ["serve", "--model", str(t / NO_MODEL), "--device", "cpu"],
        ("{tmp}/" + NO_MODEL,), skip_if_missing=("fastapi", "uvicorn")),
    Row("serve-max-image-pixels-0", lambda t, c: ["serve", "--model", str(t / NO_MODEL), "--max-image-pixels", "0"],
        ("--max-image-pixels",), skip_if_missing=("fastapi", "uvicorn")),
    Row("serve-max-upload-0", lambda t, c: ["serve", "--model", str(t / NO_MODEL), "--max-upload-mb", "0"],
        ("--max-upload-mb",), skip_if_missing=("fastapi", "uvicorn")),
    Row("serve-port-0", lambda t, c: ["serve", "--model", str(t / NO_MODEL), "--port", "0"], ("--port",),
        skip_if_missing=("fastapi", "uvicorn")),
    Row("serve-model-damaged", lambda t, c: ["serve", "--model", str(damaged_model(t, c, "vocab.json", "[1]")),
                                             "--device", "cpu"],
        ("{tmp}/model/vocab.json",), skip_if_missing=("fastapi", "uvicorn")),
]  # fmt: skip


def tiff_bomb(path: Path) -> Path:
    """A TIFF whose tags declare 30000 × 30000 RGB pixels over a few bytes of data."""
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path) as tif:
        tif.write(shape=(30000, 30000, 3), dtype=np.uint8, photometric="rgb")  # an empty (sparse) image
    return path


def truncated_checkpoint(path: Path) -> Path:
    """A real torch checkpoint (a zip) cut in half."""
    torch.save({"encoder_trans_dict": {"w": torch.zeros(64, 64)}}, path)
    return text_file(path, path.read_bytes()[: path.stat().st_size // 2])


def saved_tensor(path: Path) -> Path:
    """A torch file that holds a bare tensor, not an official checkpoint's dict."""
    torch.save(torch.zeros(3), path)
    return path


def pair_list(tmp: Path, ctx: Ctx) -> Path:
    """A CSV of the good pairs."""
    folder = ctx.pairs(tmp)
    rows = [f"{folder / 'A' / n},{folder / 'B' / n}" for n in ("p0.png", "p1.png")]
    return text_file(tmp / "l.csv", "before,after\n" + "\n".join(rows) + "\n")


def same_stems(tmp: Path, ctx: Ctx) -> Path:
    """Good pairs plus p0.jpg beside p0.png: both would get the mask p0.png."""
    folder = ctx.pairs(tmp)
    for side in ("A", "B"):
        png(folder / side / "p0.jpg", np.full((32, 32, 3), 50, np.uint8))
    return folder


def with_bomb(tmp: Path) -> Path:
    """A tiny LEVIR-CC set whose first before image is a decompression bomb."""
    root = make_levir(tmp / "levir", "levir-cc", {"train": 2, "val": 1, "test": 1}, 16)
    bomb_png(root / "images" / "train" / "A" / "train_000001.png")
    return root


# ---------------------------------------------------------------------------------------------------------- pretrain
def pretrain(tmp: Path, ctx: Ctx, *extra: str, target: str = "lm", config: Path | None = None,
             data: Path | None = None) -> list[str]:  # fmt: skip
    """``pretrain`` with the shipped lm config, its data root ``data`` (default: none there) and its output under
    ``tmp/run``; a row that fails before the data is read needs no data."""
    config = config if config is not None else REPO_ROOT / "configs" / "pretrain" / "lm_synthcc_cpu.yaml"
    root = data if data is not None else tmp / "no-data"
    return ["pretrain", target, str(config), "--set", f"data.root={root}", "--output-dir", str(tmp / "run"),
            "--set", "logging.progress=false", *extra]  # fmt: skip


def damaged_single_dates(tmp: Path, ctx: Ctx, content: str | bytes) -> Path:
    """A copy of the good single-date set whose ``scene_captions.json`` holds ``content``."""
    import shutil

    root = shutil.copytree(ctx.single_dates, tmp / "single")
    text_file(root / "scene_captions.json", content)
    return root


# ---------------------------------------------------------------------------------------------------------- compare
def compare(tmp: Path, ctx: Ctx, *extra: str, a: object = None, b: object = None) -> list[str]:
    """``compare`` of ``tmp/a.json`` and ``tmp/b.json`` (good predictions unless given: an object is written as
    JSON, a string or bytes as they are) on the three test pairs of ``ctx.compare_data``."""
    files = []
    for name, content in (("a.json", a), ("b.json", b)):
        content = good_predictions(ctx) if content is None else content
        files.append(str(text_file(tmp / name, content) if isinstance(content, (str, bytes))
                         else json_file(tmp / name, content)))  # fmt: skip
    return ["compare", "--data", str(ctx.compare_data), *files, "--resamples", "5", "--permutations", "5", *extra]


def good_predictions(ctx: Ctx) -> dict[str, str]:
    from changecap.data.annotations import parse_annotations

    return {r.name: "a house is built" for r in parse_annotations(ctx.compare_data, "levir-cc", "test",
                                                                 check_files=False)}  # fmt: skip


def first_test_pair(ctx: Ctx) -> str:
    return sorted(good_predictions(ctx))[0]


# ---------------------------------------------------------------------------------------------------------- import
def data_import(tmp: Path, ctx: Ctx, *extra: str, captions: Path | None = None, source: Path | None = None,
                out: Path | None = None) -> list[str]:  # fmt: skip
    """``data import`` of the good pairs (``source``: other pairs) with a good captions CSV (``captions``: another
    sheet) into ``tmp/out`` (``out``: elsewhere)."""
    source = source if source is not None else ctx.pairs(tmp)
    captions = captions if captions is not None else text_file(tmp / "caps.csv", CAPTIONS_CSV)
    return ["data", "import", "--pairs", str(source), "--captions", str(captions), "--out",
            str(out if out is not None else tmp / "out"), "--no-progress", *extra]  # fmt: skip


CAPTIONS_CSV = "name,caption\np0,a house is built\np1,the scene is the same as before\n"


def bomb_pairs(tmp: Path, ctx: Ctx) -> Path:
    """The good pairs, p1's after image a decompression bomb."""
    folder = ctx.pairs(tmp)
    bomb_png(folder / "B" / "p1.png")
    return folder


def disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fsync of a finished file fails as on a full disk (after the output checks passed)."""
    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)


def import_disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """The import's PNG writer fails as on a full disk, halfway through the dataset."""
    from changecap.data import importer

    def full(self: object, src: Path, dst: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(importer._Writer, "place", full)


ROWS += [
    # ---- pretrain: the config, the target and the output folder, refused before any data is read
    Row("pretrain-config-missing", lambda t, c: pretrain(t, c, config=t / "none.yaml"), ("{tmp}/none.yaml",),
        absent=("run",)),
    Row("pretrain-config-bad-yaml", lambda t, c: pretrain(t, c, config=text_file(t / "c.yaml", "train: [\n")),
        ("{tmp}/c.yaml", "invalid YAML"), absent=("run",)),
    Row("pretrain-config-not-a-mapping", lambda t, c: pretrain(t, c, config=text_file(t / "c.yaml", "- 1\n")),
        ("{tmp}/c.yaml",), absent=("run",)),
    Row("pretrain-config-not-utf8", lambda t, c: pretrain(t, c, config=text_file(t / "c.yaml", b"\xff\xfe: 1")),
        ("{tmp}/c.yaml",), absent=("run",)),
    Row("pretrain-unknown-target", lambda t, c: pretrain(t, c, target="gpt"),
        ("unknown pretraining target 'gpt'",), absent=("run",)),
    Row("pretrain-config-for-another-target", lambda t, c: pretrain(t, c, target="clip"),
        ("lm_synthcc_cpu.yaml", "target", "written for 'lm', not 'clip'"), absent=("run",)),
    Row("pretrain-unknown-field", lambda t, c: pretrain(t, c, "--set", "train.epochz=3"),
        ("lm_synthcc_cpu.yaml", "train.epochz"), absent=("run",)),
    Row("pretrain-misspelt-llm-field", lambda t, c: pretrain(t, c, "--set", "model.llm.hidden_sise=64"),
        ("model.llm.hidden_sise", "not a field of a transformers llama config"), absent=("run",)),
    Row("pretrain-llm-field-wrong-type", lambda t, c: pretrain(t, c, "--set", "model.llm.hidden_size=wide"),
        ("model.llm", "hidden_size"), absent=("run",)),
    Row("pretrain-unknown-llm-family", lambda t, c: pretrain(t, c, "--set", "model.llm.model_type=nope"),
        ("model.llm.model_type", "'nope'"), absent=("run",)),
    Row("pretrain-batch-size-0", lambda t, c: pretrain(t, c, "--set", "train.batch_size=0"),
        ("train.batch_size",), absent=("run",)),
    Row("pretrain-epochs-text", lambda t, c: pretrain(t, c, "--set", "train.epochs=many"),
        ("train.epochs",), absent=("run",)),
    Row("pretrain-negative-lr", lambda t, c: pretrain(t, c, "--set", "optim.lr=-1"), ("optim.lr",),
        absent=("run",)),
    Row("pretrain-holdout-1", lambda t, c: pretrain(t, c, "--set", "data.holdout=1.0"), ("data.holdout",),
        absent=("run",)),
    Row("pretrain-unknown-device", lambda t, c: pretrain(t, c, "--set", "train.device=gpu7"), ("train.device",),
        absent=("run",)),
    Row("pretrain-split-val", lambda t, c: pretrain(t, c, "--split", "val"),
        ("data.split", "pretraining reads the train split only"), absent=("run",)),
    Row("pretrain-split-test-in-config", lambda t, c: pretrain(t, c, "--set", "data.split=test"),
        ("data.split", "'test'"), absent=("run",)),
    Row("pretrain-override-without-value", lambda t, c: pretrain(t, c, "--set", "train.epochs"),
        ("train.epochs",), absent=("run",)),
    Row("pretrain-output-is-a-file", lambda t, c: pretrain(t, c) + ["--output-dir", str(text_file(t / "r"))],
        ("{tmp}/r [train.output_dir]", "is a file")),
    Row("pretrain-output-under-a-file", lambda t, c: pretrain(t, c) + ["--output-dir",
                                                                       str(text_file(t / "r") / "run")],
        ("[train.output_dir]", "{tmp}/r is a file")),
    Row("pretrain-output-read-only", lambda t, c: pretrain(t, c), ("{tmp}/run [train.output_dir]", "read-only"),
        absent=("run",), patch=read_only_fs),
    Row("pretrain-output-no-permission", lambda t, c: pretrain(t, c, data=c.single_dates),
        ("{tmp}/run [train.output_dir]", "no permission to write"), absent=("run",), patch=no_write_permission),
    Row("pretrain-output-exists", lambda t, c: pretrain(t, c, data=c.single_dates)
        if text_file(t / "run" / "keep.txt", "earlier work") else [],
        ("train.output_dir", "{tmp}/run already exists", "--overwrite")),
    # ---- pretrain: the data
    Row("pretrain-data-root-missing", lambda t, c: pretrain(t, c), ("{tmp}/no-data",), absent=("run",)),
    Row("pretrain-data-root-a-val-folder", lambda t, c: pretrain(t, c, data=c.single_dates / "images" / "val"),
        ("'val' split folder",), absent=("run",)),
    Row("pretrain-scene-captions-not-json", lambda t, c: pretrain(t, c, data=damaged_single_dates(t, c, "{oops")),
        ("{tmp}/single/scene_captions.json", "not valid JSON"), absent=("run",)),
    Row("pretrain-scene-captions-a-list", lambda t, c: pretrain(t, c, data=damaged_single_dates(t, c, "[1]")),
        ("{tmp}/single/scene_captions.json",), absent=("run",)),
    # ---- compare: predictions, references, --runs and the reports
    Row("compare-data-missing", lambda t, c: compare(t, c)[:2] + [str(t / "nowhere")] + compare(t, c)[3:],
        ("{tmp}/nowhere",)),
    Row("compare-split-missing", lambda t, c: compare(t, c, "--split", "val"),
        ("[split]", "no pairs in split 'val'")),
    Row("compare-pair-sets-differ", lambda t, c: compare(t, c, b={k: v for k, v in good_predictions(c).items()
                                                                   if k != first_test_pair(c)}),
        ("{tmp}/b.json", "every system must caption the same pairs")),
    Row("compare-name-not-in-split", lambda t, c: compare(t, c, b={**good_predictions(c), "nowhere.png": "x"}),
        ("{tmp}/b.json [nowhere.png]", "not in the test split")),
    Row("compare-pred-not-json", lambda t, c: compare(t, c, b='{"a": '), ("{tmp}/b.json", "not valid JSON")),
    Row("compare-pred-not-utf8", lambda t, c: compare(t, c, b=b"\xff{}"), ("{tmp}/b.json",)),
    Row("compare-pred-a-list", lambda t, c: compare(t, c, b=["a house"]), ("{tmp}/b.json",)),
    Row("compare-pred-empty", lambda t, c: compare(t, c, b={}), ("{tmp}/b.json",)),
    Row("compare-pred-not-a-string", lambda t, c: compare(t, c, b={**good_predictions(c),
                                                                  first_test_pair(c): ["a", "b"]}),
        ("{tmp}/b.json [", "prediction must be a string")),
    Row("compare-pred-missing", lambda t, c: compare(t, c)[:3] + [str(t / "gone.json")] + compare(t, c)[4:],
        ("{tmp}/gone.json", "not found")),
    Row("compare-pred-is-a-folder", lambda t, c: compare(t, c)[:3] + [str((t / "d.json").mkdir() or t / "d.json")]
        + compare(t, c)[4:], ("{tmp}/d.json",)),
    Row("compare-one-system", lambda t, c: compare(t, c)[:4] + compare(t, c)[5:], ("at least two systems",)),
    Row("compare-same-label-twice", lambda t, c: compare(t, c)[:3] + [f"x={t / 'a.json'}", f"x={t / 'b.json'}"]
        + compare(t, c)[5:], ("two systems are labelled 'x'",)),
    Row("compare-label-without-file", lambda t, c: compare(t, c, "--runs", "=a.json"), ("--runs",)),
    Row("compare-runs-without-files", lambda t, c: compare(t, c, "--runs", "s="), ("--runs", "LABEL=a.json")),
    Row("compare-runs-file-missing", lambda t, c: compare(t, c, "--runs", f"s={t / 'a.json'},{t / 'gone.json'}"),
        ("{tmp}/gone.json", "not found")),
    Row("compare-runs-file-malformed", lambda t, c: compare(t, c, "--runs", f"s={t / 'a.json'},"
                                                                            f"{text_file(t / 'r.json', '[1')}"),
        ("{tmp}/r.json",)),
    Row("compare-resamples-0", lambda t, c: compare(t, c, "--resamples", "0"), ("--resamples",)),
    Row("compare-vocab-with-coco", lambda t, c: compare(t, c, "--protocol", "coco", "--vocab", str(t / "v.json")),
        ("--vocab", "--protocol rsicc")),
    Row("compare-vocab-garbage", lambda t, c: compare(t, c, "--vocab", str(text_file(t / "v.json", "{oops"))),
        ("{tmp}/v.json",)),
    Row("compare-json-is-a-folder", lambda t, c: compare(t, c, "--json", str(t)), ("{tmp} [--json]", "is a folder")),
    Row("compare-json-under-a-file", lambda t, c: compare(t, c, "--json", str(text_file(t / "f") / "c.json")),
        ("[--json]", "{tmp}/f is a file")),
    Row("compare-json-read-only", lambda t, c: compare(t, c, "--json", str(t / "out" / "c.json")),
        ("{tmp}/out/c.json [--json]", "read-only file system"), absent=("out",), patch=read_only_fs),
    Row("compare-html-no-permission", lambda t, c: compare(t, c, "--html", str(t / "c.html")),
        ("{tmp}/c.html [--html]", "no permission to write"), absent=("c.html",), patch=no_write_permission),
    Row("compare-json-is-an-input", lambda t, c: compare(t, c, "--json", str(t / "b.json")),
        ("{tmp}/b.json [--json]", "is one of the inputs")),
    Row("compare-html-is-a-runs-input", lambda t, c: compare(t, c, "--runs", f"s={t / 'a.json'}", "--html",
                                                             str(t / "a.json")),
        ("{tmp}/a.json [--html]", "is one of the inputs")),
    Row("compare-json-and-html-one-file", lambda t, c: compare(t, c, "--json", str(t / "r"), "--html", str(t / "r")),
        ("{tmp}/r [--html]", "is also the --json output"), absent=("r",)),
    Row("compare-json-fails-after-the-check", lambda t, c: compare(t, c, "--json", str(t / "c.json"), "--html",
                                                                   str(t / "c.html")),
        ("{tmp}/c.json", "cannot write the file"), absent=("c.json", "c.html"), patch=disk_full),
    # ---- data import: the output folder, refused before any input is read
    Row("import-out-is-a-file", lambda t, c: data_import(t, c, out=text_file(t / "o")), ("{tmp}/o [--out]",
                                                                                           "is a file")),
    Row("import-out-not-empty", lambda t, c: data_import(t, c, out=text_file(t / "o" / "mine.txt").parent),
        ("{tmp}/o [--out]", "is not empty")),
    Row("import-out-under-a-file", lambda t, c: data_import(t, c, out=text_file(t / "f") / "o"),
        ("[--out]", "{tmp}/f is a file")),
    Row("import-out-read-only", lambda t, c: data_import(t, c), ("{tmp}/out [--out]", "read-only file system"),
        absent=("out",), patch=read_only_fs),
    Row("import-out-no-permission", lambda t, c: data_import(t, c, source=t / "nowhere"),
        ("{tmp}/out [--out]", "no permission to write"), absent=("out",), patch=no_write_permission),
    Row("import-out-fails-while-written", lambda t, c: data_import(t, c), ("{tmp}/out", "cannot write the folder"),
        absent=("out",), patch=import_disk_full),
    # ---- data import: arguments
    Row("import-split-ratios-two", lambda t, c: data_import(t, c, "--split-ratios", "0.7,0.3"),
        ("--split-ratios", "three numbers"), absent=("out",)),
    Row("import-split-ratios-text", lambda t, c: data_import(t, c, "--split-ratios", "a,b,c"),
        ("--split-ratios", "three numbers like"), absent=("out",)),
    Row("import-split-ratios-sum", lambda t, c: data_import(t, c, "--split-ratios", "0.7,0.2,0.2"),
        ("--split-ratios", "sum to 1"), absent=("out",)),
    Row("import-split-ratios-negative", lambda t, c: data_import(t, c, "--split-ratios", "1.2,-0.1,-0.1"),
        ("--split-ratios", ">= 0"), absent=("out",)),
    Row("import-split-ratios-nan", lambda t, c: data_import(t, c, "--split-ratios", "nan,0.5,0.5"),
        ("--split-ratios", "finite"), absent=("out",)),
    Row("import-split-ratios-no-train", lambda t, c: data_import(t, c, "--split-ratios", "0,0.5,0.5"),
        ("--split-ratios", "train ratio"), absent=("out",)),
    Row("import-split-ratios-and-a-split-column", lambda t, c: data_import(
        t, c, "--split-ratios", "0.5,0.25,0.25", captions=text_file(t / "s.csv", "name,caption,split\n"
                                                                               "p0,a house,train\np1,no,test\n")),
        ("--split-ratios conflicts with the split column", "{tmp}/s.csv"), absent=("out",)),
    Row("import-tile-too-small", lambda t, c: data_import(t, c, "--tile", "4"), ("--tile",), absent=("out",)),
    Row("import-seed-negative", lambda t, c: data_import(t, c, "--seed", "-1"), ("--seed",), absent=("out",)),
    # ---- data import: the pairs
    Row("import-pairs-missing", lambda t, c: data_import(t, c, source=t / "nowhere"),
        ("{tmp}/nowhere", "no such file"), absent=("out",)),
    Row("import-pairs-no-A-B", lambda t, c: data_import(t, c, source=(t / "p").mkdir() or t / "p"),
        ("{tmp}/p", "A/ (before) and B/ (after)"), absent=("out",)),
    Row("import-pairs-wrong-kind", lambda t, c: data_import(t, c, source=text_file(t / "p.txt")),
        ("{tmp}/p.txt", "--pairs must be a folder"), absent=("out",)),
    Row("import-pairs-csv-not-utf8", lambda t, c: data_import(t, c, source=text_file(t / "p.csv", b"\xff\xfe,")),
        ("{tmp}/p.csv", "not a UTF-8 text file"), absent=("out",)),
    Row("import-pairs-csv-missing-column", lambda t, c: data_import(t, c, source=text_file(t / "p.csv",
                                                                                          "before\na.png\n")),
        ("{tmp}/p.csv [row 1]", "missing column(s) after"), absent=("out",)),
    Row("import-pairs-csv-missing-file", lambda t, c: data_import(t, c, source=pairs_csv(t, c, after="gone.png")),
        ("{tmp}/p.csv [row 3, after]", "file not found"), absent=("out",)),
    Row("import-pair-bomb", lambda t, c: data_import(t, c, source=bomb_pairs(t, c)),
        ("{tmp}/pairs/B/p1.png", "30000×30000", "above the limit"), absent=("out",)),
    Row("import-pair-not-an-image", lambda t, c: data_import(t, c, source=text_file(c.pairs(t) / "A" / "p1.png")
                                                             .parents[1]),
        ("{tmp}/pairs/A/p1.png", "not a readable image"), absent=("out",)),
    Row("import-pair-sizes-differ", lambda t, c: data_import(t, c, source=png(c.pairs(t) / "B" / "p1.png", np.zeros(
        (16, 32, 3), np.uint8)).parents[1]), ("{tmp}/pairs/B/p1.png", "differs from the before image"),
        absent=("out",)),
    Row("import-masks-not-a-folder", lambda t, c: data_import(t, c, "--masks", str(text_file(t / "m"))),
        ("{tmp}/m", "--masks must be a folder"), absent=("out",)),
    Row("import-mask-bad-values", lambda t, c: data_import(t, c, "--masks", str(masks(t, bad=7))),
        ("{tmp}/masks/p1.png", "invalid mask value(s) 7"), absent=("out",)),
    # ---- data import: the captions sheet
    Row("import-captions-missing", lambda t, c: data_import(t, c, captions=t / "gone.csv"),
        ("{tmp}/gone.csv", "captions file not found"), absent=("out",)),
    Row("import-captions-wrong-kind", lambda t, c: data_import(t, c, captions=text_file(t / "caps.txt")),
        ("{tmp}/caps.txt", "captions must be a .csv"), absent=("out",)),
    Row("import-captions-csv-not-utf8", lambda t, c: data_import(t, c, captions=text_file(t / "c.csv", b"\xff\xfe")),
        ("{tmp}/c.csv", "not a UTF-8 text file"), absent=("out",)),
    Row("import-captions-csv-empty", lambda t, c: data_import(t, c, captions=text_file(t / "c.csv", "")),
        ("{tmp}/c.csv", "the CSV is empty"), absent=("out",)),
    Row("import-captions-csv-missing-column", lambda t, c: data_import(t, c, captions=text_file(
        t / "c.csv", "name,text\np0,a house\n")), ("{tmp}/c.csv [row 1]", "missing column(s) caption"),
        absent=("out",)),
    Row("import-captions-csv-repeated-column", lambda t, c: data_import(t, c, captions=text_file(
        t / "c.csv", "name,caption,name\np0,a,b\n")), ("{tmp}/c.csv [row 1]", "repeats a column"), absent=("out",)),
    Row("import-captions-csv-nul-byte", lambda t, c: data_import(t, c, captions=text_file(
        t / "c.csv", "name,caption\np0,a\x00b\n")), ("{tmp}/c.csv",), absent=("out",)),
    Row("import-captions-csv-unknown-split", lambda t, c: data_import(t, c, captions=text_file(
        t / "c.csv", "name,caption,split\np0,a house,train\np1,no change,training\n")),
        ("{tmp}/c.csv [row 3, split]", "unknown split 'training'"), absent=("out",)),
    Row("import-captions-csv-bad-flag", lambda t, c: data_import(t, c, captions=text_file(
        t / "c.csv", "name,caption,changed\np0,a house,1\np1,no change,perhaps\n")),
        ("{tmp}/c.csv [row 3, changed]", "changed must be"), absent=("out",)),
    Row("import-captions-csv-empty-caption", lambda t, c: data_import(t, c, captions=text_file(
        t / "c.csv", CAPTIONS_CSV + "p1, . \n")), ("{tmp}/c.csv [row 4, caption]", "caption is empty"),
        absent=("out",)),
    Row("import-captions-csv-unknown-pair", lambda t, c: data_import(t, c, captions=text_file(
        t / "c.csv", CAPTIONS_CSV + "p9,a house\n")), ("{tmp}/c.csv [row 4, name]", "unknown pair 'p9'"),
        absent=("out",)),
    Row("import-captions-jsonl-bad-line", lambda t, c: data_import(t, c, captions=text_file(
        t / "c.jsonl", JSONL + "{not json\n")), ("{tmp}/c.jsonl [line 3]", "not valid JSON"), absent=("out",)),
    Row("import-captions-jsonl-not-an-object", lambda t, c: data_import(t, c, captions=text_file(
        t / "c.jsonl", JSONL + "[1]\n")), ("{tmp}/c.jsonl [line 3]", "expected a JSON object"), absent=("out",)),
    Row("import-captions-jsonl-captions-not-a-list", lambda t, c: data_import(t, c, captions=text_file(
        t / "c.jsonl", JSONL + '{"name": "p9", "captions": "x"}\n')), ("{tmp}/c.jsonl [line 3, captions]",),
        absent=("out",)),
    Row("import-captions-jsonl-not-utf8", lambda t, c: data_import(t, c, captions=text_file(t / "c.jsonl",
                                                                                           b"\xff\xfe{}")),
        ("{tmp}/c.jsonl", "not a UTF-8 text file"), absent=("out",)),
]  # fmt: skip

JSONL = '{"name": "p0", "captions": ["a house is built"]}\n{"name": "p1", "captions": ["no change"]}\n'


def pairs_csv(tmp: Path, ctx: Ctx, after: str) -> Path:
    """A CSV of the good pairs (a header, then p0, then p1 with ``after`` as its after image)."""
    folder = ctx.pairs(tmp)
    return text_file(tmp / "p.csv", f"name,before,after\np0,{folder}/A/p0.png,{folder}/B/p0.png\n"
                                    f"p1,{folder}/A/p1.png,{after}\n")  # fmt: skip


def masks(tmp: Path, bad: int) -> Path:
    """Good 0 / 255 masks of p0 and p1 (32 px), p1 holding the value ``bad`` once."""
    for name, value in (("p0.png", 0), ("p1.png", bad)):
        arr = np.zeros((32, 32), np.uint8)
        arr[0, 0] = value
        png(tmp / "masks" / name, arr)
    return tmp / "masks"



def leftovers(folder: Path) -> list[str]:
    """Temporary files and folders anywhere under ``folder``."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if is_temp_name(p.name) or p.name.endswith((".part", ".tmp")) or ".tmp-" in p.name
    )


def check_row(
    row: Row, tmp: Path, ctx: Ctx, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for module in row.skip_if_missing:
        pytest.importorskip(module)
    argv = row.make(tmp, ctx)
    capsys.readouterr()
    if row.patch is not None:
        row.patch(monkeypatch)
    code = main(argv)
    monkeypatch.undo()
    err = capsys.readouterr().err.rstrip("\n")
    assert code == 2, f"exit {code}: {err}"
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for needle in row.expect:
        assert needle.format(tmp=tmp) in err, f"{needle!r} not in {err!r}"
    assert leftovers(tmp) == []
    for rel in row.absent:
        assert not (tmp / rel).exists(), rel


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    return Ctx(tmp_path_factory.mktemp("good"))


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_malformed_input(
    row: Row, ctx: Ctx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    check_row(row, tmp_path, ctx, monkeypatch, capsys)


def test_row_ids_are_unique() -> None:
    assert len({r.id for r in ROWS}) == len(ROWS)


def test_a_row_that_names_nothing_would_fail(tmp_path: Path, ctx: Ctx, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """The harness itself: a message that misses the expected file name is caught."""
    row = Row("self-check", lambda t, c: pairs(t, c, t / "nowhere", model=False), ("{tmp}/elsewhere",))
    with pytest.raises(AssertionError, match="elsewhere"):
        check_row(row, tmp_path, ctx, monkeypatch, capsys)
