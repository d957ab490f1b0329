"""Hypercolumns: per-box masks from pool2 + pool4 + fc7 features and a K x K grid of location-specific classifiers.

The model is the registered ``hypercolumn`` (VGG16, full width). Without a download its backbone keeps its
seeded random initialisation, so only the per-tap classifiers are trained, on features computed once: the
paper's setting (fine-tuning from ImageNet) is out of reach here, its geometry is not.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn

from pixelwise.data.synthetic import PALETTE
from pixelwise.explain.base import Explained, synthetic_batch
from pixelwise.models import create_model

NUM_CLASSES = 5
TAP_NAMES = ("pool2", "pool4", "fc7")
TRAIN_GRID = (8, 8)  # each training box is classified on this grid, whatever its size
IMAGES_PER_STEP = 8


def class_boxes(mask: torch.Tensor) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(H, W) labels -> (label, (x1, y1, x2, y2)) for every object class present: the pixel corners of the
    smallest box around its pixels (x2, y2 exclusive). Two objects of one class share a box."""
    boxes = []
    for label in mask.unique().tolist():
        if label == 0:
            continue
        rows, columns = torch.nonzero(mask == label, as_tuple=True)
        boxes.append((label, (int(columns.min()), int(rows.min()), int(columns.max()) + 1, int(rows.max()) + 1)))
    return boxes


def box_targets(mask: torch.Tensor, label: int, box: tuple[int, int, int, int], size: tuple[int, int]) -> torch.Tensor:
    """(h, w) figure/ground labels of a box, read at the centres of RoIAlign's bins (``aligned=True``):
    ``label`` on the object, 0 elsewhere (other objects in the box count as ground, as in the paper)."""
    x1, y1, x2, y2 = box
    rows = (y1 + (torch.arange(size[0]) + 0.5) * (y2 - y1) / size[0]).floor().long()
    columns = (x1 + (torch.arange(size[1]) + 0.5) * (x2 - x1) / size[1]).floor().long()
    inside = mask[rows[:, None], columns[None, :]] == label
    return torch.where(inside, label, 0)


def train_classifiers(model: nn.Module, taps: list[torch.Tensor], masks: torch.Tensor, steps: int,
                      seed: int) -> None:
    """Adam on the per-tap 1x1 classifiers only, per box as in the paper, the tapped features held fixed.

    Each step takes ``IMAGES_PER_STEP`` scenes and every box in them; the loss is the box class against the
    background (figure/ground), the detector having named the class."""
    boxes = [class_boxes(mask) for mask in masks]
    targets = [[box_targets(mask, label, box, TRAIN_GRID) for label, box in image_boxes]
               for mask, image_boxes in zip(masks, boxes, strict=True)]
    order = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(model.classifiers.parameters(), lr=1e-3)
    for _ in range(steps):
        chosen = order.choice(len(masks), min(IMAGES_PER_STEP, len(masks)), replace=False).tolist()
        rois = torch.tensor([[slot, *box] for slot, index in enumerate(chosen) for _, box in boxes[index]],
                            dtype=torch.float32)
        labels = torch.tensor([label for index in chosen for label, _ in boxes[index]])
        target = torch.stack([t for index in chosen for t in targets[index]])
        scores = [classify(tap[chosen]) for classify, tap in zip(model.classifiers, taps, strict=True)]
        logits = model.box_logits(scores, rois, TRAIN_GRID)
        # Figure/ground: the box's class (1) against the background (0).
        two_way = torch.stack([logits[:, 0], logits[torch.arange(len(labels)), labels]], 1)
        loss = F.cross_entropy(two_way, (target > 0).long())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def hypercolumns(*, seed: int = 0, steps: int = 100, train_images: int = 48, image_size: int = 64,
                 grid_size: int = 5) -> Explained:
    """Train the classifiers on ``train_images`` scenes, then segment the two boxes of one validation scene."""
    torch.manual_seed(seed)
    model = create_model("hypercolumn", NUM_CLASSES, grid_size=grid_size).eval()
    images, masks = synthetic_batch("train", train_images, image_size, NUM_CLASSES, seed)
    with torch.no_grad():
        taps = list(model.taps(images))
    train_classifiers(model, taps, masks, steps, seed)
    image, mask, boxes = scene_with_two_boxes(image_size, seed)
    with torch.no_grad():
        box_tensor = torch.tensor([box for _, box in boxes], dtype=torch.float32)
        masks_per_box = model(image[None], boxes=[box_tensor])[0]
        scores = model.tap_scores(image[None])
        first_box = torch.tensor([[0.0, *boxes[0][1]]])
        x1, y1, x2, y2 = boxes[0][1]
        cells = model.cell_logits(scores, first_box, (y2 - y1, x2 - x1))[0]
        cells = (cells[:, boxes[0][0]] - cells[:, 0]).sigmoid()  # each cell's object-vs-ground probability
    pasted = torch.zeros_like(mask)
    ious = []
    for (label, (x1, y1, x2, y2)), logits in zip(boxes, masks_per_box, strict=True):
        figure_ground = logits[label] > logits[0]
        pasted[y1:y2, x1:x2][figure_ground] = label
        truth = mask[y1:y2, x1:x2] == label
        ious.append(float((figure_ground & truth).sum() / (figure_ground | truth).sum()))
    channels = {name: int(tap.shape[1]) for name, tap in zip(TAP_NAMES, taps, strict=True)}
    numbers = {
        "feature_dimension": {**channels, "total": sum(channels.values())},
        "tap_strides": dict(zip(TAP_NAMES, model.tap_strides, strict=True)),
        "grid_size": grid_size,
        "boxes": [{"class": label, "box_xyxy": list(box), "mask_iou": iou}
                  for (label, box), iou in zip(boxes, ious, strict=True)],
        "training": {"steps": steps, "scenes": train_images, "image_size": image_size,
                     "trained": "per-tap classifiers only (backbone at its random initialisation)"},
    }
    return Explained(
        topic="hypercolumns",
        numbers=numbers,
        figures={"hypercolumn_boxes": draw_boxes(image, mask, boxes, pasted),
                 "location_classifiers": draw_grid(cells, masks_per_box[0][boxes[0][0]] > masks_per_box[0][0],
                                                           grid_size)},
        caption=(
            "A pixel's hypercolumn stacks the features above it at pool2 (stride 4), pool4 (16) and fc7 (32): "
            f"{numbers['feature_dimension']['total']} numbers. Each box is segmented on its own (features cut out "
            "by RoIAlign) and its mask pasted back into the image. Inside a box a "
            f"{grid_size}x{grid_size} grid of classifiers each owns one cell: the small maps show each cell's "
            "classifier over the whole box (its own cell outlined), and a pixel's score blends the nearby "
            "cells' bilinearly. Reduced training: VGG16 at random weights (no download), only the classifiers "
            f"trained, {steps} steps on {train_images} synthetic scenes; with features this weak the grid learns "
            "mostly where an object lies in its box (corner cells say ground, central ones object), the prior "
            "that location-specific classifiers add to the paper's ImageNet features."
        ),
        source="pixelwise/models/hypercolumn.py: Hypercolumn.taps, tap_scores, cell_logits, box_logits, forward",
        extras={"model": model, "image": image, "masks_per_box": masks_per_box, "taps": taps},
    )


