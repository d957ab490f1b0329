"""Overlap-tile inference for a valid-padding U-Net (Ronneberger et al. 2015, Fig. 2).

A valid-padding U-Net predicts only the centre of its input: for depth 4, 388 x 388 outputs from
572 x 572 inputs, a ``margin`` of 92 pixels lost on every side. To predict a whole image, the paper
mirrors the image past its borders by the margin and runs tiles whose valid outputs lie side by side.

Tiles start every ``step`` pixels, a multiple of 2 ** depth, so each tile's pooling grid lines up with
that of the whole padded image: a stitched prediction then equals one pass over the whole padded image
(the tiles only save memory). A tile's output can be a few pixels longer than ``step``; those pixels
are the next tile's first ones, recomputed identically, so they are simply overwritten.
"""

from __future__ import annotations

import torch
from torch import nn

from pixelwise.infer.sliding import Forward
from pixelwise.models.unet import UNet, valid_input_size, valid_output_size


def mirror_indices(size: int, before: int, after: int) -> torch.Tensor:
    """Indices into ``size`` pixels that mirror them ``before`` and ``after`` the ends (no edge repeat).

    Mirrors repeatedly when the padding is longer than the image, like numpy's ``mode="reflect"``.
    """
    positions = torch.arange(-before, size + after)
    if size == 1:
        return torch.zeros_like(positions)
    period = 2 * (size - 1)
    positions = positions.remainder(period)
    return torch.where(positions < size, positions, period - positions)


def mirror_pad(images: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, top + H + bottom, left + W + right), mirrored past the borders."""
    height, width = images.shape[-2:]
    rows = mirror_indices(height, top, bottom)
    columns = mirror_indices(width, left, right)
    return images.index_select(-2, rows).index_select(-1, columns)


def tile_geometry(step: int, depth: int) -> tuple[int, int]:
    """(input tile side, margin) for output tiles ``step`` apart; ``step`` must be a multiple of 2 ** depth."""
    if step < 1 or step % 2**depth:
        raise ValueError(f"overlap-tile step {step} must be a positive multiple of 2 ** depth = {2**depth}")
    input_side = valid_input_size(step, depth)
    margin = (input_side - valid_output_size(input_side, depth)) // 2
    return input_side, margin


def overlap_tile_logits(
    forward: Forward, images: torch.Tensor, num_classes: int, step: tuple[int, int], depth: int
) -> torch.Tensor:
    """(N, C, H, W) images -> (N, num_classes, H, W) float32 logits of a valid-padding U-Net.

    ``forward`` maps (N, C, h, w) -> (N, num_classes, valid_output_size(h), valid_output_size(w)).
    ``step`` (rows, columns) is the output tile size, each a multiple of 2 ** depth.
    """
    batch, _, height, width = images.shape
    (input_h, margin_h), (input_w, margin_w) = tile_geometry(step[0], depth), tile_geometry(step[1], depth)
    tiles_y, tiles_x = -(-height // step[0]), -(-width // step[1])
    padded = mirror_pad(
        images,
        margin_h, (tiles_y - 1) * step[0] + input_h - margin_h - height,
        margin_w, (tiles_x - 1) * step[1] + input_w - margin_w - width,
    )
    scores = torch.empty(batch, num_classes, tiles_y * step[0], tiles_x * step[1])
    for row in range(tiles_y):
        for column in range(tiles_x):
            top, left = row * step[0], column * step[1]
            tile = padded[..., top : top + input_h, left : left + input_w]
            scores[..., top : top + step[0], left : left + step[1]] = forward(tile)[..., : step[0], : step[1]]
    return scores[..., :height, :width]


def valid_padding_depth(model: nn.Module) -> int | None:
    """The depth of a valid-padding U-Net (whose output is smaller than its input); None for other models."""
    return model.depth if isinstance(model, UNet) and model.padding == "valid" else None
