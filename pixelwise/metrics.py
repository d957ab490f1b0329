"""Segmentation metrics from one confusion matrix accumulated over a whole split.

Every score is computed from the summed (C, C) matrix, never averaged per image: a small image with one
wrong pixel must not weigh as much as a large one. Rows are the target class, columns the prediction.
"""

from __future__ import annotations

import math

import torch

from pixelwise.data.base import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates a (C, C) int64 confusion matrix; ``compute()`` turns it into the standard scores.

    Pixels whose target equals ``ignore_index`` are skipped. A class absent from both the targets and the
    predictions of the whole split has no defined IoU or Dice: its per-class entry is NaN and it is left out
    of the means (``miou``, ``mdice``, ``mean_accuracy``, ``fwiou``), as in the FCN paper's evaluation.
    A class that is predicted but never in the target has IoU 0 (it is counted) but no defined accuracy.

    ``matrix`` is a plain tensor on the device of the last update, so a distributed run can
    ``torch.distributed.all_reduce(cm.matrix)`` it directly; ``merge`` adds another matrix in-process.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.matrix = torch.zeros_like(self.matrix)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch: ``pred`` and ``target`` are integer tensors of one shape, (N, H, W) or (H, W)."""
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}"
            )
        if pred.ndim not in (2, 3):
            raise ValueError(f"expected (N, H, W) or (H, W) label maps, got shape {tuple(pred.shape)}")
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError("prediction and target must be integer class indices (argmax the logits first)")
        num_classes = self.num_classes
        keep = target != self.ignore_index
        target = target[keep].long()
        pred = pred[keep].long()
        bad_target = (target < 0) | (target >= num_classes)
        if bad_target.any():
            values = torch.unique(target[bad_target])[:10].tolist()
            raise ValueError(
                f"target values {values} are outside [0, {num_classes}) and not the ignore index "
                f"{self.ignore_index}"
            )
        bad_pred = (pred < 0) | (pred >= num_classes)
        if bad_pred.any():
            values = torch.unique(pred[bad_pred])[:10].tolist()
            raise ValueError(f"prediction values {values} are outside [0, {num_classes})")
        # One bincount over the flattened (target, prediction) pair index fills the whole matrix at once.
        counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
        self.matrix = self.matrix.to(counts.device) + counts.reshape(num_classes, num_classes)

    def merge(self, other: ConfusionMatrix | torch.Tensor) -> ConfusionMatrix:
        """Add another matrix (from another process or shard) into this one; returns ``self``."""
        matrix = other.matrix if isinstance(other, ConfusionMatrix) else other
        if matrix.shape != self.matrix.shape:
            raise ValueError(
                f"cannot merge a {tuple(matrix.shape)} matrix into a {tuple(self.matrix.shape)} one"
            )
        self.matrix = self.matrix + matrix.to(self.matrix.device, torch.int64)
        return self

    def compute(self) -> dict:
        """Scores of the accumulated matrix.

        Returns a dict of Python floats and lists: ``miou``, ``iou`` (per class), ``pixel_accuracy``,
        ``mean_accuracy``, ``class_accuracy`` (per class), ``fwiou`` (IoU weighted by each class's share
        of target pixels), ``dice`` (per class) and ``mdice``. Per-class entries are NaN where undefined.
        """
        matrix = self.matrix.double().cpu()
        true_positive = matrix.diagonal()
        target_pixels = matrix.sum(dim=1)
        predicted_pixels = matrix.sum(dim=0)
        total = matrix.sum()
        union = target_pixels + predicted_pixels - true_positive
        nan = torch.full_like(true_positive, math.nan)

        iou = torch.where(union > 0, true_positive / union.clamp(min=1), nan)
        # Dice = 2 TP / (|target| + |prediction|); the same denominator is zero exactly when the union is.
        dice = torch.where(union > 0, 2 * true_positive / (union + true_positive).clamp(min=1), nan)
        class_accuracy = torch.where(target_pixels > 0, true_positive / target_pixels.clamp(min=1), nan)
        frequency = target_pixels / total if total > 0 else nan
        in_target = target_pixels > 0
        fwiou = (frequency[in_target] * iou[in_target]).sum() if in_target.any() else torch.tensor(math.nan)
        return {
            "miou": _nanmean(iou),
            "iou": iou.tolist(),
            "pixel_accuracy": (true_positive.sum() / total).item() if total > 0 else math.nan,
            "mean_accuracy": _nanmean(class_accuracy),
            "class_accuracy": class_accuracy.tolist(),
            "fwiou": fwiou.item(),
            "dice": dice.tolist(),
            "mdice": _nanmean(dice),
        }


def _nanmean(values: torch.Tensor) -> float:
    defined = values[~values.isnan()]
    return defined.mean().item() if defined.numel() else math.nan
