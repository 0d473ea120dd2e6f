"""HiSem objective: router schedule, caption CE over real tokens, global normalisation, warm-up detach."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from changecap.data.vocab import END_ID, NULL_ID, START_ID
from changecap.engine.objectives import (
    GlobalCounts,
    Phase,
    StepInfo,
    StepLoss,
    TrainingStep,
    caption_ce_sum,
    combine_terms,
)
from changecap.engine.objectives.hisem import EpochPlan, HisemLossConfig, HisemObjective, plan_epoch, router_ramp
from changecap.schema import from_dict
from tests.engine.toy import ToyCaptioner, ToyDataset, toy_vocab


class Plan:
    """``plan_epoch`` of a run of ``epochs`` epochs with the given loss section."""

    def __init__(self, epochs: int = 50, **loss: object) -> None:
        self.epochs, self.loss = epochs, from_dict(HisemLossConfig, loss, "loss")

    def __call__(self, epoch: int) -> EpochPlan:
        return plan_epoch(self.loss, self.epochs, epoch)


def cfg(epochs: int = 50, **loss: object) -> Plan:
    return Plan(epochs, **loss)


def counts(tokens: float, samples: float, world: int, accum: int) -> GlobalCounts:
    return GlobalCounts({"tokens": tokens, "samples": samples}, world, accum)


class Step:
    """TrainingStep(model, HisemObjective) called the old way: (image, target, changed, plan, counts)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.module = TrainingStep(model, HisemObjective(epochs=50))

    def __call__(self, image, target, changed, plan: EpochPlan, c: GlobalCounts) -> StepLoss:
        info = StepInfo(plan.epoch, Phase(options={"plan": plan}), c, torch.device("cpu"))
        return self.module({"image": image, "target": target, "changed": changed}, info)


def test_router_ramp_matches_the_paper_values() -> None:
    assert router_ramp(4, 3, 50) == pytest.approx(0.0011, abs=5e-5)
    assert router_ramp(26, 3, 50) == pytest.approx(0.483, abs=5e-4)
    assert router_ramp(49, 3, 50) == pytest.approx(0.9989, abs=5e-5)
    assert [router_ramp(e, 3, 50) for e in range(4)] == [0.0] * 4
    assert router_ramp(50, 3, 50) == pytest.approx(1.0)
    ramp = [router_ramp(e, 3, 50) for e in range(3, 50)]
    assert ramp == sorted(ramp)  # monotone


def test_plan_epoch_schedule_for_the_paper_run() -> None:
    c = cfg()
    plans = [c(e) for e in range(50)]
    assert [p.gt_routing for p in plans] == [True] * 41 + [False] * 9  # e = 0..40 ground truth, 41 epochs
    assert [p.router_detached for p in plans] == [True] * 4 + [False] * 46  # e <= 3 detached
    assert all(p.router_weight == 0 for p in plans[:4])
    assert plans[26].router_weight == pytest.approx(0.8 * 0.483, abs=1e-3)
    assert plans[49].router_weight == pytest.approx(0.8 * 0.9989, abs=1e-4)
    # a fraction of the run, and "never"
    assert cfg(10, gt_routing_until_epoch=0.5)(5).gt_routing
    assert not cfg(10, gt_routing_until_epoch=0.5)(6).gt_routing
    assert not cfg(10, gt_routing_until_epoch=-1)(0).gt_routing


def test_caption_ce_counts_end_but_not_start_or_padding() -> None:
    torch.manual_seed(0)
    v, t = 7, 6
    target = torch.tensor(
        [[START_ID, 4, 5, END_ID, NULL_ID, NULL_ID], [START_ID, 6, END_ID, NULL_ID, NULL_ID, NULL_ID]]
    )
    logits = torch.randn(2, t, v)
    total, count = caption_ce_sum(logits, target)
    assert int(count) == 5  # (4, 5, END) + (6, END)
    expected = sum(
        F.cross_entropy(logits[b, pos - 1 : pos], target[b, pos : pos + 1], reduction="sum")
        for b, positions in ((0, (1, 2, 3)), (1, (1, 2)))
        for pos in positions
    )
    assert torch.allclose(total, expected)
    # a model returning T-1 positions gives the same value
    total2, count2 = caption_ce_sum(logits[:, :-1], target)
    assert torch.equal(total, total2) and int(count2) == 5


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_global_normalisation_one_batch_equals_micro_batches_and_ranks() -> None:
    """Gradient of a batch of 4 == sum over 2 micro-batches == DDP mean over 2 'ranks' (caption + router)."""
    vocab = toy_vocab()
    ds = ToyDataset(4, vocab)
    items = [ds[i] for i in range(4)]
    image = torch.stack([s["image"] for s in items])
    target = torch.stack([s["target"] for s in items])
    changed = torch.tensor([s["changed"] for s in items])
    torch.manual_seed(0)
    model = ToyCaptioner(len(vocab), 10, dropout=0.0, router=True)
    model.fusion["changed_norm"] = torch.nn.Identity()  # batch statistics would make the split matter
    step = Step(model)
    plan = EpochPlan(
        epoch=10, gt_routing=True, router_detached=False, router_alpha=0.5, router_weight=0.4, aux_weight=0.0
    )
    tokens = float((target[:, 1:] != NULL_ID).sum())

    step(image, target, changed, plan, counts(tokens, 4.0, 1, 1)).loss.backward()
    full = _grads(model)
    model.zero_grad(set_to_none=True)
    for sl in (slice(0, 2), slice(2, 4)):  # 1 process x 2 micro-batches
        step(image[sl], target[sl], changed[sl], plan, counts(tokens, 4.0, 1, 2)).loss.backward()
    accum = _grads(model)
    per_rank = []
    for sl in (slice(0, 2), slice(2, 4)):  # 2 processes x 1 micro-batch; DDP averages
        model.zero_grad(set_to_none=True)
        step(image[sl], target[sl], changed[sl], plan, counts(tokens, 4.0, 2, 1)).loss.backward()
        per_rank.append(_grads(model))
    assert full.keys() == accum.keys()
    assert "router.weight" in full
    for name, g in full.items():
        assert torch.allclose(g, accum[name], atol=1e-6), name
        ddp = (per_rank[0].get(name, torch.zeros_like(g)) + per_rank[1].get(name, torch.zeros_like(g))) / 2
        assert torch.allclose(g, ddp, atol=1e-6), name
    # and the value is the mean token CE + weighted mean router CE
    terms = step(image, target, changed, plan, counts(tokens, 4.0, 1, 1))
    out = model(image, target, route=changed.long())
    ce = caption_ce_sum(out.logits, target)[0] / tokens
    rce = F.cross_entropy(out.router_logits, changed.long())
    assert math.isclose(float(terms.loss.detach()), float((ce + 0.4 * rce).detach()), rel_tol=1e-5)


