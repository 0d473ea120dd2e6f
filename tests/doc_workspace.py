"""Run the marked command blocks of README.md and docs/*.md as a reader would after ``make demo``.

Each block runs in order in a fresh folder laid out as ``make demo`` leaves the repository (the paths come from
``scripts/demo.py``), with tiny stand-ins made once per test session: a 12-pair, 64 px SynthCC set where the demo
generates its set and a randomly initialised 64 px HiSem where the demo saves its trained model; ``configs/`` is the
repository's. ``changecap`` commands run in this process through ``changecap.cli.main.main`` (no interpreter start
per command), except ``changecap serve``, which runs until stopped: it is started in a child process on a free port
and must answer ``GET /api/health``.

Commands run as written, with test-sized values appended for the commands that would otherwise take minutes
(:data:`TEST_SIZE`; argparse and ``--set`` take the last value given): SynthCC sets of 12 pairs of 64 px, one training
epoch, no METEOR jar. Each command must exit with the block's status (0 unless ``exit=N``) and write what it
promises: the files its output options name (:data:`OUTPUTS`), its training run's ``best/`` model, or text on
stdout (:data:`PRINTS`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from changecap.cli.main import main as changecap_main
from changecap.data.annotations import parse_annotations
from changecap.data.vocab import Vocabulary
from changecap.engine import load_config
from changecap.engine.pretrain_config import load_pretrain_config
from changecap.inference import PreprocessConfig
from changecap.models import build_model, save_model
from changecap.models.hisem import tiny_config
from changecap.synth import generate_synthcc
from tests.conftest import REPO_ROOT
from tests.doc_commands import DocBlock, DocCommand, python_argv

COMMAND_TIMEOUT_S = 120  # serve: a server that has not answered by then is stuck
DEMO_OUT = "demo_out"
DEMO_DATA = f"{DEMO_OUT}/synthcc_small_seed0"  # scripts/demo.py's data_folder for the default preset and seed
DEMO_MODEL = f"{DEMO_OUT}/run/best"  # scripts/demo.py's RUN_FOLDER / best

#: values appended to a subcommand so that it runs in seconds (a function of the command: some depend on its options)
TEST_SIZE: dict[str, Callable[[DocCommand], list[str]]] = {
    "synth": lambda c: ["--pairs", "12", "--size", "64", "--workers", "1"] if c.option("--out") else [],
    "train": lambda c: ["--set", "train.epochs=1", "--set", "train.checkpoint_every_steps=0"],
    "pretrain": lambda c: ["--set", "train.epochs=1"],
    "evaluate": lambda c: ["--meteor", "off"],
    "baselines": lambda c: ["--meteor", "off"],
}

#: options whose value names a file or folder the command must have written, per subcommand
OUTPUTS: dict[str, tuple[str, ...]] = {
    "synth": ("--out", "--figure", "--geotiff"),
    "vocab": ("--out",),
    "baselines": ("--out",),
    "compare": ("--json", "--html"),
    "caption": ("--out", "--mask", "--mask-dir"),
    "scene": ("--out",),
    "export": ("--out",),
    "evaluate": ("--out",),
    "data import": ("--out",),
    "data pack": ("--out",),
    "data audit": ("--json", "--html"),
}
#: subcommands whose result is printed (they must print something): always, or unless they write it to --out
PRINTS: frozenset[str] = frozenset({"info", "summary", "data check", "caption"})
#: subcommands whose --json is an output file, not a flag that prints JSON
JSON_FILE: frozenset[str] = frozenset({"compare", "data audit"})


def subcommand(command: DocCommand) -> str:
    """``data import`` for ``changecap data import …``, ``caption`` for ``changecap caption …``."""
    first = command.subcommand or ""
    if first in ("data", "convert", "export") and len(command.argv) > 2:
        return f"{first} {command.argv[2]}" if first == "data" else first
    return first


# ------------------------------------------------------------------------------------------------ the workspace
def make_demo_template(root: Path) -> Path:
    """``root`` laid out as ``make demo`` leaves the repository, with a tiny data set and an untrained model."""
    data_dir = generate_synthcc(root / DEMO_DATA, pairs=12, size=64, progress=False)
    records = parse_annotations(data_dir, "levir-mci")
    vocab = Vocabulary.from_captions([c for r in records for c in r.captions], threshold=0)
    torch.manual_seed(0)
    config = tiny_config(len(vocab), image_size=64, patch_size=8, dim=32, architecture="hisem", max_length=24)
    model_dir = save_model(build_model(config).eval(), config, vocab, root / DEMO_MODEL)
    PreprocessConfig(image_size=64, resize_mode="resize").save(model_dir)
    return root


def prepare_my_pairs(root: Path) -> None:
    """``my_pairs/{A,B}/siteNN.png`` and ``captions.csv`` as the import example of docs/datasets.md shows them: the
    template's train pairs under new names, with their captions."""
    records = parse_annotations(root / DEMO_DATA, "levir-mci", "train")
    for side in ("A", "B"):
        (root / "my_pairs" / side).mkdir(parents=True)
    rows = ["name,caption"]
    for i, record in enumerate(records, start=1):
        name = f"site{i:02d}"
        shutil.copyfile(record.before_path, root / "my_pairs" / "A" / f"{name}.png")
        shutil.copyfile(record.after_path, root / "my_pairs" / "B" / f"{name}.png")
        rows += [f"{name},{caption}" for caption in record.captions]
    (root / "captions.csv").write_text("\n".join(rows) + "\n")


