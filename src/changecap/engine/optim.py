"""Optimisers by name over the parameter groups a model declares.

A model (a :class:`~changecap.models.contract.ChangeModel`) declares ``parameter_groups() -> {name: [parameters]}``
(an encoder, a fusion and a decoder, say); parameters in no group, or every parameter of a module that is no
``ChangeModel``, form the group ``other`` (``model`` when it is the only one). Only parameters with
``requires_grad`` at build time enter the optimiser, so frozen weights (a frozen LLM, a frozen change-detection
prior) hold no optimiser state: with LoRA, the state is LoRA-only.
``optim.group_lr`` gives a group its own learning rate; the others use ``optim.lr``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from changecap.engine.config import OptimConfig
from changecap.errors import ConfigError
from changecap.models.contract import ChangeModel

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
# optim.implementation → the optimiser's keyword arguments (fused Adam(W) runs on CPU and CUDA since torch 2.4)
IMPLEMENTATIONS: dict[str, dict[str, bool]] = {
    "fused": {"fused": True},
    "foreach": {"foreach": True},
    "for-loop": {"foreach": False},
}


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """``{group: trainable parameters}`` in the model's order of groups, each parameter in exactly one group."""
    declared = model.parameter_groups() if isinstance(model, ChangeModel) else {}
    seen: set[int] = set()
    groups: dict[str, list[nn.Parameter]] = {}
    for name, params in declared.items():
        chosen = [p for p in params if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in chosen)
        if chosen:
            groups[name] = chosen
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    if rest:
        groups["other" if declared else "model"] = rest
    return groups


def build_optimizer(
    model: nn.Module, config: OptimConfig, source: str | None = None
) -> tuple[torch.optim.Optimizer, dict[str, list[nn.Parameter]]]:
    """The optimiser ``config.name`` with one named group per parameter group; returns it and the groups."""
    groups = parameter_groups(model)
    if not groups:
        raise ConfigError("model", "the model has no trainable parameters", path=source)
    for name in config.group_lr:
        if name not in groups:
            known = ", ".join(groups)
            raise ConfigError(f"optim.group_lr.{name}", f"no such parameter group (the model has {known})", path=source)
    param_groups: list[dict[str, Any]] = [
        {"name": name, "params": params, "lr": config.group_lr.get(name, config.lr)} for name, params in groups.items()
    ]
    cls = OPTIMIZERS[config.name]
    kernel = IMPLEMENTATIONS["fused" if config.implementation == "auto" else config.implementation]
    optimizer = cls(
        param_groups, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay, **kernel
    )
    return optimizer, groups
