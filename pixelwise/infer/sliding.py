"""Sliding-window inference (as in MMSegmentation's ``slide`` mode).

A large image is cut into overlapping ``tile``-sized windows ``stride`` apart. Each window's logits
are added into one (N, K, H, W) buffer and divided by how many windows saw each pixel: the average of
the overlapping predictions. Border windows are shifted back inside the image instead of being padded,
so every window sees only real pixels; a window is padded only where the image is shorter than the tile
(``Segmenter`` shrinks its tiles to the image instead: see ``pixelwise.infer.memory.layout_for``).
Memory: one buffer the size of the output, plus one window at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

Forward = Callable[[torch.Tensor], torch.Tensor]


def window_starts(size: int, tile: int, stride: int) -> list[int]:
    """Start offsets of windows of ``tile`` pixels every ``stride`` pixels over ``size`` pixels.

    The last window is moved back to end at ``size``, so windows never reach past the image.
    ``window_starts(1000, 512, 341) == [0, 341, 488]``.
    """
    if tile < 1 or stride < 1:
        raise ValueError(f"tile and stride must be >= 1, got tile {tile}, stride {stride}")
    if stride > tile:
        raise ValueError(f"stride {stride} > tile {tile} would leave pixels no window covers")
    if size <= tile:
        return [0]
    count = (size - tile + stride - 1) // stride + 1
    return [min(index * stride, size - tile) for index in range(count)]


def coverage(size: int, tile: int, starts: list[int]) -> torch.Tensor:
    """(size,) how many windows cover each position along one axis."""
    counts = torch.zeros(size)
    for start in starts:
        counts[start : start + tile] += 1
    return counts


def slide_logits(
    forward: Forward, images: torch.Tensor, num_classes: int, tile: tuple[int, int], stride: tuple[int, int]
) -> torch.Tensor:
    """(N, C, H, W) images -> (N, num_classes, H, W) float32 logits averaged over overlapping windows.

    ``forward`` maps (N, C, h, w) -> (N, num_classes, h, w) logits. Where the image is shorter than the tile,
    each window is padded bottom/right with zeros (the mean colour after normalisation) to the tile, one
    window at a time: the image itself is never copied.
    """
    batch, _, height, width = images.shape
    tile_h, tile_w = tile
    rows = window_starts(height, tile_h, stride[0])
    columns = window_starts(width, tile_w, stride[1])
    scores = torch.zeros(batch, num_classes, height, width)
    for top in rows:
        for left in columns:
            window = images[..., top : top + tile_h, left : left + tile_w]
            rows_in, columns_in = window.shape[-2:]
            if (rows_in, columns_in) != (tile_h, tile_w):
                window = F.pad(window, (0, tile_w - columns_in, 0, tile_h - rows_in))
            scores[..., top : top + tile_h, left : left + tile_w] += forward(window)[..., :rows_in, :columns_in]
    # Each axis is covered independently, so the count of a pixel is (count of its row) x (of its column):
    # dividing by one, then the other, needs no (H, W) buffer of counts.
    scores.div_(coverage(height, tile_h, rows)[:, None])
    return scores.div_(coverage(width, tile_w, columns))