#: files a block's ``prepare=NAME`` lays out before it runs
PREPARE: dict[str, Callable[[Path], None]] = {"my-pairs": prepare_my_pairs}


def lay_out(template: Path, workspace: Path, block: DocBlock) -> None:
    """A fresh copy of the demo template in ``workspace``, the repository's configs, and the block's files."""
    shutil.copytree(template, workspace, dirs_exist_ok=True)
    (workspace / "configs").symlink_to(REPO_ROOT / "configs", target_is_directory=True)
    for name in block.prepare:
        PREPARE[name](workspace)


# ------------------------------------------------------------------------------------------------ running
def _env() -> dict[str, str]:
    """This checkout's code first, offline, one thread per process (the suite runs beside other workers)."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1"}  # fmt: skip


@contextlib.contextmanager
def _inside(folder: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def run_command(command: DocCommand, workspace: Path, expected_status: int) -> str:
    """Run ``command`` (with its test-sized values) in ``workspace``; return its stdout. A wrong exit status fails
    with the command's stderr."""
    argv = [*command.argv, *TEST_SIZE.get(subcommand(command), lambda c: [])(command)]
    if command.subcommand is None:
        done = subprocess.run(argv, cwd=workspace, env=_env(), capture_output=True, text=True, timeout=60)
        status, out, err = done.returncode, done.stdout, done.stderr
    else:
        out_buf, err_buf = io.StringIO(), io.StringIO()
        with _inside(workspace), contextlib.redirect_stdout(out_buf), contextlib.redirect_stderr(err_buf):
            status = changecap_main(argv[1:])
        out, err = out_buf.getvalue(), err_buf.getvalue()
    assert status == expected_status, f"{command} exited {status}, not {expected_status}:\n{err[-2000:]}"
    if expected_status == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, f"{command}: not a one-line error: {err!r}"
    return out


def check_promises(command: DocCommand, workspace: Path, stdout: str) -> None:
    """What the command must have left behind (see the module docstring)."""
    name = subcommand(command)
    for option in OUTPUTS.get(name, ()):
        value = command.option(option)
        if value is not None:
            assert (workspace / value).exists(), f"{command}: {option} {value} was not written"
    if name == "train":
        overrides = [v for k, v in zip(command.argv, command.argv[1:]) if k == "--set"]
        config = load_config(workspace / command.argv[2], overrides=overrides, check_model=False)
        run = workspace / (command.option("--output-dir") or config.train.output_dir)
        assert (run / "best" / "model.safetensors").is_file(), f"{command}: no model in {run}/best"
    if name == "pretrain":
        overrides = [v for k, v in zip(command.argv, command.argv[1:]) if k == "--set"]
        config = load_pretrain_config(workspace / command.argv[3], overrides)
        out = workspace / (command.option("--output-dir") or config.train.output_dir)
        assert (out / "config.json").is_file(), f"{command}: nothing written to {out}"
    if name == "evaluate" and command.option("--out") is None:
        split = command.option("--split") or "test"
        assert (workspace / str(command.option("--model")) / f"eval_{split}" / f"metrics_{split}.json").is_file()
    prints = name in PRINTS or (name == "synth" and command.option("--stats") is not None)
    if prints and command.option("--out") is None:
        assert stdout.strip(), f"{command} printed nothing"
    if "--json" in command.argv and name not in JSON_FILE:
        json.loads(stdout)  # the --json flag prints JSON


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_server(command: DocCommand, workspace: Path) -> dict[str, object]:
    """Start ``changecap serve`` on a free port, wait for ``/api/health`` to answer, stop it; return the answer."""
    port = _free_port()
    server = subprocess.Popen(
        [*python_argv(command), "--port", str(port)], cwd=workspace, env=_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while time.monotonic() < deadline:
            assert server.poll() is None, f"{command} exited {server.returncode}:\n{server.communicate()[1][-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as response:
                    return dict(json.loads(response.read()))
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)  # not listening yet
        raise AssertionError(f"{command}: no answer on /api/health within {COMMAND_TIMEOUT_S} s")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def run_block(block: DocBlock, template: Path, workspace: Path) -> None:
    """Lay out ``workspace`` and run every command of ``block`` in order, checking each one."""
    lay_out(template, workspace, block)
    for command in block.commands:
        if command.subcommand == "serve":
            health = run_server(command, workspace)
            assert health["status"] == "ok", f"{command}: {health}"
            continue
        stdout = run_command(command, workspace, block.exit_status)
        if block.exit_status == 0:
            check_promises(command, workspace, stdout)


def needs(block: DocBlock) -> list[str]:
    """The optional extras the block's commands need, as module names (the test skips without them)."""
    modules = []
    if any(c.subcommand == "scene" or c.option("--geotiff") for c in block.commands):
        modules.append("rasterio")
    if any(c.subcommand == "serve" for c in block.commands):
        modules.append("uvicorn")
    if any(c.subcommand == "export" or c.option("--backend") == "onnx" for c in block.commands):
        modules.append("onnxruntime")
    return modules

