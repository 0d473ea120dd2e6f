"""``changecap.models.dfm.tgcl_loss`` against hand-computed values, the gate's semantics, zero-safety, gradients and
the false-negative options."""

from __future__ import annotations

import math

import pytest
import torch

from changecap.models.dfm import tgcl_loss

LN2 = math.log(2.0)


def _case() -> tuple[torch.Tensor, torch.Tensor]:
    # s = ln 2 → scale 2. v = e1, e2; u = e1, e1 → S = [[2, 2], [0, 0]] (rows: images, columns: captions)
    return torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[3.0, 0.0], [0.5, 0.0]])


def test_hand_computed_value_with_the_gate_on() -> None:
    v, u = _case()
    loss = tgcl_loss(v, u, torch.tensor([True, False]), torch.tensor(LN2))
    # anchor 0 only: row 0 = CE([2, 2], 0) = ln 2; column 0 = CE([2, 0], 0) = ln(1 + e^-2); N_v = 1 + 1e-8
    expected = 0.5 * (LN2 + math.log1p(math.exp(-2.0))) / (1 + 1e-8)
    assert loss.shape == () and loss.item() == pytest.approx(expected, rel=1e-6)


def test_hand_computed_value_with_the_gate_off_is_clip_loss() -> None:
    v, u = _case()
    loss = tgcl_loss(v, u, torch.tensor([True, True]), torch.tensor(LN2))
    # rows: ln 2, ln 2; columns: ln(1 + e^-2), CE([2, 0], 1) = ln(1 + e^2)
    expected = 0.5 * ((2 * LN2) / 2 + (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(2.0))) / 2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    logits = 2.0 * torch.nn.functional.normalize(v, dim=1) @ torch.nn.functional.normalize(u, dim=1).t()
    ce = torch.nn.functional.cross_entropy
    clip = 0.5 * (ce(logits, torch.arange(2)) + ce(logits.t(), torch.arange(2)))
    assert loss.item() == pytest.approx(clip.item(), rel=1e-6)


def test_the_gate_drops_no_change_anchors_but_keeps_them_as_negatives() -> None:
    torch.manual_seed(0)
    v, u = torch.randn(5, 8), torch.randn(5, 8)
    changed = torch.tensor([True, False, True, False, True])
    s = torch.tensor(2.0)
    logits = s.exp() * torch.nn.functional.normalize(v, dim=1) @ torch.nn.functional.normalize(u, dim=1).t()
    rows = -torch.log_softmax(logits, dim=1).diagonal()  # every image anchor, over all 5 captions
    cols = -torch.log_softmax(logits, dim=0).diagonal()  # every caption anchor, over all 5 images
    keep = changed.nonzero().squeeze(1)
    expected = 0.5 * (rows[keep].sum() + cols[keep].sum()) / (3 + 1e-8)
    assert tgcl_loss(v, u, changed, s).item() == pytest.approx(expected.item(), rel=1e-6)
    # an unchanged pair's embeddings still act as negatives: they move the loss and receive gradient
    v.requires_grad_(True)
    tgcl_loss(v, u, changed, s).backward()
    assert v.grad is not None and v.grad[1].abs().sum() > 0 and v.grad[3].abs().sum() > 0


def test_no_changed_pair_gives_an_exact_zero_with_a_gradient_path() -> None:
    v = torch.zeros(4, 6, requires_grad=True)  # identical images: zero [CLS] differences
    u = torch.randn(4, 6, requires_grad=True)
    s = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    loss = tgcl_loss(v, u, torch.zeros(4, dtype=torch.bool), s)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    for grad in (v.grad, u.grad, s.grad):
        assert grad is not None and torch.isfinite(grad).all() and not grad.any()


def test_one_changed_pair_is_finite_and_trains() -> None:
    v = torch.zeros(3, 4)
    v[0, 0] = 1.0
    v.requires_grad_(True)
    u = torch.randn(3, 4, requires_grad=True)
    s = torch.tensor(1.0, requires_grad=True)
    loss = tgcl_loss(v, u, torch.tensor([True, False, False]), s)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(v.grad).all() and torch.isfinite(u.grad).all() and torch.isfinite(s.grad)
    assert u.grad.abs().sum() > 0 and s.grad != 0


def test_the_scale_is_clamped_at_100() -> None:
    v, u = _case()
    at_cap = tgcl_loss(v, u, torch.tensor([True, True]), torch.tensor(math.log(100.0)))
    beyond = tgcl_loss(v, u, torch.tensor([True, True]), torch.tensor(10.0))
    assert beyond.item() == pytest.approx(at_cap.item(), rel=1e-6)


def test_false_negative_elimination_and_attraction() -> None:
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.5]])
    changed = torch.ones(3, dtype=torch.bool)
    s = torch.tensor(0.0)  # scale 1
    sim = torch.eye(3)
    sim[0, 2] = sim[2, 0] = 1.0  # captions 0 and 2 are the same sentence
    logits = torch.nn.functional.normalize(v, dim=1) @ torch.nn.functional.normalize(u, dim=1).t()
    # fne: anchor 0 no longer sees caption 2 as a negative (and anchor 2 not caption 0), in both directions
    masked = logits.clone()
    masked[0, 2] = masked[2, 0] = float("-inf")
    rows, cols = -torch.log_softmax(masked, 1).diagonal(), -torch.log_softmax(masked, 0).diagonal()
    fne = tgcl_loss(v, u, changed, s, false_negative="fne", caption_similarity=sim)
    assert fne.item() == pytest.approx((0.5 * (rows.mean() + cols.mean())).item(), rel=1e-6)
    # fna: the duplicate counts as a positive, the target spread evenly over the positives
    target = torch.tensor([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
    rows = -(target * torch.log_softmax(logits, 1)).sum(1)
    cols = -(target * torch.log_softmax(logits, 0)).sum(0)
    fna = tgcl_loss(v, u, changed, s, false_negative="fna", caption_similarity=sim)
    assert fna.item() == pytest.approx((0.5 * (rows.mean() + cols.mean())).item(), rel=1e-6)
    none = tgcl_loss(v, u, changed, s)
    assert len({round(x.item(), 6) for x in (none, fne, fna)}) == 3


def test_bad_shapes_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match=r"visual and text must both be \[B, D\]"):
        tgcl_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, dtype=torch.bool), torch.tensor(0.0))
    with pytest.raises(ValueError, match=r"changed must be \[B\]"):
        tgcl_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(3, dtype=torch.bool), torch.tensor(0.0))
    with pytest.raises(ValueError, match="needs caption_similarity"):
        tgcl_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, dtype=torch.bool), torch.tensor(0.0),
                  false_negative="fne")  # fmt: skip