def scene_with_two_boxes(image_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list]:
    """The first validation scene holding exactly two object classes, and their boxes."""
    images, masks = synthetic_batch("val", 64, image_size, NUM_CLASSES, seed)
    for image, mask in zip(images, masks, strict=True):
        boxes = class_boxes(mask)
        if len(boxes) == 2:
            return image, mask, boxes
    raise ValueError(f"no synthetic validation scene of seed {seed} holds exactly two object classes")


def colours(labels: torch.Tensor) -> np.ndarray:
    return np.asarray(PALETTE, dtype=np.uint8)[labels.numpy()]


def draw_boxes(image: torch.Tensor, mask: torch.Tensor, boxes: list, pasted: torch.Tensor) -> Figure:
    figure = Figure(figsize=(9.0, 3.3))
    axes = figure.subplots(1, 3)
    pixels = image.permute(1, 2, 0).numpy()
    axes[0].imshow(pixels)
    blended = 0.45 * pixels + 0.55 * colours(pasted) / 255
    axes[1].imshow(np.where((pasted > 0).numpy()[..., None], blended, pixels))
    axes[2].imshow(colours(mask))
    for ax, title in zip(axes, ("image and its two boxes", "per-box masks pasted back", "ground truth"),
                         strict=True):
        for label, (x1, y1, x2, y2) in boxes:
            ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, linewidth=1.5,
                                   edgecolor=np.asarray(PALETTE[label]) / 255))
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    figure.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.02, wspace=0.05)
    return figure


def draw_grid(cells: torch.Tensor, figure_ground: torch.Tensor, grid_size: int) -> Figure:
    """``cells`` (G*G, h, w): each cell classifier's object probability over the box; then the blended mask."""
    figure = Figure(figsize=(9.0, 4.6))
    layout = figure.add_gridspec(grid_size, 2 * grid_size)
    height, width = cells.shape[-2:]
    for cell in range(grid_size * grid_size):
        row, column = divmod(cell, grid_size)
        ax = figure.add_subplot(layout[row, column])
        ax.imshow(cells[cell].numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.add_patch(Rectangle((column * width / grid_size - 0.5, row * height / grid_size - 0.5),
                               width / grid_size, height / grid_size, fill=False, edgecolor="red", linewidth=1))
        ax.set_xticks([])
        ax.set_yticks([])
    ax = figure.add_subplot(layout[:, grid_size + 1:])
    ax.imshow(figure_ground.numpy(), cmap="gray")
    for line in range(1, grid_size):
        ax.axhline(line * height / grid_size - 0.5, color="red", linewidth=0.6)
        ax.axvline(line * width / grid_size - 0.5, color="red", linewidth=0.6)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("the box's mask: cells blended by location", fontsize=10)
    figure.suptitle(f"{grid_size}x{grid_size} location-specific classifiers over the first box "
                    "(object probability, own cell in red)", fontsize=10)
    figure.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.02, wspace=0.08, hspace=0.08)
    return figure
