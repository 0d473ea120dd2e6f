"""The one place that scales, sums and logs loss terms (``combine_terms``, ``Objective.log_line``): the DDP and
accumulation rule on a linear model whose gradients are known in closed form, weight-0 terms, empty normalisers,
statistics, the logged total and the errors a plug-in objective gets."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest
import torch
from torch import nn

from changecap.engine.objectives import (
    GlobalCounts,
    LossTerm,
    Objective,
    ObjectiveOutput,
    Phase,
    StepInfo,
    TrainingStep,
    combine_terms,
)


class SquaredError(Objective):
    """A mean term over ``items`` (squared error of a linear model) and a per-pass term (the weight's squared norm)."""

    def __init__(self, mean_weight: float = 1.0, pass_weight: float = 0.5) -> None:
        super().__init__()
        self.mean_weight, self.pass_weight = mean_weight, pass_weight

    def normalizers(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, float]:
        return {"items": float(len(batch["x"]))}

    def __call__(self, model: nn.Module, batch: Mapping[str, Any], step: StepInfo) -> ObjectiveOutput:
        err = (model(batch["x"]).squeeze(-1) - batch["y"]) ** 2  # [B]
        return ObjectiveOutput(
            terms={
                "mse": LossTerm.mean(err.sum(), len(err), over="items", weight=self.mean_weight),
                "norm": LossTerm.per_pass(model.weight.pow(2).sum(), weight=self.pass_weight),
            },
            stats={"max_err": (err.detach().max(), torch.tensor(1.0))},
        )


def _batch(n: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"x": torch.randn(n, 3, generator=g), "y": torch.randn(n, generator=g)}


def _grad(objective: Objective, parts: list[dict[str, torch.Tensor]], world: int, accum: int) -> torch.Tensor:
    """The gradient one optimiser update applies: ``world`` processes × ``accum`` micro-batches (``parts`` in
    rank-major order), DDP's average over processes done by hand."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False)
    step = TrainingStep(model, objective)
    phase = Phase()
    totals: dict[str, float] = {}
    for part in parts:
        for name, value in objective.normalizers(part, phase).items():
            totals[name] = totals.get(name, 0.0) + value
    info = StepInfo(0, phase, GlobalCounts(totals, world, accum), torch.device("cpu"))
    per_process = []
    for rank in range(world):
        model.zero_grad(set_to_none=True)
        for part in parts[rank * accum : (rank + 1) * accum]:
            step(part, info).loss.backward()
        per_process.append(model.weight.grad.clone())
    return torch.stack(per_process).mean(dim=0)


def test_the_gradient_is_the_global_mean_for_any_split_over_processes_and_micro_batches() -> None:
    batch = _batch(6)
    parts = [{k: v[i : i + 2] for k, v in batch.items()} for i in (0, 2, 4)]
    full = _grad(SquaredError(), [batch], 1, 1)
    torch.manual_seed(0)
    w = nn.Linear(3, 1, bias=False).weight.detach()
    err = batch["x"] @ w.t() - batch["y"][:, None]  # [B, 1]
    expected = 2 * (err * batch["x"]).mean(dim=0, keepdim=True) + 0.5 * 2 * w  # d/dw of mean((xw - y)²) + 0.5 |w|²
    torch.testing.assert_close(full, expected)
    torch.testing.assert_close(_grad(SquaredError(), parts, 1, 3), full)  # 1 process × 3 micro-batches
    torch.testing.assert_close(_grad(SquaredError(), parts, 3, 1), full)  # 3 processes × 1 micro-batch


def test_scaling_weights_and_statistics_of_one_micro_batch() -> None:
    model = nn.Linear(3, 1, bias=False)
    batch = _batch(4)
    counts = GlobalCounts({"items": 12.0}, world_size=2, grad_accum=3)
    info = StepInfo(0, Phase(), counts, torch.device("cpu"))
    out = SquaredError(mean_weight=0.3, pass_weight=0.7)(model, batch, info)
    mse, norm = out.terms["mse"].value, out.terms["norm"].value
    step = combine_terms(out, counts)
    torch.testing.assert_close(step.loss, mse * (0.3 * 2 / 12) + norm * (0.7 / 3))
    assert step.weights == {"mse": 0.3, "norm": 0.7} and list(step.weights) == ["mse", "norm"]
    assert set(step.stats) == {"mse", "norm", "max_err"}
    total, count = step.stats["mse"]
    assert torch.equal(total, mse.detach()) and float(count) == 4.0 and not total.requires_grad
    assert float(step.stats["norm"][1]) == 1.0  # a per-pass term is logged as a mean over passes


def test_a_weight_zero_term_is_logged_and_trains_nothing() -> None:
    model = nn.Linear(3, 1, bias=False)
    counts = GlobalCounts({"items": 4.0}, world_size=1, grad_accum=1)
    out = SquaredError(mean_weight=0.0)(model, _batch(4), StepInfo(0, Phase(), counts, torch.device("cpu")))
    step = combine_terms(out, counts)
    torch.testing.assert_close(step.loss, out.terms["norm"].value * 0.5)
    assert step.weights["mse"] == 0.0 and float(step.stats["mse"][0]) > 0
    everything_zero = ObjectiveOutput({"mse": LossTerm.mean(out.terms["mse"].value, 4, over="items", weight=0.0)})
    assert not combine_terms(everything_zero, counts).loss.requires_grad


def test_an_empty_normaliser_divides_by_one_not_zero() -> None:
    """A global batch without a single item of a term's normaliser (e.g. no caption token) adds nothing."""
    p = nn.Parameter(torch.tensor(2.0))
    counts = GlobalCounts({"tokens": 0.0, "samples": 0.0}, world_size=2, grad_accum=1)
    out = ObjectiveOutput({"ce": LossTerm.mean(p * 0.0, 0, over="tokens"), "r": LossTerm.mean(p * 0.0, 0, "samples")})
    step = combine_terms(out, counts)
    step.loss.backward()
    assert float(step.loss.detach()) == 0.0 and math.isfinite(float(p.grad)) and float(p.grad) == 0.0


def test_log_line_adds_the_weighted_total_of_the_terms_in_order() -> None:
    class Scheduled(SquaredError):
        def log_values(self, means: Mapping[str, float], step: StepInfo) -> dict[str, Any]:
            return {**means, "schedule": 3}

    means = {"max_err": 9.0, "mse": 0.25, "norm": 2.0}
    info = StepInfo(0, Phase(), None, torch.device("cpu"))  # type: ignore[arg-type]  # log time: no counts
    values = Scheduled().log_line(means, {"mse": 1.0, "norm": 0.5}, info)
    assert values == {"max_err": 9.0, "mse": 0.25, "norm": 2.0, "schedule": 3, "loss": 0.25 + 0.5 * 2.0}
    assert list(values)[-1] == "loss"
    assert "loss" not in Objective().log_line({"acc": 1.0}, {}, info)  # no term, no total


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (ObjectiveOutput({"loss": LossTerm.per_pass(torch.tensor(1.0))}), "clashing: \\['loss'\\]"),
        (ObjectiveOutput({"a": LossTerm.per_pass(torch.tensor(1.0))}, {"a": (torch.tensor(1.0),) * 2}), "\\['a'\\]"),
        (ObjectiveOutput({"a": LossTerm.per_pass(torch.ones(2))}), "'a' has shape \\(2,\\)"),
        (ObjectiveOutput({"a": LossTerm.mean(torch.tensor(1.0), 1, over="pixels")}), "'a' is a mean over 'pixels'"),
    ],
)
def test_malformed_terms_are_named(output: ObjectiveOutput, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        combine_terms(output, GlobalCounts({"tokens": 3.0}, world_size=1, grad_accum=1))


def test_an_objective_returning_something_else_is_a_type_error() -> None:
    class OldStyle(Objective):
        def __call__(self, model: nn.Module, batch: Mapping[str, Any], step: StepInfo) -> Any:
            return model(batch["x"]).sum()

    info = StepInfo(0, Phase(), GlobalCounts({}, 1, 1), torch.device("cpu"))
    with pytest.raises(TypeError, match="returns ObjectiveOutput"):
        TrainingStep(nn.Linear(3, 1), OldStyle())(_batch(2), info)
