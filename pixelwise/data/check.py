"""Scan a whole data set and report every problem at once, with class frequencies and image sizes."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

import torch

from pixelwise.data.base import DataError, FilePairDataset, bit_depth
from pixelwise.data.registry import DATASETS, build_dataset
from pixelwise.data.statistics import class_pixel_counts

MAX_LISTED_PROBLEMS = 20


@dataclass
class CheckReport:
    """What ``check_dataset`` found. ``image_class_counts`` is (N, C): class pixels of each readable item."""

    name: str
    root: str | None
    split: str
    num_items: int = 0
    class_names: list[str] = field(default_factory=list)
    problems: list[DataError] = field(default_factory=list)
    image_class_counts: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, dtype=torch.int64))
    ignore_pixels: int = 0
    image_sizes: Counter = field(default_factory=Counter)  # (height, width) -> number of images
    bit_depths: Counter = field(default_factory=Counter)  # bits per channel -> number of images
    value_range: tuple[float, float] | None = None  # darkest and brightest pixel value over the split

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def problem_counts(self) -> Counter:
        return Counter(problem.kind for problem in self.problems)

    @property
    def class_pixels(self) -> list[int]:
        return self.image_class_counts.sum(dim=0).tolist()

    @property
    def class_share(self) -> list[float]:
        """Each class's share of the labelled (non-ignore) pixels."""
        pixels = self.class_pixels
        total = sum(pixels)
        return [count / total if total else 0.0 for count in pixels]


def check_dataset(name: str, root: str | os.PathLike | None, split: str, **options) -> CheckReport:
    """Read every item of a data set split (no transform) and collect all problems instead of stopping."""
    report = CheckReport(name, None if root is None else str(root), split)
    if name in DATASETS and issubclass(DATASETS[name], FilePairDataset):
        options = {"verify_files": False, **options}  # report missing masks one by one, below
    try:
        dataset = build_dataset(name, root, split, **options)
    except DataError as error:  # an empty or absent split: nothing more to scan
        report.problems.append(error)
        return report
    report.num_items = len(dataset)
    report.class_names = list(dataset.class_names)
    counts = []
    for index in range(len(dataset)):
        try:
            pixels, mask = dataset.load_arrays(index)  # the pixels at the file's bit depth
        except DataError as error:
            report.problems.append(error)
            continue
        mask = torch.as_tensor(mask)
        counts.append(class_pixel_counts(mask, dataset.num_classes))
        report.ignore_pixels += int((mask == dataset.ignore_index).sum())
        report.image_sizes[tuple(pixels.shape[:2])] += 1
        report.bit_depths[bit_depth(pixels)] += 1
        low, high = float(pixels.min()), float(pixels.max())
        report.value_range = (low, high) if report.value_range is None else (
            min(low, report.value_range[0]), max(high, report.value_range[1]))
    report.image_class_counts = torch.stack(counts) if counts else torch.zeros(0, dataset.num_classes,
                                                                                 dtype=torch.int64)
    return report


def format_report(report: CheckReport) -> str:
    """A plain-text report: problems by kind (the first few listed), class frequencies, image sizes."""
    where = report.name if report.root is None else f"{report.name}:{report.root}"
    lines = [f"data set {where}, split {report.split}: {report.num_items} items"]
    if report.ok:
        lines.append("problems: none")
    else:
        counts = ", ".join(f"{kind} {count}" for kind, count in sorted(report.problem_counts.items()))
        lines.append(f"problems: {len(report.problems)} ({counts})")
        lines += [f"  {problem}" for problem in report.problems[:MAX_LISTED_PROBLEMS]]
        if len(report.problems) > MAX_LISTED_PROBLEMS:
            lines.append(f"  ... and {len(report.problems) - MAX_LISTED_PROBLEMS} more")
    if report.class_names:
        labelled = sum(report.class_pixels)
        lines.append(f"classes ({labelled} labelled pixels, {report.ignore_pixels} ignored):")
        width = max(len(name) for name in report.class_names)
        for index, (name, pixels, share) in enumerate(
            zip(report.class_names, report.class_pixels, report.class_share, strict=True)
        ):
            lines.append(f"  {index:>3}  {name:<{width}}  {pixels:>12}  {share:7.2%}")
    if report.image_sizes:
        lines.append("image sizes (H x W):")
        for (height, width), count in report.image_sizes.most_common():
            lines.append(f"  {height} x {width}: {count}")
    if report.bit_depths:
        depths = ", ".join(f"{bits}-bit: {count}" for bits, count in sorted(report.bit_depths.items()))
        low, high = report.value_range
        lines.append(f"bit depth: {depths}; pixel values {low:g}..{high:g}")
        if 16 in report.bit_depths and high <= 4095:
            lines.append("  16-bit images that use at most 12 bits: consider data.intensity: percentile (or minmax)")
    return "\n".join(lines)
