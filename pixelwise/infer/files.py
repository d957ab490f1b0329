"""Segmenting files: images, folders, globs and videos in, masks, overlays and class areas out.

The engine of ``pixelwise predict``, usable from Python: ``expand_inputs`` turns what a user names into
files, ``output_stems`` names each input's outputs so that the source is never ambiguous, and
``FilePredictor`` writes what is asked for.
"""

from __future__ import annotations

import csv
import glob
import io
import os
from collections import Counter
from pathlib import Path

import numpy as np

from pixelwise.fileio import atomic_write, run_folder_of
from pixelwise.infer.inputs import to_channels, to_pixels, to_uint8
from pixelwise.infer.segmenter import Segmenter
from pixelwise.infer.writers import class_areas, mask_image, overlay, save_png, with_legend, write_video

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """(files to process, [(input, why it gave nothing)]): folders give their images, globs their matches.

    A file named twice (directly, through a folder, a glob, another spelling of its path or a link) is
    processed once.
    """
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    seen: set[Path] = set()
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
        for file in found:
            try:
                real = file.resolve(strict=file.is_symlink())
            except (OSError, RuntimeError) as error:  # a link to itself or to a missing file: skipped, reported
                problems.append((str(file), f"a link that cannot be followed: {error}"))
                continue
            if real not in seen:
                seen.add(real)
                files.append(file)
    return files, problems


def output_stems(files: list[Path]) -> dict[Path, str]:
    """The name each input's outputs are written under, unambiguous whatever the order of the inputs.

    An input's stem (``street`` for ``street.png``) when no other input shares it; else its whole file name
    (``a.jpg`` and ``a.png`` write ``a.jpg.png`` and ``a.png.png``); and past that the folders above it, joined
    by ``__`` (``left__a.png``, ``right__a.png``).
    """
    levels = dict.fromkeys(files, 0)

    def name(path: Path, level: int) -> str:
        return path.stem if level == 0 else "__".join(path.resolve().parts[-level:]).lstrip("/")

    while True:
        names = {path: name(path, levels[path]) for path in files}
        counts = Counter(names.values())
        clashing = [path for path in files if counts[names[path]] > 1 and levels[path] < len(path.resolve().parts)]
        if not clashing:
            return names
        for path in clashing:
            levels[path] += 1


class FilePredictor:
    """Runs a Segmenter on one file at a time and writes its mask (``<stem>.png``), and on request its
    overlay with a legend (``<stem>_overlay.png``, ``<stem>_overlay.mp4`` for a video) and its class areas
    (``stats.csv``, a row per image or video frame, appended as each file is done: a killed run keeps the
    rows of every file it finished).

    Nothing already in ``out`` is lost: an existing ``stats.csv`` keeps its rows and gets the new ones after
    them (it must list the same classes), and an existing mask or overlay is replaced only with ``overwrite``.
    An output is never written over an input.
    """

    def __init__(self, segmenter: Segmenter, out: Path, overlay: bool = False, opacity: float = 0.5,
                 stats: bool = False, overwrite: bool = False) -> None:
        self.segmenter, self.out = segmenter, out
        self.overlays, self.opacity, self.overwrite = overlay, opacity, overwrite
        self.stats_path = out / "stats.csv" if stats else None
        self.rows: list[list[object]] = []  # the current file's rows, appended to stats.csv when it is done
        if self.stats_path is None:
            return
        self.header = ["file", "width", "height", *segmenter.class_names]
        if self.stats_path.exists():
            with open(self.stats_path, newline="") as handle:
                found = next(csv.reader(handle), None)
            if found != self.header:
                raise ValueError(f"{self.stats_path} holds the class areas of another model (its columns differ); "
                                 "pick another --out, or move stats.csv away to start it afresh")

    def outputs(self, path: Path, stem: str) -> list[Path]:
        """The files ``file(path, stem)`` writes, stats.csv aside."""
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return [self.out / f"{stem}_overlay.mp4"]
        return [self.out / f"{stem}.png", *([self.out / f"{stem}_overlay.png"] if self.overlays else [])]

    def check(self, files: list[Path], stems: dict[Path, str]) -> None:
        """Refuse, before any work, outputs that would replace an input, or (without ``overwrite``) an existing
        file: the ValueError names them and says how to go on."""
        inputs = {file.resolve() for file in files}
        outputs = [output for file in files for output in self.outputs(file, stems[file])]
        over_inputs = [output.name for output in outputs if output.resolve() in inputs]
        if over_inputs:
            raise ValueError(f"--out {self.out}: the outputs {', '.join(over_inputs[:3])} would replace inputs of "
                             "the same name; write into another folder")
        existing = [output.name for output in outputs if output.exists()]
        run = run_folder_of(self.out / "stats.csv")
        if existing and run is not None:  # a run's plots are its own, --overwrite or not
            raise ValueError(f"--out {self.out}: {', '.join(existing[:3])} would replace files of the saved model or "
                             f"run in {run}; write into another folder")
        if existing and not self.overwrite:
            shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
            raise ValueError(f"--out {self.out} already holds {shown} from an earlier run; pick another --out, "
                             "or pass --overwrite to replace them")

    def file(self, path: Path, stem: str) -> None:
        """Segment an image or a video file; outputs are named from ``stem``."""
        self.check([path], {path: stem})
        self.rows.clear()
        if path.suffix.lower() in VIDEO_SUFFIXES:
            self.video(path, stem)
        else:
            self.image(path, stem)
        self.append_stats()

    def image(self, path: Path, stem: str) -> None:
        pixels = to_pixels(path)  # at the file's bit depth: 16-bit images keep their 16 bits
        labels = self.segmenter.predict(pixels)
        save_png(mask_image(labels, self.segmenter.palette), self.out / f"{stem}.png")
        if self.overlays:
            save_png(self.overlay_image(pixels, labels), self.out / f"{stem}_overlay.png")
        self.record(str(path), labels)

    def video(self, path: Path, stem: str) -> None:
        import imageio.v2 as imageio  # only videos need it

        try:
            reader = imageio.get_reader(path)
        except Exception as error:  # ffmpeg's message opens with a banner of its build; the last line is the reason
            lines = [line for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
            raise ValueError(f"cannot read the video: {lines[-1].strip()}") from None
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
        rgb = to_channels(to_uint8(pixels), 3)
        blended = overlay(rgb, labels, self.segmenter.palette, self.opacity)
        return with_legend(blended, self.segmenter.class_names, self.segmenter.palette, labels)

    def record(self, name: str, labels: np.ndarray) -> None:
        if self.stats_path is not None:
            height, width = labels.shape
            self.rows.append([name, width, height, *class_areas(labels, self.segmenter.num_classes).tolist()])

    def append_stats(self) -> None:
        """Append the finished file's rows to stats.csv in one write, so a kill never leaves half a row."""
        if self.stats_path is None or not self.rows:
            return
        text = io.StringIO()
        first = not self.stats_path.exists()  # the first rows come with the header, in one atomic file
        csv.writer(text).writerows([self.header, *self.rows] if first else self.rows)
        # A file name that is not UTF-8 keeps its own bytes, as the file system gave them.
        data = text.getvalue().encode("utf-8", "surrogateescape")
        if first:
            with atomic_write(self.stats_path) as handle:
                handle.write(data)
            return
        descriptor = os.open(self.stats_path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(descriptor, data)
        finally:
            os.close(descriptor)
