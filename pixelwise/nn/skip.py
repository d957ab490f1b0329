"""Skip alignment: make an encoder feature map and a decoder feature map the same size.

When pooling floors an odd size, or unpadded ("valid") convolutions shrink every map, an encoder map
and the decoder map it joins differ in size. Either crop the larger one about its centre (the U-Net
paper, where the encoder map is larger) or pad the smaller one (keeps every border pixel).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop (..., H, W) to (..., h, w) about the centre; an odd surplus drops its extra pixel at the end."""
    height, width = x.shape[-2:]
    h, w = size
    if h > height or w > width:
        raise ValueError(f"cannot crop a {height}x{width} map to the larger {h}x{w}")
    top, left = (height - h) // 2, (width - w) // 2
    return x[..., top : top + h, left : left + w]


def crop_at(x: torch.Tensor, offset: int, size: tuple[int, int]) -> torch.Tensor:
    """Crop (..., H, W) to ``size`` starting ``offset`` pixels from the top-left (FCN's Crop layer)."""
    height, width = x.shape[-2:]
    h, w = size
    if offset + h > height or offset + w > width:
        raise ValueError(f"a {h}x{w} crop at offset {offset} does not fit a {height}x{width} map")
    return x[..., offset : offset + h, offset : offset + w]


def pad_to_match(x: torch.Tensor, size: tuple[int, int], mode: str = "constant") -> torch.Tensor:
    """Pad (..., H, W) to the larger (..., h, w), splitting the padding evenly (extra pixel at the end)."""
    height, width = x.shape[-2:]
    h, w = size
    if h < height or w < width:
        raise ValueError(f"cannot pad a {height}x{width} map to the smaller {h}x{w}")
    dh, dw = h - height, w - width
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode=mode)


def align_to(x: torch.Tensor, reference: torch.Tensor, how: str = "crop") -> torch.Tensor:
    """Make ``x`` the spatial size of ``reference`` by centre-cropping (``how="crop"``) or padding."""
    size = tuple(reference.shape[-2:])
    if how == "crop":
        return center_crop(x, size)
    if how == "pad":
        return pad_to_match(x, size)
    raise ValueError(f"how must be 'crop' or 'pad', got {how!r}")
