"""2-process CPU DDP (torchrun, gloo) reaches the weights of 1 process with the same global batch.

1 process × grad_accum 4 and 2 processes × grad_accum 2 see the same four micro-batches per update (the sampler is
rank-major), so every parameter gradient is the same sum, up to float summation order. Excluded from the
comparison: BatchNorm *buffers* (running mean / var / counter). In training mode BatchNorm normalises with the
micro-batch statistics, so the parameters do not depend on the buffers; but the running estimates differ by
construction — one process folds in all four micro-batches in turn, while under DDP each process folds in its
own two and DDP then broadcasts rank 0's buffers. Dropout is off because the two set-ups draw masks from
different random streams.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from changecap.data.vocab import Vocabulary
from changecap.engine import TrainConfig, train
from changecap.engine.objectives.hisem import HisemObjective
from tests.engine.toy import ToyDataset, load_toy_weights, toy_builder, toy_saver, toy_vocab

REPO = Path(__file__).resolve().parents[2]


def ddp_config(out: Path, grad_accum: int) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "data": {"root": "toy"},
            "model": {"dim": 16},
            # lr 1e-3: Adam divides by sqrt(v), so float summation-order noise in tiny gradients (the aux-only
            # gate, weights under BatchNorm) turns into update noise proportional to lr
            "optim": {"lr": 0.001, "grad_clip": 1.0},
            "loss": {"router_warmup_epochs": 0, "gt_routing_until_epoch": 0},
            "train": {
                "epochs": 2,
                "batch_size": 8,
                "grad_accum": grad_accum,
                "output_dir": str(out),
                "val_batch_size": 4,
                "val_max_length": 10,
            },
            "logging": {"log_every": 2, "progress": False},
        },
        check_model=False,
    )


def ddp_datasets(vocab: Vocabulary) -> tuple[ToyDataset, ToyDataset]:
    return ToyDataset(30, vocab, "train"), ToyDataset(6, vocab, "val")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    vocab = toy_vocab()
    single = tmp_path / "single"
    res = train(
        ddp_config(single, 4),
        objective=HisemObjective,
        model_builder=toy_builder(dropout=0.0),
        model_saver=toy_saver,
        datasets=ddp_datasets(vocab),
        vocab=vocab,
    )
    assert res.global_step == 8  # 30 items, batch 8: 3 full + 1 of 6 per epoch

    ddp = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        str(REPO / "tests" / "engine" / "ddp_worker.py"), str(ddp), "2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done 8") == 2

    a, b = load_toy_weights(single / "last"), load_toy_weights(ddp / "last")
    assert a.keys() == b.keys()
    compared = 0
    for name in a:
        if "running_" in name or "num_batches_tracked" in name:
            continue  # BatchNorm buffers: see the module docstring
        # ~1e-6: a systematic error (a lost or doubled micro-batch) would move weights by ~lr = 1e-3
        assert torch.allclose(a[name], b[name], atol=1e-6, rtol=1e-5), name
        compared += 1
    assert compared >= 10
    initial = toy_builder(dropout=0.0)({"dim": 16}, vocab, 10)[0].state_dict()
    assert not torch.allclose(a["router.weight"], initial["router.weight"])  # the router did train


def test_a_callers_group_of_one_runs_ddp_and_matches_the_plain_run(tmp_path: Path, one_torch_thread: None) -> None:
    """A process group the caller initialised (world size 1, file store, gloo) is joined: the model is wrapped in
    DDP, the collectives run, the weights equal those of a run without a group bit for bit, and the group is still
    the caller's afterwards."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from changecap.engine import Trainer

    vocab = toy_vocab()
    common = {"objective": HisemObjective, "model_builder": toy_builder(dropout=0.0), "model_saver": toy_saver,
              "vocab": vocab}  # fmt: skip
    plain = train(ddp_config(tmp_path / "plain", 1), datasets=ddp_datasets(vocab), **common)
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        trainer = Trainer(ddp_config(tmp_path / "ddp", 1), datasets=ddp_datasets(vocab), **common)
        assert trainer.ctx.distributed and trainer.ctx.world_size == 1
        assert isinstance(trainer.step_module, DistributedDataParallel)
        trainer.fit()
        again = train(ddp_config(tmp_path / "again", 1), datasets=ddp_datasets(vocab), **common)
        assert dist.is_initialized()  # train() leaves the caller's group alone
    finally:
        dist.destroy_process_group()
    a, b = load_toy_weights(plain.last_dir), load_toy_weights(tmp_path / "ddp" / "last")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a[k], v) for k, v in load_toy_weights(again.last_dir).items())
