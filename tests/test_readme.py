"""The README's marked command blocks run as written after ``make demo``.

Each block runs in order in a temporary folder laid out as ``make demo`` leaves the repository (its paths come from
``scripts/demo.py``), with tiny stand-ins: a 10-pair SynthCC set where the demo generates its set and a randomly
initialised 64 px HiSem where the demo saves its trained model. Every command runs through ``python -m changecap``
and must exit 0 and write what it promises (:data:`PROMISES`). ``changecap serve`` runs until stopped: it is started
on a free port (``--port`` appended) and must answer ``GET /api/health`` before it is stopped.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

from changecap.data.annotations import parse_annotations
from changecap.data.vocab import Vocabulary
from changecap.inference import PreprocessConfig
from changecap.models import build_model, save_model
from changecap.models.hisem import tiny_config
from changecap.synth import generate_synthcc
from tests.conftest import REPO_ROOT
from tests.doc_commands import DocBlock, DocCommand, marked_blocks, python_argv

README = REPO_ROOT / "README.md"
COMMAND_TIMEOUT_S = 120  # a command that has not finished by then is stuck (each takes a few seconds)


def _demo_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("changecap_demo_script", REPO_ROOT / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lay_out_demo(root: Path) -> None:
    """``root`` as ``make demo`` leaves it (default options), with a tiny data set and an untrained model."""
    demo = _demo_script()
    args = demo.build_parser().parse_args([])
    out = root / args.out
    data_dir = generate_synthcc(demo.data_folder(out, args.preset, args.seed), pairs=10, size=64, progress=False)
    records = parse_annotations(data_dir, "levir-mci")
    vocab = Vocabulary.from_captions([c for r in records for c in r.captions], threshold=0)
    torch.manual_seed(0)
    config = tiny_config(len(vocab), image_size=64, patch_size=8, dim=32, architecture="hisem", max_length=24)
    model_dir = save_model(build_model(config).eval(), config, vocab, out / demo.RUN_FOLDER / "best")
    PreprocessConfig(image_size=64, resize_mode="resize").save(model_dir)


def _env() -> dict[str, str]:
    """This checkout's code first, offline, one thread per process (the suite runs beside other workers)."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1"}  # fmt: skip


def _run(command: DocCommand, cwd: Path) -> None:
    done = subprocess.run(
        python_argv(command), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stderr[-2000:]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(command: DocCommand, cwd: Path) -> None:
    """Start the server on a free port, wait for ``/api/health`` to answer, stop it."""
    port = _free_port()
    server = subprocess.Popen(
        [*python_argv(command), "--port", str(port)], cwd=cwd, env=_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        health = None
        while health is None and time.monotonic() < deadline:
            assert server.poll() is None, f"{command} exited {server.returncode}:\n{server.communicate()[1][-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as response:
                    health = json.loads(response.read())
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)  # not listening yet
        assert health is not None, f"{command}: no answer on /api/health within {COMMAND_TIMEOUT_S} s"
        assert health["status"] == "ok" and health["architecture"] == "hisem"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _synth_outputs(command: DocCommand, cwd: Path) -> None:
    folder = cwd / str(command.option("--geotiff"))
    for name in ("before.tif", "after.tif", "change_truth.tif"):
        assert (folder / name).is_file(), f"{command}: {folder / name} missing"


def _scene_outputs(command: DocCommand, cwd: Path) -> None:
    out = cwd / str(command.option("--out"))
    collection = json.loads((out / "changes.geojson").read_text())
    assert collection["type"] == "FeatureCollection" and collection["features"], f"{command}: no tile in the GeoJSON"
    assert (out / "report.html").stat().st_size > 0


def _caption_outputs(command: DocCommand, cwd: Path) -> None:
    pairs = cwd / str(command.option("--pairs"))
    with (cwd / str(command.option("--out"))).open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["name"] for r in rows) == sorted(p.name for p in (pairs / "A").iterdir())
    assert all(r["caption"] and not r["error"] for r in rows), f"{command}: {rows}"


#: what each changecap subcommand of a marked block promises (checked after it exits 0)
PROMISES: dict[str, Callable[[DocCommand, Path], None]] = {
    "synth": _synth_outputs,
    "scene": _scene_outputs,
    "caption": _caption_outputs,
}


BLOCKS = marked_blocks(README)


def test_the_readme_has_a_marked_block() -> None:
    assert BLOCKS, "README.md has no <!-- tested-commands:begin --> block"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_marked_readme_commands_run_after_make_demo(block: DocBlock, tmp_path: Path) -> None:
    unknown = [str(c) for c in block.commands if c.subcommand not in (*PROMISES, "serve")]
    assert not unknown, f"say in PROMISES what these commands write: {unknown}"
    if any(c.subcommand == "scene" or c.option("--geotiff") for c in block.commands):
        pytest.importorskip("rasterio", reason="GeoTIFF commands need the [geo] extra (make test installs it)")
    if any(c.subcommand == "serve" for c in block.commands):
        pytest.importorskip("uvicorn", reason="changecap serve needs the [serve] extra (make test installs it)")
    _lay_out_demo(tmp_path)
    for command in block.commands:
        if command.subcommand == "serve":
            _serve(command, tmp_path)
        else:
            _run(command, tmp_path)
            PROMISES[str(command.subcommand)](command, tmp_path)


# ------------------------------------------------------------------------------------------------ the extractor
def test_extraction_of_marked_blocks(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```\nchangecap info   # not marked\n```\n"
        "<!-- tested-commands:begin -->\n"
        "```bash\n# a comment line\n\nchangecap caption --pairs 'a b' --out x.csv   # trailing\n"
        "changecap scene b.tif a.tif \\\n    --out=scene_out\n```\n"
        "text between fences\n"
        "```\necho '# kept'\n```\n"
        "<!-- tested-commands:end -->\n"
        "````\n<!-- tested-commands:begin -->\n````\n"  # a marker shown inside a code block is no marker
    )
    (block,) = marked_blocks(doc)
    assert block.id == "doc.md:4"
    assert [c.argv for c in block.commands] == [
        ("changecap", "caption", "--pairs", "a b", "--out", "x.csv"),
        ("changecap", "scene", "b.tif", "a.tif", "--out=scene_out"),
        ("echo", "# kept"),
    ]
    assert [c.line for c in block.commands] == [8, 9, 14]
    caption, scene, echo = block.commands
    assert caption.option("--pairs") == "a b" and scene.option("--out") == "scene_out" and echo.subcommand is None
    assert python_argv(caption)[1:3] == ["-m", "changecap"] and python_argv(echo) == ["echo", "# kept"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- tested-commands:begin -->\n```\nchangecap info\n```\n", "without an end"),
        ("<!-- tested-commands:end -->\n", "without a begin"),
        ("<!-- tested-commands:begin -->\n<!-- tested-commands:begin -->\n", "inside the block"),
        ("<!-- tested-commands:begin -->\nno fence\n<!-- tested-commands:end -->\n", "no command"),
        ("<!-- tested-commands:begin -->\n```\nchangecap info\n", "not closed"),
        ("<!-- tested-commands:begin -->\n```\nchangecap info \\\n```\n<!-- tested-commands:end -->\n", "backslash"),
    ],
)
def test_malformed_markings_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(text)
    with pytest.raises(ValueError, match=message):
        marked_blocks(doc)
