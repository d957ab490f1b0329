"""Turning what a user hands the Segmenter (a path, a PIL image, an array, a tensor) into pixels.

Every input becomes an RGB or grayscale uint8 array (H, W, 3) or (H, W): the one form that the CRF,
the overlay writers and normalisation (``pixelwise.data.transforms.Normalization``) all start from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

from pixelwise.data.base import open_image
from pixelwise.data.transforms import Normalization

ImageLike = str | os.PathLike | PILImage.Image | np.ndarray | torch.Tensor

# ITU-R 601 luma weights, the ones PIL's convert("L") uses, so a gray model sees what PIL would give it.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_uint8(image: ImageLike) -> np.ndarray:
    """An image as a uint8 array (H, W, 3) or (H, W).

    Paths and PIL images are decoded (RGB, or L when grayscale). Arrays are (H, W, 3) or (H, W), uint8
    or float in [0, 1]; tensors are (3, H, W), (1, H, W) or (H, W), uint8 or float in [0, 1]
    (torchvision's convention).
    """
    if isinstance(image, str | os.PathLike):
        with open_image(Path(image), "image") as opened:
            return to_uint8(opened)
    if isinstance(image, PILImage.Image):
        return np.asarray(image.convert("L" if image.mode in ("L", "I", "I;16", "F") else "RGB"))
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.ndim == 3 and tensor.shape[0] in (1, 3):
            tensor = tensor.permute(1, 2, 0) if tensor.shape[0] == 3 else tensor[0]
        return to_uint8(tensor.numpy())
    if isinstance(image, np.ndarray):
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[..., :3]  # drop alpha
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise ValueError(f"an image array must be (H, W, 3) or (H, W), got shape {image.shape}")
        if image.dtype == np.uint8:
            return image
        if np.issubdtype(image.dtype, np.floating) or image.dtype == np.bool_:
            return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        raise ValueError(f"an image array must be uint8 or float in [0, 1], got dtype {image.dtype}")
    raise TypeError(f"cannot read an image from a {type(image).__name__}")


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (H, W, 3) or (H, W) -> uint8 (H, W, channels): gray is repeated, RGB is reduced to luma."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[2] == channels:
        return pixels
    if channels == 3:
        return np.repeat(pixels, 3, axis=2)
    if channels == 1:
        return (pixels.astype(np.float32) @ LUMA + 0.5).astype(np.uint8)[..., None]
    raise ValueError(f"cannot turn a {pixels.shape[2]}-channel image into {channels} channels")


def normalize_batch(
    images: Sequence[np.ndarray], mean: Sequence[float], std: Sequence[float], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Same-size uint8 (H, W, C) arrays -> a normalised (N, C, H, W) tensor: (pixel / 255 - mean) / std."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return Normalization(tuple(mean), tuple(std)).normalize_uint8(batch, dtype)
