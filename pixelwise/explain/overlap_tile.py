"""Overlap-tile: a valid-padding U-Net predicts a whole image from mirrored tiles, equal to one pass over it.

The model is the registered ``unet`` with ``padding="valid"``, reduced to depth 2 and 8 base channels
(a 20-pixel margin instead of the paper's 92), at its seeded random initialisation: what this topic shows
is geometry, which training does not change.
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pixelwise.explain.base import Explained, require_positive, synthetic_batch
from pixelwise.infer.overlap_tile import mirror_pad, overlap_tile_logits
from pixelwise.models import create_model

NUM_CLASSES = 5


def overlap_tile(*, seed: int = 0, image_size: tuple[int, int] = (72, 104),
                 tile: int = 24) -> Explained:
    """Predict one synthetic scene of ``image_size`` in ``tile`` x ``tile`` output tiles and in one pass."""
    require_positive(tile=tile, height=image_size[0], width=image_size[1])
    torch.manual_seed(seed)
    model = create_model("unet", NUM_CLASSES, base_channels=8, depth=2, padding="valid")
    if tile % model.size_multiple:
        raise ValueError(f"tile must be a multiple of the model's size_multiple {model.size_multiple}, got {tile}")
    model.eval()
    margin = model.output_margin
    images, _ = synthetic_batch("val", 1, image_size, NUM_CLASSES, seed)
    height, width = image_size
    step, tile_input = (tile, tile), (model.input_size_for(tile),) * 2
    # One pass: a single "tile" whose output covers the whole image, rounded up to the pooling grid.
    unit = model.size_multiple
    whole_step = (-(-height // unit) * unit, -(-width // unit) * unit)
    with torch.no_grad():
        stitched = overlap_tile_logits(model, images, NUM_CLASSES, step, tile_input, margin)
        whole = overlap_tile_logits(model, images, NUM_CLASSES, whole_step,
                                    tuple(model.input_size_for(side) for side in whole_step), margin)
    difference = float((stitched - whole).abs().max())
    tiles = (-(-height // tile), -(-width // tile))
    numbers = {
        "margin": margin,
        "size_multiple": unit,
        "output_tile": list(step),
        "input_tile": list(tile_input),
        "tiles": list(tiles),
        "image_size": [height, width],
        "max_abs_difference_stitched_vs_one_pass": difference,
    }
    figure = draw(images[0], stitched[0], whole[0], margin, tile, tile_input[0], tiles)
    return Explained(
        topic="overlap-tile",
        numbers=numbers,
        figures={"overlap_tile": figure},
        caption=(
            f"A valid-padding U-Net (reduced: depth 2, 8 base channels, random weights) loses "
            f"{margin} pixels on every side, so each {tile}x{tile} output tile (white grid) needs a "
            f"{tile_input[0]}x{tile_input[0]} input (yellow: the first tile's), and past the image border "
            "(dashed) that input is the image mirrored. Tiles start on the model's pooling grid (multiples "
            f"of {unit}), so the stitched logits (shown: class 1's) equal one pass over the whole mirrored image: the "
            f"largest difference of any logit is {difference:.1e}. The tiles only bound the memory."
        ),
        source="pixelwise/infer/overlap_tile.py: overlap_tile_logits, mirror_pad; pixelwise/models/unet.py: UNet",
        extras={"image": images[0], "stitched": stitched[0], "whole": whole[0], "model": model},
    )


def draw(image: torch.Tensor, stitched: torch.Tensor, whole: torch.Tensor, margin: int,
         tile: int, tile_input: int, tiles: tuple[int, int]) -> Figure:
    """Mirrored input with the tile grid, stitched and one-pass logits of class 1, their difference, the image."""
    height, width = image.shape[-2:]
    rows, columns = tiles
    padded = mirror_pad(image[None], margin, rows * tile - height + margin, margin, columns * tile - width + margin)
    figure = Figure(figsize=(15.0, 3.4))
    axes = figure.subplots(1, 5)
    axes[0].imshow(padded[0].permute(1, 2, 0).numpy())
    for row in range(rows + 1):
        axes[0].axhline(margin + row * tile - 0.5, color="white", linewidth=0.8)
    for column in range(columns + 1):
        axes[0].axvline(margin + column * tile - 0.5, color="white", linewidth=0.8)
    axes[0].add_patch(Rectangle((margin - 0.5, margin - 0.5), width, height, fill=False, edgecolor="black",
                                linestyle="--", linewidth=1.2))
    axes[0].add_patch(Rectangle((-0.5, -0.5), tile_input, tile_input, fill=False, edgecolor="yellow", linewidth=2))
    axes[0].add_patch(Rectangle((margin - 0.5, margin - 0.5), tile, tile, facecolor="yellow", alpha=0.35))
    axes[0].set_title("mirrored input, output tiles", fontsize=10)
    low, high = float(whole[1].min()), float(whole[1].max())
    axes[1].imshow(stitched[1].numpy(), cmap="viridis", vmin=low, vmax=high)
    for row in range(1, rows):  # the seams, where no seam shows
        axes[1].axhline(row * tile - 0.5, color="white", linewidth=0.5, linestyle=":")
    for column in range(1, columns):
        axes[1].axvline(column * tile - 0.5, color="white", linewidth=0.5, linestyle=":")
    axes[1].set_title(f"class-1 logit, stitched from {rows * columns} tiles", fontsize=10)
    axes[2].imshow(whole[1].numpy(), cmap="viridis", vmin=low, vmax=high)
    axes[2].set_title("class-1 logit, one pass", fontsize=10)
    difference = (stitched - whole).abs().amax(0)
    shown = axes[3].imshow(difference.numpy(), cmap="magma", vmin=0, vmax=max(float(difference.max()), 1e-6))
    figure.colorbar(shown, ax=axes[3], fraction=0.035)
    axes[3].set_title("|stitched - one pass|, all logits", fontsize=10)
    axes[4].imshow(image.permute(1, 2, 0).numpy())
    axes[4].set_title("the image", fontsize=10)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    figure.subplots_adjust(left=0.01, right=0.99, top=0.88, bottom=0.03, wspace=0.08)
    return figure
