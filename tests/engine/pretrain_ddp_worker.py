"""Entry point of the 2-process pretraining test: ``torchrun --nproc-per-node 2 pretrain_ddp_worker.py ROOT OUT``."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from changecap.engine.pretrain import pretrain
from tests.engine.test_pretrain import config
from tests.models.foundations.tiny_targets import TINY_CLIP


def main() -> None:
    torch.set_num_threads(1)
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    result = pretrain("clip", config(root, out, TINY_CLIP, epochs=2, batch_size=10))
    print(f"done {result.updates}")


if __name__ == "__main__":
    main()
