"""The contract between the generic trainer and a system's objective, and the DDP scaling rule, applied here only.

**Phases.** Each epoch is a sequence of :class:`Phase` objects returned by ``objective.phases(epoch)`` (a pure
function of the epoch, so a resumed run replays the same plan). A phase names the training dataset it reads, an
optional filter of its items (``filter(dataset, index) -> bool``, evaluated once per run), the parameters that
train in it (``trainable``: dotted module prefixes; ``groups``: optimiser group names; both ``None`` = everything the
model marks trainable) and its own objective options. The trainer runs the phases one after another, each over its
own deterministic batch order; parameters outside a phase get no gradient and are not stepped in it.

**One update.** For each of its ``grad_accum`` micro-batches a process asks ``objective.normalizers(batch, phase)``
for local counts (e.g. ``{"tokens": 412, "samples": 32}``); the trainer sums them over micro-batches and processes
(one all-reduce) into :class:`GlobalCounts`. Then, inside the module DDP wraps (:class:`TrainingStep`), the objective
runs the model on each micro-batch and returns an :class:`ObjectiveOutput`: named, *unscaled* loss terms
(:class:`LossTerm`: this micro-batch's sum of a per-item term and the normaliser it is a mean over, or a per-pass
value; and its weight) plus named statistics that are logged only. :func:`combine_terms` — the one place that knows
about processes and accumulation — scales each term by the rule below, sums them into the loss to back-propagate and
turns every term into a statistic ``{name: (sum, count)}``. The trainer accumulates the statistics, all-reduces them
at log time and logs ``sum / count`` without knowing what they mean, plus ``loss``, the weighted sum of the terms'
means (:meth:`Objective.log_line`; the named-loss-dict idea of mmengine's ``parse_losses`` and of Lightning).

**Scaling for gradient accumulation and DDP.** DDP *averages* gradients over the W processes and accumulation
*sums* them over the k micro-batches. A term that is a mean over items of the global batch (tokens, samples, pixels)
must therefore back-propagate, per micro-batch,

    weight · W · Σ_{items of this micro-batch} term / max(N_global, 1)       (:meth:`GlobalCounts.mean_scale`)

so that 1 process × k micro-batches and k processes × 1 micro-batch give the same gradient, equal to the gradient
of the exact global mean (a global batch without items — no caption token, say — adds nothing instead of dividing by
zero). A term defined by the model per forward pass (e.g. a balance loss that is already a mean over one batch)
cannot be renormalised per item; it is averaged over the W·k micro-batches: multiplied by ``weight / k`` here
(:meth:`GlobalCounts.per_pass_scale`), DDP supplies the ``1 / W``. A term of weight 0 is logged and left out of the
loss, so its parameters get no gradient from it (a term computed on detached outputs, e.g. a head's loss during a
warm-up, trains nothing whatever its weight).
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

    def mean_scale(self, name: str, weight: float = 1.0) -> float:
        """Factor turning a micro-batch's *sum* of a per-item term into its weighted share of the global mean (× W
        for DDP). ``weight · W`` is formed first: exact for a power-of-two W, so the factor is rounded once."""
        return weight * self.world_size / max(self.totals[name], 1.0)

    def per_pass_scale(self, weight: float = 1.0) -> float:
        """Factor of a term the model defines per forward pass: averaged over the W·k micro-batches (÷k here)."""
        return weight / self.grad_accum


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


#: ``{name: (sum, count)}``: a statistic of one micro-batch, logged as ``Σ sum / Σ count`` over a log window
Stats = dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LossTerm:
    """One named term of an objective's loss on a micro-batch, unscaled (:func:`combine_terms` scales it).

    Build it with :meth:`mean` (a mean over items of the global batch) or :meth:`per_pass` (a value the model defines
    per forward pass). ``weight`` is the term's weight in the loss; 0 logs the term without training on it.
    """

    value: torch.Tensor  # 0-dim: the sum over this micro-batch's items (a mean term) or the per-pass value
    normalizer: str | None  # the GlobalCounts entry a mean term divides by; None: a per-pass term
    count: torch.Tensor | float  # items summed in ``value`` (the logged mean is Σ value / Σ count); 1 per pass
    weight: float = 1.0

    @classmethod
    def mean(cls, total: torch.Tensor, count: torch.Tensor | float, over: str, weight: float = 1.0) -> LossTerm:
        """A mean over the ``over`` items (a key of ``normalizers()``) of the global batch; ``total`` is its sum over
        this micro-batch's ``count`` items."""
        return cls(total, over, count, weight)

    @classmethod
    def per_pass(cls, value: torch.Tensor, weight: float = 1.0) -> LossTerm:
        """A value the model defines per forward pass (averaged over the micro-batches of every process)."""
        return cls(value, None, 1.0, weight)

    def scale(self, counts: GlobalCounts) -> float:
        """The factor this micro-batch's value back-propagates with (the module docstring's rule)."""
        if self.normalizer is None:
            return counts.per_pass_scale(self.weight)
        return counts.mean_scale(self.normalizer, self.weight)


