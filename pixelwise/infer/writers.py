"""Writing predictions: indexed-colour PNG masks, overlays with a legend, class-area tables, videos."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

from pixelwise.fileio import atomic_write

LEGEND_ROW = 18  # pixels per legend entry
LEGEND_WIDTH = 170
# Above this many classes the legend lists only the classes present in the image.
LEGEND_ALL_CLASSES_UP_TO = 24


def mask_image(labels: np.ndarray, palette: list[list[int]]) -> PILImage.Image:
    """(H, W) labels -> a "P" mode PIL image: the pixel values are the labels, the palette their colours.

    Viewers show the colours; ``np.asarray(Image.open(path))`` gives back the labels exactly.
    """
    if labels.max(initial=0) > 255:
        raise ValueError(f"an indexed PNG holds labels up to 255, got {labels.max()}")
    image = PILImage.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette([channel for colour in palette[:256] for channel in colour])
    return image


def save_png(image: PILImage.Image, path: str | os.PathLike) -> None:
    """Write a PIL image as PNG atomically."""
    with atomic_write(path) as handle:
        image.save(handle, format="PNG")


def overlay(pixels: np.ndarray, labels: np.ndarray, palette: list[list[int]], opacity: float = 0.5) -> np.ndarray:
    """uint8 (H, W, 3) image blended with the colours of (H, W) labels: (1 - opacity) * image + opacity * colour."""
    colours = np.asarray(palette, dtype=np.float32)[labels]
    blended = (1 - opacity) * pixels.astype(np.float32) + opacity * colours
    return (blended + 0.5).astype(np.uint8)


def with_legend(
    image: np.ndarray, class_names: list[str], palette: list[list[int]], labels: np.ndarray | None = None
) -> PILImage.Image:
    """uint8 (H, W, 3) image with a legend strip on its right: a colour swatch and name per class.

    Lists every class when there are few, else only those present in ``labels``.
    """
    if len(class_names) <= LEGEND_ALL_CLASSES_UP_TO or labels is None:
        shown = list(range(len(class_names)))
    else:
        shown = [int(c) for c in np.unique(labels)]
    height, width = image.shape[:2]
    canvas = PILImage.new("RGB", (width + LEGEND_WIDTH, max(height, LEGEND_ROW * len(shown) + 8)), (255, 255, 255))
    canvas.paste(PILImage.fromarray(image), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, index in enumerate(shown):
        top = 4 + row * LEGEND_ROW
        draw.rectangle([width + 6, top, width + 20, top + 14], fill=tuple(palette[index]), outline=(0, 0, 0))
        draw.text((width + 26, top + 1), class_names[index], fill=(0, 0, 0))
    return canvas


def class_areas(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes,) pixel count of each class in (H, W) labels."""
    return np.bincount(labels.ravel(), minlength=num_classes)[:num_classes]


def even_size(frame: np.ndarray) -> np.ndarray:
    """Pad an (H, W, 3) frame with white to even H and W, which H.264's 4:2:0 chroma needs."""
    height, width = frame.shape[:2]
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), constant_values=255)


def write_video(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: float) -> None:
    """Encode uint8 (H, W, 3) frames as an H.264 MP4 at ``path``, atomically (needs ``pixelwise[video]``).

    ffmpeg writes to a path, so the video is encoded in a scratch folder, then copied into place.
    """
    import imageio.v2 as imageio

    with tempfile.TemporaryDirectory() as scratch:
        encoded = Path(scratch) / "video.mp4"
        writer = imageio.get_writer(encoded, format="FFMPEG", fps=fps, macro_block_size=1)
        try:
            for frame in frames:
                writer.append_data(even_size(frame))
        finally:
            writer.close()
        with open(encoded, "rb") as source, atomic_write(path) as handle:
            shutil.copyfileobj(source, handle)
