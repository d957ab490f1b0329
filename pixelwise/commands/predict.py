"""``pixelwise predict``: segment images, folders, globs or videos with a saved run.

Writes ``<name>.png`` (indexed-colour mask in the data set's palette) per image, optionally
``<name>_overlay.png`` (image + mask + legend), ``<name>_overlay.mp4`` per video, and ``stats.csv``
(pixel count of every class per image or frame). A file that cannot be read is reported and skipped;
the exit code is 1 if any file failed.
"""

from __future__ import annotations

import argparse
import csv
import glob
import shutil
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pixelwise.checkpoint import read_config
from pixelwise.fileio import atomic_write
from pixelwise.infer.inputs import to_channels, to_uint8
from pixelwise.infer.segmenter import Segmenter
from pixelwise.infer.writers import class_areas, mask_image, overlay, save_png, with_legend
from pixelwise.train.config import crf_settings

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
# DeepLab v3 evaluates "+MS +Flip" at scales 0.5 ... 1.75; three scales keep the CPU cost at 6 passes.
TTA_SCALES = (0.75, 1.0, 1.25)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="segment images, folders, globs or videos")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, globs or video files")
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="saved model directory")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--overlay", action="store_true", help="also write overlays with a legend")
    parser.add_argument("--opacity", type=float, default=0.5, help="overlay opacity of the mask (default 0.5)")
    parser.add_argument("--mode", choices=("whole", "slide"), default="whole")
    parser.add_argument("--tile", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--stride", type=int, nargs=2, default=(341, 341), metavar=("H", "W"))
    parser.add_argument("--tta", action="store_true", help=f"average scales {TTA_SCALES} and horizontal flips")
    parser.add_argument("--crf", action="store_true", help="refine with the dense CRF (the run's crf parameters)")
    parser.add_argument("--stats", action="store_true", help="write stats.csv: pixels of each class per image")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.set_defaults(func=run)


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


class Predictor:
    """Runs the segmenter on one file at a time and writes what the options ask for."""

    def __init__(self, segmenter: Segmenter, out: Path, args: argparse.Namespace) -> None:
        self.segmenter, self.out, self.args = segmenter, out, args
        self.rows: list[list[object]] = []

    def image(self, path: Path, stem: str) -> None:
        pixels = to_uint8(path)
        labels = self.segmenter.predict(pixels)
        save_png(mask_image(labels, self.segmenter.palette), self.out / f"{stem}.png")
        if self.args.overlay:
            save_png(self.overlay(pixels, labels), self.out / f"{stem}_overlay.png")
        self.record(str(path), labels)

    def video(self, path: Path, stem: str) -> None:
        import imageio.v2 as imageio  # only videos need it

        reader = imageio.get_reader(path)
        fps = reader.get_meta_data().get("fps", 25)
        # ffmpeg writes to a path, so encode in a scratch folder, then copy into place atomically.
        with tempfile.TemporaryDirectory() as scratch:
            encoded = Path(scratch) / "overlay.mp4"
            writer = imageio.get_writer(encoded, format="FFMPEG", fps=fps, macro_block_size=1)
            try:
                for index, frame in enumerate(reader):
                    pixels = to_uint8(np.asarray(frame))
                    labels = self.segmenter.predict(pixels)
                    writer.append_data(even_size(np.asarray(self.overlay(pixels, labels))))
                    self.record(f"{path}#{index}", labels)
            finally:
                writer.close()
                reader.close()
            with open(encoded, "rb") as source, atomic_write(self.out / f"{stem}_overlay.mp4") as handle:
                shutil.copyfileobj(source, handle)

    def overlay(self, pixels: np.ndarray, labels: np.ndarray):
        rgb = to_channels(pixels, 3)
        blended = overlay(rgb, labels, self.segmenter.palette, self.args.opacity)
        return with_legend(blended, self.segmenter.class_names, self.segmenter.palette, labels)

    def record(self, name: str, labels: np.ndarray) -> None:
        if self.args.stats:
            height, width = labels.shape
            self.rows.append([name, width, height, *class_areas(labels, self.segmenter.num_classes).tolist()])

    def write_stats(self) -> None:
        with atomic_write(self.out / "stats.csv", "w") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "width", "height", *self.segmenter.class_names])
            writer.writerows(self.rows)


def even_size(frame: np.ndarray) -> np.ndarray:
    """Pad an (H, W, 3) frame with white to even H and W, which H.264's 4:2:0 chroma needs."""
    height, width = frame.shape[:2]
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), constant_values=255)


def run(args: argparse.Namespace) -> int:
    segmenter = Segmenter(
        args.checkpoint, device=args.device, precision=args.precision, mode=args.mode, tile=tuple(args.tile),
        stride=tuple(args.stride), scales=TTA_SCALES if args.tta else (1.0,), flip=args.tta,
        crf=crf_settings(read_config(args.checkpoint)) if args.crf else None,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files, failures = expand_inputs(args.inputs)
    predictor = Predictor(segmenter, out, args)
    used: set[str] = set()
    done = 0
    for path in tqdm(files, desc="predict", unit="file"):
        stem = unique_stem(path, used)
        try:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                predictor.video(path, stem)
            else:
                predictor.image(path, stem)
            done += 1
        except Exception as error:  # report any unreadable file and go on with the rest
            failures.append((str(path), str(error)))
            tqdm.write(f"failed: {path}: {error}")
    if args.stats:
        predictor.write_stats()
    print(f"predict: {done} done, {len(failures)} failed, outputs in {out}")
    for item, reason in failures:
        print(f"  failed: {item}: {reason}")
    return 1 if failures else 0