@dataclass
class ObjectiveOutput:
    """What an objective returns for one micro-batch: its named loss terms (in the order they are summed) and
    statistics that are only logged (``{name: (sum, count)}``, e.g. an accuracy). ``loss`` is no name of either."""

    terms: dict[str, LossTerm]
    stats: Stats = field(default_factory=dict)


@dataclass
class StepLoss:
    """One micro-batch as the trainer sees it (:func:`combine_terms`): the scaled loss to back-propagate, the
    detached statistics of the terms and the objective, and each term's weight (for the logged total)."""

    loss: torch.Tensor
    stats: Stats
    weights: dict[str, float]


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
        """Run the model on one micro-batch and return its unscaled loss terms (the module docstring)."""
        raise NotImplementedError

    def log_values(self, means: Mapping[str, float], step: StepInfo) -> dict[str, Any]:
        """The statistics' means and values an objective derives for the log (e.g. a scheduled weight); default: the
        means. The loss is added by :meth:`log_line`."""
        return dict(means)

    def log_line(self, means: Mapping[str, float], weights: Mapping[str, float], step: StepInfo) -> dict[str, Any]:
        """What a training log line shows: :meth:`log_values` and ``loss`` = Σ weight · mean over the terms, in their
        order. A log window never spans two phases, so the weights are those of the window's updates."""
        values = self.log_values(means, step)
        if weights:
            values["loss"] = sum(weight * means[name] for name, weight in weights.items())
        return values


ObjectiveFactory = Callable[[Mapping[str, Any], Any], Objective]


def combine_terms(output: ObjectiveOutput, counts: GlobalCounts) -> StepLoss:
    """Scale each term for DDP and accumulation (the module docstring's rule), sum them in order into the loss to
    back-propagate, and turn each into the statistic ``(value, count)``. Terms of weight 0 are logged only (a zero
    without gradient is the loss when every weight is 0)."""
    if not isinstance(output, ObjectiveOutput):
        raise TypeError(f"an objective returns ObjectiveOutput(terms, stats), got {type(output).__name__}")
    loss: torch.Tensor | None = None
    stats: Stats = {}
    weights: dict[str, float] = {}
    taken = sorted(({"loss"} & {*output.terms, *output.stats}) | (output.terms.keys() & output.stats.keys()))
    if taken:
        raise ValueError(f"term and statistic names must differ and not be 'loss' (the total); clashing: {taken}")
    for name, term in output.terms.items():
        if term.value.dim() != 0:
            raise ValueError(f"loss term {name!r} has shape {tuple(term.value.shape)}; a term is 0-dim (a sum)")
        if term.normalizer is not None and term.normalizer not in counts.totals:
            known = ", ".join(counts.totals) or "nothing"
            raise ValueError(f"loss term {name!r} is a mean over {term.normalizer!r}, which normalizers() does not "
                             f"count (it counts {known})")  # fmt: skip
        count = term.count
        if not isinstance(count, torch.Tensor):
            count = torch.full((), float(count), device=term.value.device)
        stats[name] = (term.value.detach(), count.detach())
        weights[name] = float(term.weight)
        if term.weight != 0:  # weight 0: logged only, so its parameters get no gradient from it
            scaled = term.value * term.scale(counts)
            loss = scaled if loss is None else loss + scaled
    stats.update(output.stats)
    if loss is None:
        device = next(iter(stats.values()))[0].device if stats else None
        loss = torch.zeros((), device=device)
    return StepLoss(loss, stats, weights)


class TrainingStep(nn.Module):
    """The module that DDP wraps: objective(model, batch) → :func:`combine_terms` → :class:`StepLoss`.

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

    def forward(self, batch: Mapping[str, Any], step: StepInfo) -> StepLoss:
        return combine_terms(self.objective(self.model, batch, step), step.counts)


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
