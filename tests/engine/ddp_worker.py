"""Entry point of the 2-process DDP test: ``torchrun --nproc-per-node 2 ddp_worker.py OUT GRAD_ACCUM``."""

from __future__ import annotations

import sys
from pathlib import Path

from changecap.engine import train
from changecap.engine.objectives.hisem import HisemObjective
from tests.engine.test_ddp import ddp_config, ddp_datasets
from tests.engine.toy import toy_builder, toy_saver, toy_vocab


def main() -> None:
    out, accum = Path(sys.argv[1]), int(sys.argv[2])
    vocab = toy_vocab()
    result = train(
        ddp_config(out, accum),
        objective=HisemObjective,
        model_builder=toy_builder(dropout=0.0),
        model_saver=toy_saver,
        datasets=ddp_datasets(vocab),
        vocab=vocab,
    )
    print(f"done {result.global_step}")


if __name__ == "__main__":
    main()
