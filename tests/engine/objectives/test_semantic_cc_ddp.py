"""Semantic-CC through the engine's other paths: two DDP processes (``torchrun`` + ``changecap train``, gloo on CPU)
reach the weights of one process with the same global batch across all three stages, and a bf16-autocast run
trains, validates and saves a model that loads and captions.

Dropout is off everywhere (Q-Former, LoRA) and one instruction is configured: the two set-ups draw dropout masks
and per-sample instructions from different random streams. The CD
decoder's BatchNorm running statistics are left out of the comparison, as in ``tests/engine/test_ddp.py``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from changecap.engine import load_config, train
from changecap.inference import ChangeCaptioner
from tests.data.fakes import make_levir
from tests.engine.objectives.test_semantic_cc import write_config
from tests.engine.test_ddp import free_port

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> Iterator[None]:
    yield


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_levir(tmp_path_factory.mktemp("levir") / "mci", "levir-mci", {"train": 8, "val": 2, "test": 2}, 64)


def no_dropout_config(folder: Path, root: Path, **train_fields: object) -> Path:
    path = write_config(folder, root, val_every=0, **train_fields)
    cfg = yaml.safe_load(path.read_text())
    caption = cfg["model"]["caption"]
    caption["qformer"] |= {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    caption["llm_lora"]["dropout"] = 0.0
    caption["instructions"] = ["Describe the changes."]  # one prompt: no per-sample draw from the rank's stream
    cfg["model"]["encoder"]["lora"]["dropout"] = 0.0
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_two_process_ddp_matches_one_process(tmp_path: Path, data_root: Path) -> None:
    # 8 pairs, global batch 4: one process accumulates 2 micro-batches of 2, two processes take one each
    single = train(load_config(no_dropout_config(tmp_path / "single", data_root, batch_size=4, grad_accum=2)))
    assert single.global_step == 6  # 3 stages × 2 updates

    cfg = no_dropout_config(tmp_path / "ddp", data_root, batch_size=4, grad_accum=1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        "-m", "changecap.cli.main", "train", str(cfg),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]

    a = load_file(str(single.last_dir / "model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "run" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    compared = 0
    for name in a:
        if "running_" in name or "num_batches_tracked" in name:
            continue  # BatchNorm buffers differ by construction (see tests/engine/test_ddp.py)
        compared += 1
        # ~1e-6: a lost or doubled micro-batch would move weights by about lr = 1e-3
        assert torch.allclose(a[name], b[name], atol=2e-6, rtol=1e-5), name
    assert compared > 50
    parts = {n.split(".")[0] for n in a}
    assert {"encoder", "neck", "cd_decoder", "caption_decoder"} <= parts


def test_bf16_autocast_run_trains_and_saves(tmp_path: Path, data_root: Path) -> None:
    cfg = load_config(write_config(tmp_path, data_root, precision="bf16", val_every=1))
    result = train(cfg)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    trains = [r for r in records if r["kind"] == "train"]
    assert {r["phase"] for r in trains} == {"cd", "cc", "neck"}
    losses = [r[k] for r in trains for k in ("cd_loss", "caption_ce") if k in r]
    assert losses and all(math.isfinite(x) for x in losses)
    assert any(r["kind"] == "val" for r in records)
    captioner = ChangeCaptioner.from_pretrained(result.last_dir, device="cpu")
    pair = data_root / "images" / "test"
    names = sorted(p.name for p in (pair / "A").iterdir())[:2]
    out = captioner([str(pair / "A" / n) for n in names], [str(pair / "B" / n) for n in names])
    assert len(out) == 2 and all(isinstance(r.caption, str) for r in out)
    assert all(r.mask is not None and r.mask.shape == (64, 64) for r in out)
