"""Segmenting files: images, folders, globs and videos in, masks, overlays and class areas out.

The engine of ``pixelwise predict``, usable from Python: ``expand_inputs`` turns what a user names into
files, ``unique_stem`` names each output after its input, and ``FilePredictor`` writes what is asked for.
"""

from __future__ import annotations

import csv
import glob
from pathlib import Path

import numpy as np

from pixelwise.fileio import atomic_write
from pixelwise.infer.inputs import to_channels, to_uint8
from pixelwise.infer.segmenter import Segmenter
from pixelwise.infer.writers import class_areas, mask_image, overlay, save_png, with_legend, write_video

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """(files to process, [(input, why it gave nothing)]): folders give their images, globs their matches."""
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
            if not found:
                problems.append((item, "folder holds no images or videos"))
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item) if Path(p).is_file())
            if not found:
                problems.append((item, "pattern matches no files"))
        else:
            found = [path]  # a missing file fails when read, and is reported there
        files.extend(found)
    return files, problems


def unique_stem(path: Path, used: set[str]) -> str:
    """The file's stem, with a numeric suffix when another input already took it."""
    stem, counter = path.stem, 1
    while stem in used:
        stem, counter = f"{path.stem}_{counter}", counter + 1
    used.add(stem)
    return stem


class FilePredictor:
    """Runs a Segmenter on one file at a time and writes its mask (``<stem>.png``), and on request its
    overlay with a legend (``<stem>_overlay.png``, ``<stem>_overlay.mp4`` for a video) and its class areas
    (rows of ``stats.csv``, written by ``write_stats``)."""

    def __init__(self, segmenter: Segmenter, out: Path, overlay: bool = False, opacity: float = 0.5,
                 stats: bool = False) -> None:
        self.segmenter, self.out = segmenter, out
        self.overlays, self.opacity, self.stats = overlay, opacity, stats
        self.rows: list[list[object]] = []

    def file(self, path: Path, stem: str) -> None:
        """Segment an image or a video file; outputs are named from ``stem``."""
        if path.suffix.lower() in VIDEO_SUFFIXES:
            self.video(path, stem)
        else:
            self.image(path, stem)

    def image(self, path: Path, stem: str) -> None:
        pixels = to_uint8(path)
        labels = self.segmenter.predict(pixels)
        save_png(mask_image(labels, self.segmenter.palette), self.out / f"{stem}.png")
        if self.overlays:
            save_png(self.overlay_image(pixels, labels), self.out / f"{stem}_overlay.png")
        self.record(str(path), labels)

    def video(self, path: Path, stem: str) -> None:
        import imageio.v2 as imageio  # only videos need it

        reader = imageio.get_reader(path)
        try:
            def overlays():
                for index, frame in enumerate(reader):
                    pixels = to_uint8(np.asarray(frame))
                    labels = self.segmenter.predict(pixels)
                    self.record(f"{path}#{index}", labels)
                    yield np.asarray(self.overlay_image(pixels, labels))

            write_video(overlays(), self.out / f"{stem}_overlay.mp4", reader.get_meta_data().get("fps", 25))
        finally:
            reader.close()

    def overlay_image(self, pixels: np.ndarray, labels: np.ndarray):
        rgb = to_channels(pixels, 3)
        blended = overlay(rgb, labels, self.segmenter.palette, self.opacity)
        return with_legend(blended, self.segmenter.class_names, self.segmenter.palette, labels)

    def record(self, name: str, labels: np.ndarray) -> None:
        if self.stats:
            height, width = labels.shape
            self.rows.append([name, width, height, *class_areas(labels, self.segmenter.num_classes).tolist()])

    def write_stats(self) -> None:
        with atomic_write(self.out / "stats.csv", "w") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "width", "height", *self.segmenter.class_names])
            writer.writerows(self.rows)
