"""Confusion matrix and the scores derived from it: G, C, IoU, weighted IoU.

Counted over a whole dataset (not averaged per image), rows = ground truth, columns =
prediction, pixels whose ground truth is the ignore value left out, as the paper does.
"""

from __future__ import annotations

import torch
from torch import Tensor


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """``(K, K)`` int64 counts on the inputs' device; ``pred``, ``target`` of equal shape."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    keep = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        keep &= target != ignore_index
    pred, target = pred[keep], target[keep]
    if pred.numel() and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted class ids must be in 0..{num_classes - 1}")
    return torch.bincount(target * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)


def scores_from_confusion(matrix: Tensor) -> dict:
    """G, C, mIoU, weighted IoU and per-class accuracy/IoU from a confusion matrix.

    A class with no ground-truth pixel has no accuracy (NaN, left out of C); a class absent
    from both ground truth and prediction has no IoU (NaN, left out of mIoU); a class only
    predicted has IoU 0. All values are fractions in [0, 1].
    """
    m = matrix.double().cpu()
    tp = m.diag()
    gt = m.sum(1)
    predicted = m.sum(0)
    union = gt + predicted - tp
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    accuracy = torch.where(gt > 0, tp / gt.clamp(min=1), nan)
    iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
    total = gt.sum()
    present = gt > 0
    return {
        "global_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        "mean_accuracy": float(accuracy.nanmean()),
        "mean_iou": float(iou.nanmean()),
        "weighted_iou": float((gt[present] * iou[present]).sum() / total) if total > 0 else float("nan"),
        "class_accuracy": accuracy.tolist(),
        "class_iou": iou.tolist(),
        "pixels": int(total),
    }


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches, on the device the batches live on."""

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix: Tensor | None = None

    def update(self, pred: Tensor, target: Tensor) -> Tensor:
        """Add a batch; returns that batch's own matrix."""
        batch = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.matrix = batch.clone() if self.matrix is None else self.matrix + batch.to(self.matrix.device)
        return batch

    def compute(self) -> dict:
        if self.matrix is None:
            raise ValueError("no predictions accumulated")
        return scores_from_confusion(self.matrix)
