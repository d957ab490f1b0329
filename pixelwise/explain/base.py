"""What every gallery topic returns, and the two things several topics share: a brief seeded training run on
the synthetic set, and the boundary F-score that shows what skips and decoders buy near object edges."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from pixelwise.data.base import IGNORE_INDEX
from pixelwise.data.synthetic import SyntheticShapes
from pixelwise.fileio import atomic_write

# Figures are saved at this resolution and never cropped ("tight" boxes), so a figure of (w, h) inches is a
# PNG of exactly (round(100 w), round(100 h)) pixels: the size the tests check.
FIGURE_DPI = 100


@dataclass
class Explained:
    """One topic's result: the numbers (JSON-ready), its figures by file stem, what to look at, and where.

    ``source`` names the module path and function that produced the figures and numbers
    (e.g. ``"pixelwise/nn/upsample.py: TransposedUpsample, ResizeConvUpsample"``).
    """

    topic: str
    numbers: dict[str, Any]
    figures: dict[str, Figure]
    caption: str
    source: str
    extras: dict[str, Any] = field(default_factory=dict)  # arrays a notebook may want; never written


def require_positive(**values: int) -> None:
    """A ValueError naming the first keyword whose value is not a whole number >= 1."""
    for name, value in values.items():
        if type(value) is not int or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


def save_figure(figure: Figure, path: str | os.PathLike) -> None:
    """Write ``figure`` as a PNG of its exact pixel size (``FIGURE_DPI``), atomically."""
    with atomic_write(path) as file:
        figure.savefig(file, format="png", dpi=FIGURE_DPI)


def figure_pixels(figure: Figure) -> tuple[int, int]:
    """The (width, height) in pixels of ``figure`` once saved by :func:`save_figure`."""
    width, height = figure.get_size_inches()
    return round(width * FIGURE_DPI), round(height * FIGURE_DPI)


def synthetic_batch(split: str, count: int, image_size: int = 64, num_classes: int = 5,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` synthetic scenes as a float (N, 3, H, W) batch in [0, 1] and an int64 (N, H, W) mask."""
    dataset = SyntheticShapes(split, seed=seed, num_images=count, image_size=image_size,
                              num_classes=num_classes)
    images, masks = zip(*(dataset.load(index) for index in range(count)), strict=True)
    return torch.stack([image.float() / 255 for image in images]), torch.stack([mask.long() for mask in masks])


def train_briefly(model: nn.Module, steps: int = 300, batch_size: int = 8, image_size: int = 64,
                  num_classes: int = 5, lr: float = 3e-3, seed: int = 0, num_images: int = 256,
                  data: tuple[torch.Tensor, torch.Tensor] | None = None) -> nn.Module:
    """Train ``model`` for ``steps`` Adam steps on ``num_images`` synthetic scenes, seeded: the same weights
    every run.

    A gallery model, not a recipe: long enough that the figures show each architecture's character,
    short enough that the whole gallery runs in minutes on two CPU cores. A few scenes (``num_images``
    down to ``batch_size``) are learnt by heart in a few steps, which shows what an architecture can
    represent when its generalisation would take longer than the gallery can. ``data``, float (N, 3, H, W)
    images in [0, 1] and int64 (N, H, W) masks, replaces the synthetic scenes (``image_size`` is then unused).
    """
    torch.manual_seed(seed)
    images, masks = data if data is not None else synthetic_batch("train", num_images, image_size, num_classes,
                                                                 seed)
    order = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        batch = torch.from_numpy(order.choice(len(images), batch_size, replace=False))
        loss = F.cross_entropy(model(images[batch]), masks[batch], ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def boundaries(mask: torch.Tensor) -> torch.Tensor:
    """Pixels of an (H, W) label map whose 4-neighbourhood holds another label."""
    edge = torch.zeros_like(mask, dtype=torch.bool)
    vertical = mask[1:] != mask[:-1]
    horizontal = mask[:, 1:] != mask[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge


def boundary_f_score(pred: torch.Tensor, target: torch.Tensor, tolerance: int = 2) -> float:
    """The boundary F-score (Csurka et al., BMVC 2013) of (N, H, W) label maps, within ``tolerance`` pixels.

    Precision: the share of predicted boundary pixels within ``tolerance`` (Chebyshev distance) of a true
    boundary pixel; recall the reverse. Summed over the batch, so large images count as they should.
    """
    pred_edges = torch.stack([boundaries(p) for p in pred]).float()[:, None]
    true_edges = torch.stack([boundaries(t) for t in target]).float()[:, None]
    window = 2 * tolerance + 1
    near_true = F.max_pool2d(true_edges, window, stride=1, padding=tolerance) > 0
    near_pred = F.max_pool2d(pred_edges, window, stride=1, padding=tolerance) > 0
    precision = (near_true & (pred_edges > 0)).sum().item() / max(pred_edges.sum().item(), 1)
    recall = (near_pred & (true_edges > 0)).sum().item() / max(true_edges.sum().item(), 1)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
