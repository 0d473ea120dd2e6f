"""Binary scoring of predicted change masks, shared by validation and ``changecap evaluate``: class > 0 is a change,
255 is left out, scores of several processes merge, undefined ratios never reach model selection as NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from changecap.models.parts.change_masks import IGNORE, BinaryChangeScore


def test_class_masks_are_scored_as_binary_change() -> None:
    predicted = torch.tensor([[[1, 1, 0, 0]]])  # [B, S, S] 1 = changed
    truth = torch.tensor([[[2, 0, 1, IGNORE]]])  # a building, nothing, a road, unlabelled
    score = BinaryChangeScore()
    assert score.compute() is None and score.selection_scores() == {} and not score.counted
    score.update(predicted, truth)
    scores = score.compute()
    # one hit, one false alarm, one miss; the 255 pixel left out
    assert scores is not None and scores.overall_accuracy == pytest.approx(1 / 3)
    expected = {"cd_F1": 0.5, "cd_IoU": 1 / 3, "cd_precision": 0.5, "cd_recall": 0.5, "cd_OA": 1 / 3}
    assert score.selection_scores() == pytest.approx(expected)


def test_processes_merge_and_numpy_masks_count_alike() -> None:
    a, b = BinaryChangeScore(), BinaryChangeScore()
    a.update(np.array([[[1, 0]]], np.uint8), torch.tensor([[[1, 0]]]))
    b.update(torch.tensor([[[0, 0]]]), torch.tensor([[[1, 0]]]))
    merged = a.merge(b).compute()
    assert merged is not None and merged.recall[1] == 0.5 and merged.precision[1] == 1.0


def test_an_undefined_ratio_is_reported_as_zero_for_selection() -> None:
    score = BinaryChangeScore()
    score.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))  # no change at all
    assert np.isnan(score.compute().f1[1])  # undefined in the per-class scores
    assert score.selection_scores()["cd_F1"] == 0.0  # but never NaN where the trainer compares
