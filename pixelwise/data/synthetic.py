"""A built-in synthetic data set: textured scenes of shapes, where the class is the shape, not the colour.

Each object class has its own hue, but the hues overlap and the backgrounds (noise, gradients, stripes) take
any colour, so a per-pixel colour classifier (a 1x1 convolution) scores poorly; a network that sees
the shape around a pixel (a small U-Net) can segment it almost perfectly. Item ``i`` of a split is a pure
function of ``(seed, split, i)``: nothing is stored, every epoch and every worker sees the same images.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torchvision import tv_tensors

from pixelwise.data.base import SegmentationDataset, Transform

# Object classes in label order (label 0 is the background); ``num_classes`` takes the first ones.
SHAPES = ("disc", "rectangle", "triangle", "ring", "star", "cross")
PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
           [145, 30, 180]]
DEFAULT_NUM_IMAGES = {"train": 512}
DEFAULT_NUM_IMAGES_OTHER = 64

HUE_SPREAD = 0.05  # std of an object's hue around its class hue: neighbouring classes overlap
PIXEL_NOISE = 0.04  # std of the per-pixel noise added to the whole image, on a [0, 1] scale
MIN_CONTRAST = 0.3  # an object's colour differs from the background under it by at least this (RGB norm)
MAX_OCCLUSION = 0.25  # a new object may hide at most this share of an earlier one


def make_image(seed: int, image_size: int | tuple[int, int] = 64,
               num_classes: int = 5) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """One synthetic scene: a uint8 (3, H, W) image and its int64 (H, W) mask, determined by ``seed``."""
    return _scene(np.random.default_rng(seed), image_size, num_classes)


MAX_SIDE = 4096  # generated images are held in memory whole: 4096 x 4096 x 3 is 48 MB


class SyntheticShapes(SegmentationDataset):
    """``num_images`` generated scenes (default 512 for train, 64 for any other split) of ``image_size``.

    ``num_classes`` counts the background: 2..7 (background plus the first shapes of ``SHAPES``).
    """

    def __init__(self, split: str = "train", transform: Transform | None = None, *, seed: int = 0,
                 num_images: int | None = None, image_size: int | tuple[int, int] = 64,
                 num_classes: int = 5) -> None:
        super().__init__(transform)
        if not 2 <= num_classes <= len(SHAPES) + 1:
            raise ValueError(f"synthetic num_classes must be in 2..{len(SHAPES) + 1}, got {num_classes}")
        self.split = split
        self.seed = seed
        self.num_images = DEFAULT_NUM_IMAGES.get(split, DEFAULT_NUM_IMAGES_OTHER) if num_images is None \
            else num_images
        if self.num_images < 1:
            raise ValueError(f"synthetic num_images must be >= 1, got {self.num_images}")
        sides = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if not all(1 <= side <= MAX_SIDE for side in sides):
            raise ValueError(f"synthetic image_size must be 1..{MAX_SIDE} pixels, got {image_size}")
        self.image_size = image_size
        self.num_classes = num_classes
        self.class_names = ["background", *SHAPES[: num_classes - 1]]
        self.palette = PALETTE[:num_classes]
        # A stable code per split name (Python's hash() is salted per process, crc32 is not).
        self._split_code = zlib.crc32(split.encode())

    def __len__(self) -> int:
        return self.num_images

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} synthetic images")
        rng = np.random.default_rng([self.seed, self._split_code, index])
        return _scene(rng, self.image_size, self.num_classes)


def _scene(rng: np.random.Generator, image_size: int | tuple[int, int],
           num_classes: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    image = _background(rng, ys, xs)
    labels = np.zeros((height, width), dtype=np.int64)
    instances = np.zeros((height, width), dtype=np.int64)
    areas = [0]  # areas[k]: pixels of instance k when it was drawn
    scale = min(height, width) / 64
    for _ in range(rng.integers(1, 5)):
        label = int(rng.integers(1, num_classes))
        for _attempt in range(6):
            radius = rng.uniform(9, 16) * scale
            # Whole shapes only (up to the triangle's corners): a cut-off shape may be no shape at all.
            centre = rng.uniform([radius, radius], [height - radius, width - radius])
            inside = _shape(SHAPES[label - 1], rng, ys - centre[0], xs - centre[1], radius)
            if _hides_too_much(instances, inside, areas) or inside.sum() < 12 * scale**2:
                continue
            underneath = image[inside].mean(axis=0)
            image[inside] = _object_texture(rng, label, num_classes, underneath, ys[inside], xs[inside])
            labels[inside] = label
            areas.append(int(inside.sum()))
            instances[inside] = len(areas) - 1
            break
    image = image + rng.normal(0, PIXEL_NOISE, image.shape)
    pixels = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return (tv_tensors.Image(torch.from_numpy(pixels).permute(2, 0, 1).contiguous()),
            tv_tensors.Mask(torch.from_numpy(labels)))


def _hides_too_much(instances: np.ndarray, inside: np.ndarray, areas: list[int]) -> bool:
    """Whether drawing ``inside`` would hide more than MAX_OCCLUSION of an instance already drawn."""
    hidden = np.bincount(instances[inside], minlength=len(areas))[1:]
    return bool((hidden > MAX_OCCLUSION * np.asarray(areas[1:])).any())


def _background(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(H, W, 3) floats in [0, 1]: two random colours mixed by noise, a gradient or stripes."""
    height, width = ys.shape
    first, second = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    kind = rng.integers(3)
    if kind == 0:  # smooth noise: a coarse random grid, upsampled bilinearly
        coarse = rng.uniform(0, 1, (5, 5))
        mix = _bilinear(coarse, ys / max(height - 1, 1) * 4, xs / max(width - 1, 1) * 4)
    elif kind == 1:  # linear gradient in a random direction
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xs + np.sin(angle) * ys
        mix = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
    else:  # stripes of random period and orientation
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 14)
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * (np.cos(angle) * xs + np.sin(angle) * ys) / period)
    return first + mix[..., None] * (second - first)


