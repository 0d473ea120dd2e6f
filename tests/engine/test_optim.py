"""Optimisers by name over the model's parameter groups; only trainable parameters hold optimiser state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from changecap.engine.config import OptimConfig
from changecap.engine.optim import build_optimizer, parameter_groups
from changecap.errors import ConfigError
from changecap.models.contract import ChangeModel


class Parts(ChangeModel):
    """A model that declares its optimiser groups (the model contract's ``parameter_groups``)."""

    def __init__(self, groups: bool = True) -> None:
        super().__init__()
        self.encoder, self.decoder, self.head = nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 1)
        self.encoder.weight.requires_grad_(False)  # a frozen weight: no optimiser state
        self._groups = groups

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        if not self._groups:
            return {}
        return {"encoder": list(self.encoder.parameters()), "decoder": list(self.decoder.parameters())}


def test_groups_follow_the_model_and_leftovers_go_to_other() -> None:
    m = Parts()
    groups = parameter_groups(m)
    assert list(groups) == ["encoder", "decoder", "other"]
    assert groups["encoder"] == [m.encoder.bias]  # the frozen weight is left out
    assert groups["other"] == list(m.head.parameters())
    assert list(parameter_groups(Parts(groups=False))) == ["model"]
    assert list(parameter_groups(nn.Sequential(nn.Linear(2, 2)))) == ["model"]  # a module that is no ChangeModel


@pytest.mark.parametrize(("name", "cls"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_optimiser_by_name_with_per_group_learning_rates(name: str, cls: type) -> None:
    m = Parts()
    opt, _ = build_optimizer(m, OptimConfig(name=name, lr=0.1, group_lr={"decoder": 0.5}, weight_decay=0.01))
    assert type(opt) is cls
    assert {g["name"]: g["lr"] for g in opt.param_groups} == {"encoder": 0.1, "decoder": 0.5, "other": 0.1}
    m.head(m.decoder(m.encoder(torch.ones(2, 3)))).sum().backward()
    opt.step()
    assert id(m.encoder.weight) not in {id(p) for p in opt.state}  # frozen: no state at all
    assert id(m.decoder.weight) in {id(p) for p in opt.state}


def test_unknown_group_and_nothing_to_train_are_config_errors() -> None:
    with pytest.raises(ConfigError) as e:
        build_optimizer(Parts(), OptimConfig(group_lr={"fusion": 0.1}), source="run.yaml")
    assert e.value.field == "optim.group_lr.fusion" and "encoder, decoder, other" in e.value.message
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        build_optimizer(frozen, OptimConfig())


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_fused_foreach_and_for_loop_updates_agree_over_50_steps(name: str) -> None:
    def train(implementation: str) -> tuple[list[float], dict[str, torch.Tensor], torch.optim.Optimizer]:
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
        cfg = OptimConfig(name=name, lr=0.01, weight_decay=0.01, implementation=implementation)  # type: ignore[arg-type]
        opt, _ = build_optimizer(m, cfg)
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(32, 8, generator=g), torch.randn(32, 1, generator=g)
        losses = []
        for _ in range(50):
            opt.zero_grad()
            loss = ((m(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, {k: v.detach().clone() for k, v in m.state_dict().items()}, opt

    ref_losses, ref_weights, ref_opt = train("for-loop")
    assert ref_opt.defaults["foreach"] is False
    for implementation in ("fused", "foreach", "auto"):
        losses, weights, opt = train(implementation)
        assert opt.defaults["fused" if implementation in ("fused", "auto") else "foreach"] is True
        assert losses == pytest.approx(ref_losses, rel=1e-5, abs=1e-7)
        for k in ref_weights:
            torch.testing.assert_close(weights[k], ref_weights[k], rtol=1e-4, atol=2e-5)
    assert ref_losses[-1] < 0.5 * ref_losses[0]  # it did train


def test_bad_implementation_is_a_config_error() -> None:
    from changecap.engine.config import TrainConfig

    with pytest.raises(ConfigError, match="optim.implementation"):
        TrainConfig.from_dict({"data": {"root": "x"}, "optim": {"implementation": "turbo"}}, check_model=False)
