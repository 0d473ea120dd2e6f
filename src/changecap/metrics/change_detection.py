"""Streaming confusion matrix for change-detection masks (LEVIR-MCI 3-class, binary CD, ...).

``update`` accepts tensors (any device) or numpy arrays of any shape, counts with one ``bincount`` of
``target · C + pred`` on the inputs' own device, and accumulates in a CPU int64 matrix, so a whole test set streams
through without keeping masks around. ``merge`` adds another matrix (e.g. gathered from other DDP ranks) and
``all_reduce`` sums the matrices of all ranks in place when ``torch.distributed`` is initialised.

Empty classes (the NaN vs 0 choice): a ratio whose denominator is 0 is **undefined and reported as NaN**, not 0 -
precision of a class never predicted, recall of a class absent from the targets, IoU and F1 of a class absent from
both. NaN entries are left out of the means (``mean_iou``, ``mean_f1``), so a class missing from a test split does
not drag the means to 0 nor inflate them. F1 is computed as 2·TP / (2·TP + FP + FN), which equals the harmonic mean
of precision and recall when both are defined and stays defined (0) when the class is present but never found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray


@dataclass
class ChangeDetectionScores:
    """Per-class and summary scores (per-class arrays are indexed by class id)."""

    precision: np.ndarray  # [C]
    recall: np.ndarray  # [C]
    f1: np.ndarray  # [C]
    iou: np.ndarray  # [C]
    mean_iou: float
    mean_f1: float
    overall_accuracy: float

    def to_dict(self) -> dict[str, float | list[float]]:
        """JSON-ready (NaN stays NaN; ``json.dumps`` writes it as ``NaN``)."""
        return {
            "precision": self.precision.tolist(),
            "recall": self.recall.tolist(),
            "f1": self.f1.tolist(),
            "iou": self.iou.tolist(),
            "mean_iou": self.mean_iou,
            "mean_f1": self.mean_f1,
            "overall_accuracy": self.overall_accuracy,
        }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise num / den with NaN where den == 0."""
    out = np.full(num.shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(x: np.ndarray) -> float:
    return float(np.mean(x[~np.isnan(x)])) if np.any(~np.isnan(x)) else float("nan")


class ConfusionMatrix:
    """``matrix[t, p]`` = number of pixels of target class ``t`` predicted as ``p``."""

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.matrix.zero_()

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add one batch. ``pred`` and ``target`` hold class ids and have the same shape (e.g. ``[B, H, W]``)."""
        p = torch.as_tensor(pred)
        t = torch.as_tensor(target, device=p.device)
        if p.shape != t.shape:
            raise ValueError(f"pred shape {tuple(p.shape)} != target shape {tuple(t.shape)}")
        if p.is_floating_point() or t.is_floating_point():
            raise ValueError("pred and target must hold integer class ids (take argmax of logits first)")
        p = p.reshape(-1).long()  # [N]
        t = t.reshape(-1).long()  # [N]
        if self.ignore_index is not None:
            keep = t != self.ignore_index
            p, t = p[keep], t[keep]
        if p.numel() == 0:
            return
        c = self.num_classes
        lo = int(torch.minimum(p.min(), t.min()))
        hi = int(torch.maximum(p.max(), t.max()))
        if lo < 0 or hi >= c:
            raise ValueError(f"class ids must be in [0, {c - 1}] (or ignore_index), found values in [{lo}, {hi}]")
        counts = torch.bincount(t * c + p, minlength=c * c)  # [C*C], on the inputs' device
        self.matrix += counts.reshape(c, c).cpu()  # [C, C]

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix of the same shape (e.g. from another rank or worker); returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class into {self.num_classes}-class matrix")
        self.matrix += other.matrix
        return self

    def all_reduce(self) -> None:
        """Sum the matrices of all DDP ranks in place (no-op when ``torch.distributed`` is not initialised).

        With the NCCL backend the matrix travels through the current CUDA device.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        buf = self.matrix.to(device)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        self.matrix = buf.cpu()

    def compute(self) -> ChangeDetectionScores:
        """Per-class precision, recall, F1, IoU; mean IoU / F1 over defined classes; overall accuracy."""
        m = self.matrix.numpy().astype(np.float64)  # [C, C]
        tp = np.diag(m)  # [C]
        fp = m.sum(axis=0) - tp  # predicted as c, target not c
        fn = m.sum(axis=1) - tp  # target c, predicted otherwise
        iou = _ratio(tp, tp + fp + fn)
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
        total = m.sum()
        return ChangeDetectionScores(
            precision=_ratio(tp, tp + fp),
            recall=_ratio(tp, tp + fn),
            f1=f1,
            iou=iou,
            mean_iou=_nanmean(iou),
            mean_f1=_nanmean(f1),
            overall_accuracy=float(tp.sum() / total) if total > 0 else float("nan"),
        )