def _bilinear(grid: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    y0, x0 = np.clip(np.floor(y).astype(int), 0, grid.shape[0] - 2), np.clip(np.floor(x).astype(int), 0,
                                                                                grid.shape[1] - 2)
    fy, fx = y - y0, x - x0
    top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
    bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _shape(name: str, rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray, radius: float) -> np.ndarray:
    """(H, W) bool: the pixels inside one randomly rotated shape of about ``radius`` centred at dy = dx = 0."""
    angle = rng.uniform(0, 2 * np.pi)
    u = np.cos(angle) * dx + np.sin(angle) * dy  # coordinates in the shape's own rotated frame
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    distance = np.hypot(u, v)
    if name == "disc":
        return distance <= radius
    if name == "rectangle":
        half_long = radius * rng.uniform(0.8, 1.0)
        return (np.abs(u) <= half_long) & (np.abs(v) <= half_long * rng.uniform(0.55, 0.9))
    if name == "triangle":  # equilateral: three half-planes at inradius r/2 of a circumradius 1.3 r
        normals = angle + np.pi / 3 + 2 * np.pi / 3 * np.arange(3)
        reach = np.cos(normals)[:, None, None] * dx + np.sin(normals)[:, None, None] * dy
        return (reach <= 0.65 * radius).all(axis=0)
    if name == "ring":
        return (distance <= radius) & (distance >= radius * rng.uniform(0.4, 0.55))
    if name == "star":  # radius oscillates with the angle: 5 lobes
        theta = np.arctan2(v, u)
        return distance <= radius * (0.72 + 0.28 * np.cos(5 * theta))
    if name == "cross":
        arm = radius * rng.uniform(0.3, 0.4)
        return ((np.abs(u) <= radius) & (np.abs(v) <= arm)) | ((np.abs(v) <= radius) & (np.abs(u) <= arm))
    raise ValueError(f"unknown shape {name!r}")


def _object_texture(rng: np.random.Generator, label: int, num_classes: int, underneath: np.ndarray,
                    ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(P, 3) colours of an object's P pixels: its class hue (with overlap), shaded or speckled."""
    for _attempt in range(10):
        hue = (label - 1) / (num_classes - 1) + rng.normal(0, HUE_SPREAD)
        colour = _hsv_to_rgb(hue % 1.0, rng.uniform(0.35, 1.0), rng.uniform(0.35, 1.0))
        if np.linalg.norm(colour - underneath) >= MIN_CONTRAST:
            break
    # A mild shading across the object plus speckle of class-independent strength.
    angle = rng.uniform(0, 2 * np.pi)
    shading = 0.08 * np.tanh((np.cos(angle) * (xs - xs.mean()) + np.sin(angle) * (ys - ys.mean())) / 8)
    speckle = rng.normal(0, rng.uniform(0, 0.06), (len(ys), 1))
    return colour + shading[:, None] + speckle


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    channel = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6  # the standard piecewise-linear HSV -> RGB
    return value - value * saturation * np.clip(np.minimum(channel, 4 - channel), 0, 1)
