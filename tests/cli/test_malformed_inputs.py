"""Malformed inputs and unusable outputs, command by command: each row builds one bad input in a fresh folder and
runs the CLI in-process. Every row must end with exit status 2 and ONE line on stderr that names the file (or
option) and the field, and leave nothing behind: no temporary file anywhere under the row's folder, and none of the
row's outputs created.

To add a row: append a :class:`Row` to ``ROWS`` (or build a list of your own and parametrize over it with
:func:`check_row`). ``make(tmp, ctx)`` writes the bad input under ``tmp`` and returns the command's arguments;
``ctx`` hands out shared good inputs (a tiny saved model, a folder of good pairs, a shipped config) built once.
"""

from __future__ import annotations

import io
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

    def pairs(self, tmp: Path) -> Path:
        """A folder of two good pairs under ``tmp``."""
        rng = np.random.default_rng(0)
        for side in ("A", "B"):
            for name in ("p0.png", "p1.png"):
                png(tmp / "pairs" / side / name, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        return tmp / "pairs"

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
