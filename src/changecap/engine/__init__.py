"""Training engine: typed configs, objectives looked up by name, the DDP training loop, exact-resume checkpoints.

The engine trains any architecture of the model registry; what it optimises comes from the architecture's
objective (``engine.objectives``), never from the engine itself. A run folder (``train.output_dir``) holds::

    config.yaml      the resolved config (after --set overrides)
    vocab.json       the training vocabulary (peers' format)
    metrics.jsonl    one JSON line per log step ("kind": "train") and per validation ("kind": "val")
    checkpoint/      the latest training state (see ``engine.checkpoint``); a new run in the folder resumes from it
    best/            the model with the best validation ``train.select_metric`` (``changecap.models.io`` layout +
                     preprocess.json), ready for ``changecap evaluate`` / ``ChangeCaptioner.from_pretrained``
    last/            the model at the end of the run
    tensorboard/     only with ``logging.tensorboard: true`` and TensorBoard installed

>>> from changecap.engine import load_config, train
>>> result = train(load_config("configs/plain_synthcc_cpu.yaml", overrides=["data.root=synthcc"]))  # doctest: +SKIP
>>> result.best_dir, result.best_metric                                                            # doctest: +SKIP

Foundations are pretrained by the same engine: ``changecap.engine.pretrain.pretrain(target, config)`` with a config
from ``changecap.engine.pretrain_config.load_pretrain_config`` (``docs/pretraining.md``).
"""

from changecap.engine.config import TrainConfig, apply_overrides, load_config
from changecap.engine.objectives import LossTerm, Objective, ObjectiveOutput, Phase, StepInfo, build_objective
from changecap.engine.trainer import Trainer, TrainResult, train

__all__ = [
    "LossTerm",
    "Objective",
    "ObjectiveOutput",
    "Phase",
    "StepInfo",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "apply_overrides",
    "build_objective",
    "load_config",
    "train",
]
