"""Training objectives the engine looks up by name; the trainer itself knows none of them.

An architecture names its objective in the model registry (``Architecture.objective``) as one of:

* a name: the objective ``<name>`` lives in ``changecap/engine/objectives/<name>.py``, which exposes it as
  ``OBJECTIVE`` (imported on first use; adding an objective is adding that file);
* ``"package.module:attribute"``: an objective outside this package (a plug-in);
* the objective class or factory itself (how a test brings its own).
 The contract between an objective
and the trainer — phases, normalisers, named loss terms and statistics, the DDP scaling rule (applied there, by
``combine_terms``, for every objective) — is documented in ``base.py``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from changecap.engine.objectives.base import (
    GlobalCounts,
    LossTerm,
    Objective,
    ObjectiveOutput,
    Phase,
    StepInfo,
    StepLoss,
    TrainingStep,
    batch_size,
    caption_ce_sum,
    caption_targets,
    combine_terms,
    count_target_tokens,
)


def objective_factory(ref: str | Callable[..., Any]) -> Any:
    """The objective class (or factory) ``ref`` names (see the module docstring for the three forms)."""
    if callable(ref):
        return ref
    module_name, sep, attr = str(ref).partition(":")
    if not sep:
        if not module_name.isidentifier():
            raise ValueError(f"objective name {ref!r} is not an identifier")  # a bug in a registry entry
        module_name, attr = f"{__name__}.{module_name}", "OBJECTIVE"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise ValueError(f"no objective {ref!r}: module {module_name} does not exist") from None
    return getattr(module, attr)  # the attribute the reference names


def build_objective(ref: str | Callable[..., Any], loss: Any, train_config: Any) -> Objective:
    """Instantiate the objective ``ref`` for a run: ``cls.from_config(loss_section, train_config)``."""
    factory = objective_factory(ref)
    maker = getattr(factory, "from_config", factory)  # an Objective class, or a plain factory function
    return maker(dict(loss or {}), train_config)


__all__ = [
    "GlobalCounts",
    "LossTerm",
    "Objective",
    "ObjectiveOutput",
    "Phase",
    "StepInfo",
    "StepLoss",
    "TrainingStep",
    "batch_size",
    "build_objective",
    "caption_ce_sum",
    "caption_targets",
    "combine_terms",
    "count_target_tokens",
    "objective_factory",
]
