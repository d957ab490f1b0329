"""Overlap-tile inference for a model that loses a margin (Ronneberger et al. 2015, Fig. 2).

A valid-padding U-Net predicts only the centre of its input: for depth 4, 388 x 388 outputs from
572 x 572 inputs, a ``margin`` of 92 pixels lost on every side. To predict a whole image, the paper
mirrors the image past its borders by the margin and runs tiles whose valid outputs lie side by side.

Tiles start every ``step`` pixels, a multiple of the model's ``size_multiple`` (2 ** depth), so each
tile's pooling grid lines up with that of the whole padded image: a stitched prediction then equals one
pass over the whole padded image (the tiles only save memory). A tile's output can be a few pixels longer
than ``step``; those pixels are the next tile's first ones, recomputed identically, so they are simply
dropped. The geometry comes from the model contract (``pixelwise.models.base``), not its class.
"""

from __future__ import annotations

import torch

from pixelwise.infer.sliding import Forward


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


def overlap_tile_logits(
    forward: Forward, images: torch.Tensor, num_classes: int, step: tuple[int, int], tile_input: tuple[int, int],
    margin: int,
) -> torch.Tensor:
    """(N, C, H, W) images -> (N, num_classes, H, W) float32 logits of a model that loses ``margin`` pixels.

    ``forward`` maps (N, C, h, w) -> (N, num_classes, h - 2 * margin, w - 2 * margin) for the aligned input
    sides ``tile_input`` (rows, columns), whose outputs cover ``step`` (rows, columns): the output tile.
    Each tile gathers its own mirrored pixels: memory holds the output and one tile, never the padded image
    (for a 1-pixel-high image that copy is the whole input tile high: 200 rows at depth 4).
    """
    batch, _, height, width = images.shape
    (input_h, input_w) = tile_input
    tiles_y, tiles_x = -(-height // step[0]), -(-width // step[1])
    # Where each pixel of the whole mirrored image comes from, one index per row and per column.
    rows = mirror_indices(height, margin, (tiles_y - 1) * step[0] + input_h - margin - height)
    columns = mirror_indices(width, margin, (tiles_x - 1) * step[1] + input_w - margin - width)
    scores = torch.empty(batch, num_classes, height, width)
    for top in range(0, height, step[0]):
        for left in range(0, width, step[1]):
            tile = images[..., rows[top : top + input_h, None], columns[left : left + input_w]]
            # The last tiles' outputs reach past the image: keep the pixels inside it.
            out_h, out_w = min(step[0], height - top), min(step[1], width - left)
            scores[..., top : top + out_h, left : left + out_w] = forward(tile)[..., :out_h, :out_w]
    return scores
