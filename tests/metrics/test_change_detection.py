"""ConfusionMatrix: counts against a direct computation, streaming, ignore_index, empty classes, merge."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from changecap.metrics.change_detection import ConfusionMatrix


def _direct(pred: np.ndarray, target: np.ndarray, c: int) -> np.ndarray:
    m = np.zeros((c, c), dtype=np.int64)
    for t, p in zip(target.ravel(), pred.ravel()):
        m[t, p] += 1
    return m


def test_streaming_counts_equal_direct_computation() -> None:
    rng = np.random.default_rng(0)
    cm = ConfusionMatrix(3)
    preds, targets = [], []
    for _ in range(4):
        p = rng.integers(0, 3, size=(2, 8, 8))
        t = rng.integers(0, 3, size=(2, 8, 8))
        cm.update(torch.from_numpy(p), torch.from_numpy(t))
        preds.append(p)
        targets.append(t)
    expected = _direct(np.concatenate(preds), np.concatenate(targets), 3)
    assert np.array_equal(cm.matrix.numpy(), expected)


def test_scores_on_a_hand_made_case() -> None:
    cm = ConfusionMatrix(2)
    target = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pred = np.array([0, 0, 0, 1, 1, 1, 0, 0])  # class 1: TP 2, FP 1, FN 2
    cm.update(pred, target)  # numpy arrays work too
    s = cm.compute()
    assert s.precision[1] == pytest.approx(2 / 3)
    assert s.recall[1] == pytest.approx(2 / 4)
    assert s.f1[1] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    assert s.iou[1] == pytest.approx(2 / 5)
    assert s.iou[0] == pytest.approx(3 / 6)
    assert s.mean_iou == pytest.approx((2 / 5 + 3 / 6) / 2)
    assert s.overall_accuracy == pytest.approx(5 / 8)


def test_empty_classes_are_nan_and_left_out_of_means() -> None:
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))  # class 2 absent everywhere
    s = cm.compute()
    assert math.isnan(s.iou[2]) and math.isnan(s.precision[2]) and math.isnan(s.f1[2])
    assert s.mean_iou == pytest.approx((1 / 2 + 1 / 2) / 2)
    cm2 = ConfusionMatrix(2)
    cm2.update(torch.tensor([0, 0]), torch.tensor([1, 0]))  # class 1 present, never predicted
    s2 = cm2.compute()
    assert math.isnan(s2.precision[1]) and s2.recall[1] == 0.0 and s2.f1[1] == 0.0 and s2.iou[1] == 0.0
    assert math.isnan(ConfusionMatrix(2).compute().overall_accuracy)


def test_ignore_index_and_merge_and_reset() -> None:
    a, b = ConfusionMatrix(2, ignore_index=255), ConfusionMatrix(2, ignore_index=255)
    a.update(torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, 255], [1, 0]]))
    b.update(torch.tensor([1, 0]), torch.tensor([1, 255]))
    assert int(a.matrix.sum()) == 3 and int(b.matrix.sum()) == 1
    both = ConfusionMatrix(2, ignore_index=255)
    both.update(torch.tensor([0, 1, 1, 1, 1, 0]), torch.tensor([0, 255, 1, 0, 1, 255]))
    assert torch.equal(a.merge(b).matrix, both.matrix)
    a.reset()
    assert int(a.matrix.sum()) == 0


@pytest.mark.parametrize(
    ("pred", "target", "match"),
    [
        (torch.tensor([0, 3]), torch.tensor([0, 1]), "class ids must be in"),
        (torch.tensor([0, 1]), torch.tensor([0, 1, 1]), "shape"),
        (torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), "integer class ids"),
    ],
)
def test_bad_inputs(pred: torch.Tensor, target: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ConfusionMatrix(3).update(pred, target)


def test_merge_rejects_other_sizes_and_all_reduce_is_noop_without_ddp() -> None:
    with pytest.raises(ValueError):
        ConfusionMatrix(2).merge(ConfusionMatrix(3))
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([1]), torch.tensor([1]))
    cm.all_reduce()
    assert int(cm.matrix[1, 1]) == 1
