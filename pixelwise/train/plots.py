"""End-of-run PNG plots (matplotlib, Agg backend): curves, per-class IoU, and prediction overlays."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot's import
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pixelwise.data.base import IGNORE_INDEX  # noqa: E402
from pixelwise.fileio import atomic_write  # noqa: E402


def save_figure(figure: plt.Figure, path: Path) -> None:
    with atomic_write(path) as handle:
        figure.savefig(handle, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)


def plot_curves(rows: Sequence[dict], directory: Path) -> None:
    """``loss.png`` (training loss per logged step) and ``miou.png`` (validation mIoU per evaluation)."""
    train = [row for row in rows if "loss" in row]
    val = [row for row in rows if "miou" in row]
    for name, points, key, label in (("loss.png", train, "loss", "training loss"),
                                     ("miou.png", val, "miou", "validation mIoU")):
        figure, axis = plt.subplots(figsize=(6, 4))
        marker = "." if len(points) < 50 else None
        axis.plot([row["step"] for row in points], [row[key] for row in points], marker=marker)
        axis.set_xlabel("step")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        save_figure(figure, directory / name)


def plot_class_iou(scores: dict, class_names: Sequence[str], path: Path) -> None:
    """A horizontal bar per class: its IoU on the validation split (classes absent everywhere are left empty)."""
    ious = [0.0 if math.isnan(value) else value for value in scores["iou"]]
    figure, axis = plt.subplots(figsize=(6, 0.35 * len(class_names) + 1.2))
    axis.barh(range(len(ious)), ious, color="tab:blue")
    axis.set_yticks(range(len(ious)), class_names)
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel(f"IoU (mean {scores['miou']:.3f})")
    save_figure(figure, path)


def overlay(image: torch.Tensor, labels: torch.Tensor, palette: Sequence[Sequence[int]],
            ignore_index: int = IGNORE_INDEX, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: ``image`` (C, H, W) uint8 blended with the colours of ``labels`` (H, W).

    Ignored pixels keep the plain image.
    """
    pixels = image.permute(1, 2, 0).cpu().numpy().astype(np.float32)
    if pixels.shape[2] == 1:
        pixels = pixels.repeat(3, axis=2)
    labels = labels.cpu().numpy()
    colours = np.asarray(palette, dtype=np.float32)
    labelled = labels != ignore_index
    blended = pixels.copy()
    blended[labelled] = (1 - alpha) * pixels[labelled] + alpha * colours[labels[labelled]]
    return blended.round().astype(np.uint8)


def plot_examples(examples: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                  palette: Sequence[Sequence[int]], path: Path, ignore_index: int = IGNORE_INDEX) -> None:
    """A grid, one row per (image, ground truth, prediction) example: image | ground truth | prediction."""
    figure, axes = plt.subplots(len(examples), 3, figsize=(9, 3 * len(examples)), squeeze=False)
    for row, (image, truth, prediction) in enumerate(examples):
        plain = image.permute(1, 2, 0).cpu().numpy()
        panels = (plain.squeeze(2) if plain.shape[2] == 1 else plain, overlay(image, truth, palette, ignore_index),
                  overlay(image, prediction, palette, ignore_index))
        for column, (panel, title) in enumerate(zip(panels, ("image", "ground truth", "prediction"), strict=True)):
            axes[row, column].imshow(panel, cmap="gray" if panel.ndim == 2 else None)
            axes[row, column].set_axis_off()
            if row == 0:
                axes[row, column].set_title(title)
    save_figure(figure, path)
