"""Turning what a user hands the Segmenter (a path, a PIL image, an array, a tensor) into pixels.

Every input becomes an array (H, W, 3), (H, W, 4) or (H, W) at its true bit depth (``to_pixels``): uint8 for
8-bit images, uint16 for 16-bit ones (PNG and TIFF, grayscale or RGB), float32 in [0, 1] for float arrays,
tensors and float TIFFs; files and PIL images are turned as viewers show them by their EXIF orientation. The
model's normalisation (``pixelwise.data.transforms.Normalization``) takes them from there; ``to_uint8``
gives the 8-bit view that overlays show.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

from pixelwise.data.base import array_pixels, pixels_of, read_pixels, to_channels, to_unit_float
from pixelwise.data.transforms import Normalization

ImageLike = str | os.PathLike | bytes | PILImage.Image | np.ndarray | torch.Tensor

__all__ = ["ImageLike", "normalize_batch", "to_channels", "to_pixels", "to_uint8"]


def to_pixels(image: ImageLike) -> np.ndarray:
    """An image as an array (H, W), (H, W, 3) or (H, W, 4) at its true bit depth: uint8, uint16 or float32 in
    [0, 1]; a 4th channel (alpha, or a 4th band) is kept for 4-channel models (``to_channels`` drops it for
    the others).

    Paths, encoded bytes and PIL images are turned as viewers show them by their EXIF orientation; files and
    bytes are decoded (RGB or RGBA, or L when grayscale; 16-bit files at 16 bits). Arrays are (H, W, 3),
    (H, W, 4) or (H, W): uint8, uint16, or float in [0, 1]; tensors are (3, H, W), (4, H, W), (1, H, W) or
    (H, W) of the same types (torchvision's convention).
    """
    if isinstance(image, str | os.PathLike | bytes):
        return read_pixels(image if isinstance(image, bytes) else Path(image))
    if isinstance(image, PILImage.Image):
        return pixels_of(image)
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.ndim == 3 and tensor.shape[0] in (1, 3, 4):
            tensor = tensor[0] if tensor.shape[0] == 1 else tensor.permute(1, 2, 0)
        return to_pixels(tensor.numpy())
    if isinstance(image, np.ndarray):
        return array_pixels(image)
    raise TypeError(f"cannot read an image from a {type(image).__name__}")


def to_uint8(image: ImageLike) -> np.ndarray:
    """An image as uint8 (H, W, 3) or (H, W), 16-bit and float images scaled to 8 bits: what overlays show."""
    pixels = to_pixels(image)
    if pixels.dtype == np.uint8:
        return pixels
    return (to_unit_float(pixels) * 255.0 + 0.5).astype(np.uint8)


def normalize_batch(
    images: Sequence[np.ndarray], mean: Sequence[float], std: Sequence[float], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Same-size (H, W, C) pixel arrays -> a normalised (N, C, H, W) tensor: (pixel in [0, 1] - mean) / std."""
    batch = torch.from_numpy(np.stack([unit_or_uint8(image) for image in images])).permute(0, 3, 1, 2)
    return Normalization(tuple(mean), tuple(std)).normalize(batch, dtype)


def unit_or_uint8(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels as they are (the fast path), anything deeper as float32 in [0, 1]."""
    return pixels if pixels.dtype == np.uint8 else to_unit_float(pixels)
