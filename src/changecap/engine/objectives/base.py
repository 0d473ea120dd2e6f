"""The contract between the generic trainer and a system's objective, and the DDP scaling rule they share.

**Phases.** Each epoch is a sequence of :class:`Phase` objects returned by ``objective.phases(epoch)`` (a pure
function of the epoch, so a resumed run replays the same plan). A phase names the training dataset it reads, an
optional filter of its items (``filter(dataset, index) -> bool``, evaluated once per run), the parameters that
train in it (``trainable``: dotted module prefixes; ``groups``: optimiser group names; both ``None`` = everything the
model marks trainable) and its own objective options. The trainer runs the phases one after another, each over its
own deterministic batch order; parameters outside a phase get no gradient and are not stepped in it.

**One update.** For each of its ``grad_accum`` micro-batches a process asks ``objective.normalizers(batch, phase)``
for local counts (e.g. ``{"tokens": 412, "samples": 32}``); the trainer sums them over micro-batches and processes
(one all-reduce) into :class:`GlobalCounts`. Then, inside the module DDP wraps (:class:`TrainingStep`), the objective
runs the model on each micro-batch and returns an :class:`ObjectiveOutput`: the loss to back-propagate and named
statistics ``{name: (sum, count)}`` the trainer accumulates, all-reduces at log time and logs as ``sum / count``
without knowing what they mean (the named-loss-dict idea of mmengine and Lightning).

**Scaling for gradient accumulation and DDP** (the one rule every objective follows). DDP *averages* gradients over
the W processes and accumulation *sums* them over the k micro-batches. A term that is a mean over items of the
global batch (tokens, samples, pixels) must therefore back-propagate, per micro-batch,

    W · Σ_{items of this micro-batch} term / N_global          (:meth:`GlobalCounts.mean_scale`)

so that 1 process × k micro-batches and k processes × 1 micro-batch give the same gradient, equal to the gradient
of the exact global mean. A term defined by the model per forward pass (e.g. a balance loss that is already a mean
over one batch) cannot be renormalised per item; it is averaged over the W·k micro-batches: multiplied by ``1 / k``
here (:meth:`GlobalCounts.per_pass_scale`), DDP supplies the ``1 / W``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from changecap.data.vocab import NULL_ID
from changecap.engine.precision import autocast

#: ``(dataset, index) -> bool``: whether item ``index`` takes part in a phase (must not load images: it runs over
#: the whole dataset once per run).
ItemFilter = Callable[[Dataset, int], bool]


@dataclass(frozen=True)
class Phase:
    """One pass of an epoch over (part of) a training dataset with a fixed trainable set (module docstring)."""

    name: str = "train"
    dataset: str = "train"  # which of the trainer's training datasets
    filter: ItemFilter | None = None  # items of that dataset this phase uses (None: all)
    trainable: tuple[str, ...] | None = None  # dotted module prefixes that train (None: all trainable parameters)
    groups: tuple[str, ...] | None = None  # optimiser groups that train (None: all)
    options: Mapping[str, Any] = field(default_factory=dict)  # the objective's own per-phase values


@dataclass(frozen=True)
class GlobalCounts:
    """The normalisers of one optimiser update, summed over every process and micro-batch."""

    totals: Mapping[str, float]  # e.g. {"tokens": ..., "samples": ...} for the whole global batch
    world_size: int
    grad_accum: int

    def __getitem__(self, name: str) -> float:
        return self.totals[name]

    def mean_scale(self, name: str) -> float:
        """Factor turning a micro-batch's *sum* of a per-item term into its share of the global mean (× W for DDP)."""
        return self.world_size / max(self.totals[name], 1.0)

    def per_pass_scale(self) -> float:
        """Factor of a term the model defines per forward pass: averaged over the W·k micro-batches (÷k here)."""
        return 1.0 / self.grad_accum


@dataclass(frozen=True)
class StepInfo:
    """What an objective knows about the update it computes: epoch, phase, normalisers, precision."""

    epoch: int
    phase: Phase
    counts: GlobalCounts
    device: torch.device
    autocast_dtype: torch.dtype | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The run's mixed-precision context for the model's forward (a no-op in fp32)."""
        return autocast(self.device, self.autocast_dtype)


@dataclass
class ObjectiveOutput:
    """One micro-batch's loss (carries the gradient) and detached named statistics ``{name: (sum, count)}``."""

    loss: torch.Tensor
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]]


