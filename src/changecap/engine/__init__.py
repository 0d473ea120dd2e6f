"""Training engine: typed configs, the HiSem objective, the DDP training loop and exact-resume checkpoints.

A run folder (``train.output_dir``) holds::

    config.yaml      the resolved config (after --set overrides)
    vocab.json       the training vocabulary (peers' format)
    metrics.jsonl    one JSON line per log step ("kind": "train") and per validation ("kind": "val")
    checkpoint/      the latest training state (see ``engine.checkpoint``); a new run in the folder resumes from it
    best/            the model with the best validation ``train.select_metric`` (``changecap.models.io`` layout +
                     preprocess.json), ready for ``changecap evaluate`` / ``ChangeCaptioner.from_pretrained``
    last/            the model at the end of the run
    tensorboard/     only with ``logging.tensorboard: true`` and TensorBoard installed

>>> from changecap.engine import load_config, train
>>> result = train(load_config("configs/hisem_synthcc_cpu.yaml", overrides=["data.root=synthcc"]))  # doctest: +SKIP
>>> result.best_dir, result.best_metric                                                            # doctest: +SKIP
"""

from changecap.engine.config import TrainConfig, apply_overrides, load_config
from changecap.engine.objectives import EpochPlan, HisemObjective, plan_epoch, router_ramp
from changecap.engine.trainer import Trainer, TrainResult, train

__all__ = [
    "EpochPlan",
    "HisemObjective",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "apply_overrides",
    "load_config",
    "plan_epoch",
    "router_ramp",
    "train",
]
