"""Training engine: typed configs, the HiSem objective, the DDP training loop and exact-resume checkpoints.

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