class Objective:
    """Base class of training objectives; subclasses implement :meth:`__call__` and usually :meth:`normalizers`.

    ``config_class`` (a dataclass, or None) is the schema of the run's ``loss`` section; :meth:`from_config` reads
    it with the strict loader and builds the objective. The statistics' names must depend on the phase only
    (every process must report the same names).
    """

    config_class: type | None = None

    def __init__(self, config: Any = None, train_config: Any = None) -> None:
        self.config = config
        self.train_config = train_config

    # ------------------------------------------------------------------ construction
    @classmethod
    def read_config(cls, loss: Mapping[str, Any], train_config: Any) -> Any:
        """The ``loss`` section as ``config_class`` (ConfigError naming ``loss.<field>``)."""
        from changecap.errors import ConfigError
        from changecap.schema import from_dict

        if cls.config_class is None:
            if loss:
                raise ConfigError(f"loss.{next(iter(loss))}", f"the {cls.__name__} objective takes no options")
            return None
        return from_dict(cls.config_class, dict(loss or {}), "loss")

    @classmethod
    def from_config(cls, loss: Mapping[str, Any], train_config: Any) -> Objective:
        return cls(cls.read_config(loss, train_config), train_config)

    # ------------------------------------------------------------------ the contract
    def bind(self, model: nn.Module) -> None:
        """Called once by the trainer with the built model (e.g. to count caption tokens with its tokenizer)."""

    def prepare(self, datasets: Mapping[str, Dataset], ctx: Any) -> None:
        """Called once by the trainer before the first update (and again on resume) with the training datasets and
        the process context (``engine.distributed.DistContext``): the place for work done once per run, e.g.
        embedding every training caption with a frozen encoder. Default: nothing."""

    def phases(self, epoch: int) -> Sequence[Phase]:
        """The phases of ``epoch`` (0-indexed), in order. Default: one phase over the whole training set."""
        return (Phase(),)

    def normalizers(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, float]:
        """Local counts of one micro-batch that the loss is normalised by (summed globally by the trainer)."""
        return {"samples": float(batch_size(batch))}

    def __call__(self, model: nn.Module, batch: Mapping[str, Any], step: StepInfo) -> ObjectiveOutput:
        raise NotImplementedError

    def log_values(self, means: Mapping[str, float], step: StepInfo) -> dict[str, Any]:
        """What a training log line shows: by default the statistics' means; objectives add derived values."""
        return dict(means)


ObjectiveFactory = Callable[[Mapping[str, Any], Any], Objective]


class TrainingStep(nn.Module):
    """The module that DDP wraps: objective(model, batch) → :class:`ObjectiveOutput`.

    The loss is computed *inside* the wrapped forward on purpose. With ``find_unused_parameters=True`` DDP walks
    the autograd graph from the forward's outputs to find the parameters that will receive no gradient. If the raw
    model output were returned, outputs that only enter the loss detached (or not at all, in some phase) would be
    reachable and DDP would wait forever for their gradients. Returning the loss and detached statistics makes the
    graph DDP sees exactly the graph that is back-propagated.
    """

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: Mapping[str, Any], step: StepInfo) -> ObjectiveOutput:
        return self.objective(self.model, batch, step)


# ---------------------------------------------------------------------------------------------------------- helpers
def batch_size(batch: Mapping[str, Any]) -> int:
    """Items in a collated batch: the length of its ``image`` (or of its first tensor / list)."""
    value = batch.get("image")
    if value is None:
        value = next((v for v in batch.values() if isinstance(v, (torch.Tensor, list, tuple))), ())
    return len(value)


def count_target_tokens(target: torch.Tensor) -> int:
    """Target tokens scored by the caption loss: positions 1.. that are not ``<NULL>``."""
    return int((target[:, 1:] != NULL_ID).sum())


def caption_targets(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align teacher-forcing logits with the tokens they predict.

    ``logits`` are ``[B, T, V]`` for input ``target [B, T]`` (a model may also return ``[B, T-1, V]``, having
    dropped the useless last position). Returns ``(logits [B, T-1, V], labels [B, T-1])``; labels of padding
    positions are ``<NULL>`` and are masked out by the caller.
    """
    t = target.shape[1]
    if logits.shape[1] == t:
        logits = logits[:, :-1]  # [B, T-1, V]: the prediction after the last token has no target
    elif logits.shape[1] != t - 1:
        raise ValueError(f"logits cover {logits.shape[1]} positions for targets of length {t}")
    return logits, target[:, 1:]  # [B, T-1]


def caption_ce_sum(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of token cross-entropies over real target tokens (incl. ``<END>``, excl. ``<START>``/``<NULL>``).

    Computed in fp32 whatever the autocast dtype. Returns ``(sum, count)``, both 0-dim.
    """
    logits, labels = caption_targets(logits, target)
    mask = labels != NULL_ID  # [B, T-1]: <START> never appears after position 0, <NULL> pads after <END>
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
    ce = ce.view_as(labels)  # [B, T-1]
    return (ce * mask).sum(), mask.sum()