def test_warmup_detaches_router_loss_and_gt_routing_uses_flags() -> None:
    vocab = toy_vocab()
    ds = ToyDataset(4, vocab)
    items = [ds[i] for i in range(4)]
    image = torch.stack([s["image"] for s in items])
    target = torch.stack([s["target"] for s in items])
    changed = torch.tensor([s["changed"] for s in items])
    torch.manual_seed(0)
    model = ToyCaptioner(len(vocab), 10, dropout=0.0)
    step = Step(model)
    c4 = counts(float((target[:, 1:] != NULL_ID).sum()), 4.0, 1, 1)
    c = cfg()
    warm = step(image, target, changed, c(2), c4)
    assert float(warm.stats["router_ce"][0]) > 0  # logged
    warm.loss.backward()
    assert model.router.weight.grad is None  # no gradient from L_cls in warm-up (routing is ground truth)
    later = step(image, target, changed, c(20), c4)
    later.loss.backward()
    assert model.router.weight.grad is not None and model.router.weight.grad.abs().sum() > 0
    # ground truth routing: both paths receive gradient (2 changed + 2 unchanged pairs)
    assert model.fusion["changed"].weight.grad.abs().sum() > 0
    assert model.fusion["unchanged"].weight.grad.abs().sum() > 0


def test_model_without_router_has_no_router_terms() -> None:
    vocab = toy_vocab()
    ds = ToyDataset(2, vocab)
    items = [ds[i] for i in range(2)]
    image = torch.stack([s["image"] for s in items])
    target = torch.stack([s["target"] for s in items])
    changed = torch.tensor([s["changed"] for s in items])
    model = ToyCaptioner(len(vocab), 10, router=False, dropout=0.0).eval()
    c2 = counts(float((target[:, 1:] != NULL_ID).sum()), 2.0, 1, 1)
    terms = combine_terms(HisemObjective(epochs=50).terms(model(image, target), target, changed, cfg()(20)), c2)
    ce = caption_ce_sum(model(image, target).logits, target)[0] / c2["tokens"]
    assert float(terms.stats["router_ce"][0]) == 0.0 and int(terms.stats["router_acc"][0]) == 0
    assert torch.allclose(terms.loss, ce)


def _toy_batch(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    items = [ToyDataset(n, toy_vocab())[i] for i in range(n)]
    image = torch.stack([s["image"] for s in items])
    target = torch.stack([s["target"] for s in items])
    return image, target, torch.tensor([s["changed"] for s in items])


def test_the_objective_returns_named_unscaled_terms_with_the_epoch_weights() -> None:
    image, target, changed = _toy_batch(4)
    torch.manual_seed(0)
    model = ToyCaptioner(len(toy_vocab()), 10, dropout=0.0)
    plan = cfg(aux_weight=0.5)(20)
    out = HisemObjective(epochs=50).terms(model(image, target, route=changed.long()), target, changed, plan)
    assert list(out.terms) == ["caption_ce", "router_ce", "aux"] and list(out.stats) == ["router_acc"]
    caption, router, aux = out.terms.values()
    assert (caption.normalizer, caption.weight) == ("tokens", 1.0)
    assert (router.normalizer, router.weight) == ("samples", plan.router_weight) and plan.router_weight > 0
    assert (aux.normalizer, aux.weight) == (None, 0.5)  # per forward pass
    ce, tokens = caption_ce_sum(model(image, target, route=changed.long()).logits, target)
    assert torch.equal(caption.value, ce) and torch.equal(torch.as_tensor(caption.count), tokens)  # unscaled sums
    assert float(router.count) == 4.0


def test_a_micro_batch_without_tokens_or_samples_does_not_divide_by_zero() -> None:
    """Targets of ``<START>`` alone score no token; the global counts of an update can then be 0 (the router term's
    samples included): the update adds nothing instead of dividing by zero."""
    image, target, changed = _toy_batch(2)
    target = torch.full_like(target, NULL_ID)
    target[:, 0] = START_ID
    objective = HisemObjective(epochs=50)
    phase = objective.phases(20)[0]
    assert objective.normalizers({"target": target}, phase)["tokens"] == 0.0
    model = ToyCaptioner(len(toy_vocab()), 10, dropout=0.0)
    info = StepInfo(20, phase, counts(0.0, 0.0, 2, 2), torch.device("cpu"))
    out = TrainingStep(model, objective)({"image": image, "target": target, "changed": changed}, info)
    out.loss.backward()
    assert math.isfinite(float(out.loss.detach()))
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
