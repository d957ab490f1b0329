"""Scan a whole data set and report every problem at once, with class frequencies and image sizes.

The label doctor (``MaskScan``, ``diagnose``) reads the masks of a split and names the label mistakes that
make a class score IoU 0 or NaN without any error: binary masks stored as 0/255 (255 read as ignore),
colour masks where index masks were expected, JPEG artefacts between the labels, classes that never occur,
and a label 0 that may mean "other". Each finding carries its counts, the files and the option that fixes
it; the trainer runs the same scan on its train split and refuses to start on a blocking one.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

from pixelwise.data.base import (
    DataError,
    FilePairDataset,
    SegmentationDataset,
    bit_depth,
    image_header,
    open_image,
    size_mismatch,
)
from pixelwise.data.registry import DATASETS, build_dataset
from pixelwise.data.statistics import class_pixel_counts

MAX_LISTED_PROBLEMS = 20
MAX_LISTED_FILES = 5
MAX_LISTED_COLORS = 12
MAX_SUGGESTED_PALETTE = 64  # more colours than this are not a class palette (anti-aliasing, photos)
ZERO_MAJORITY = 0.5  # label 0 above this share of the labelled pixels may be "other" (reduce_zero_label)
JPEG_SUFFIXES = (".jpg", ".jpeg")
# What reading an image header raises for a file that is damaged or claims too many pixels.
UNREADABLE = (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError)


@dataclass
class Finding:
    """One diagnosis of a split's masks: what was found (with counts), what to do, the files it touches.

    ``kind`` is one of ``binary_255``, ``color_masks``, ``jpeg_artefacts``, ``jpeg_masks``, ``values_above_classes``,
    ``absent_classes``, ``unseen_classes``, ``zero_majority``, and for the files ``exif_orientation`` and
    ``unmatched_masks``. ``blocking`` findings make IoU 0 or NaN (or pair masks with the wrong pixels):
    check-data fails on them and the trainer refuses to start; the others are notes.
    """

    kind: str
    message: str
    suggestion: str
    files: list[str] = field(default_factory=list)
    blocking: bool = True

    def __str__(self) -> str:
        return f"{self.message}. {self.suggestion}"


class MaskScan:
    """The evidence read from one split's masks, item by item: class pixels, and the files of each mistake.

    ``add`` takes an item's labels; ``failed`` an item whose loading raised, to explain label errors.
    """

    def __init__(self, dataset: SegmentationDataset) -> None:
        self.dataset = dataset
        self.counts: list[torch.Tensor] = []  # (C,) class pixels of each readable mask
        self.ignore_pixels = 0
        self.problems: list[DataError] = []
        self.binary_masks: dict[str, int] = {}  # masks holding only 0 and 255 (read as ignore) -> 255 pixels
        self.color_masks: list[str] = []
        self.colors: Counter = Counter()  # (r, g, b) -> pixels, over the colour masks
        self.invalid_values: dict[str, Counter] = {}  # mask -> {value that is no label: pixels}
        self.jpeg_masks: list[str] = []  # masks stored with lossy compression
        self.shapes: list[tuple[int, int] | None] = []  # (H, W) of each item's mask, None where unreadable

    def mask_path(self, index: int) -> Path | None:
        return self.dataset.files[index][1] if isinstance(self.dataset, FilePairDataset) else None

    def add(self, index: int, labels: np.ndarray) -> None:
        self.shapes.append(labels.shape[:2])
        path = self.mask_path(index)
        if path is not None and path.suffix.lower() in JPEG_SUFFIXES:
            self.jpeg_masks.append(str(path))
        mask = torch.as_tensor(labels)
        self.counts.append(class_pixel_counts(mask, self.dataset.num_classes))
        ignored = int((mask == self.dataset.ignore_index).sum())
        self.ignore_pixels += ignored
        if ignored and not (labels[labels != self.dataset.ignore_index] != 0).any() and \
                255 not in getattr(self.dataset, "label_map", {}):  # an explicit 255: ignore says 255 is meant
            # Only class 0 and ignore: binary masks saved as 0/255 when the file holds exactly those values.
            raw = labels if path is None else self.dataset.read_raw_mask(path)
            values = set(np.unique(raw).tolist())
            if values <= {0, 255} and 255 in values:
                self.binary_masks[str(path) if path is not None else f"item {index}"] = int((raw == 255).sum())

    def failed(self, index: int, error: DataError) -> None:
        """Record an item that could not be read; colour masks and values that are no labels are explained."""
        self.shapes.append(None)
        self.problems.append(error)
        path = self.mask_path(index)
        if path is None or error.kind not in ("color_mask", "bad_labels"):
            return
        if error.kind == "color_mask":
            with open_image(path, "mask") as image:
                rgb = np.asarray(image.convert("RGB")).astype(np.int64)
            packed, pixels = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2], return_counts=True)
            self.colors.update({(color >> 16, (color >> 8) & 255, color & 255): int(count)
                                for color, count in zip(packed.tolist(), pixels.tolist(), strict=True)})
            self.color_masks.append(str(path))
            return
        try:
            raw = self.dataset.read_raw_mask(path)
        except DataError:  # a palette folder set's unknown colour: the error already says it all
            return
        invalid = raw[self.dataset.labels_or_invalid(raw) < 0]
        values, pixels = np.unique(invalid, return_counts=True)
        self.invalid_values[str(path)] = Counter(dict(zip(values.tolist(), pixels.tolist(), strict=True)))

    @property
    def class_pixels(self) -> list[int]:
        return self.image_class_counts.sum(dim=0).tolist()

    @property
    def image_class_counts(self) -> torch.Tensor:
        """(N, C) class pixels of each readable mask."""
        return torch.stack(self.counts) if self.counts else torch.zeros(0, self.dataset.num_classes,
                                                                         dtype=torch.int64)


def scan_labels(dataset: SegmentationDataset) -> MaskScan:
    """Read every mask of ``dataset`` (not its images: ``load_labels``) and gather the doctor's evidence."""
    scan = MaskScan(dataset)
    for index in range(len(dataset)):
        try:
            labels = dataset.load_labels(index)
        except DataError as error:
            scan.failed(index, error)
            continue
        scan.add(index, labels)
    return scan


def image_header_problems(dataset: SegmentationDataset, scan: MaskScan) -> list[DataError]:
    """Images of a file data set that are missing, unreadable at their header, or of another size than their
    readable mask: read from the headers alone (no pixels decoded), so a pre-flight check stays cheap."""
    if not isinstance(dataset, FilePairDataset):
        return []
    problems = []
    for (image_path, mask_path), shape in zip(dataset.files, scan.shapes, strict=True):
        try:
            (height, width), _ = image_header(image_path)
        except FileNotFoundError:
            problems.append(DataError(image_path, "image file is missing", "missing_image"))
            continue
        except UNREADABLE as error:
            problems.append(DataError(image_path, f"cannot read image: {error}", "unreadable"))
            continue
        if shape is not None and shape != (height, width):
            problems.append(size_mismatch(mask_path, shape, image_path, (height, width)))
    return problems


# Where an oriented image's mask fits -> (blocking, what it means, what to do).
ORIENTATION_VERDICTS = {
    "stored": (False, "their masks have the stored size, so they were drawn on the stored pixels, which "
               "pixelwise trains on", "Nothing to do for training; note that predict, serve and the Segmenter turn "
               "the images they are given as viewers do"),
    "turned": (True, "their masks have the turned size: they were drawn on the image as viewers show it, while "
               "pixelwise trains on the stored pixels", "Save these images with the orientation applied "
               "(PIL.ImageOps.exif_transpose(image).save(path)) so that their pixels match the masks"),
    "either": (False, "a flip or a half turn keeps the size, so the masks may fit the stored pixels (which "
               "pixelwise trains on) or the image as viewers show it", "Overlay a mask on its stored pixels to "
               "see which; if they fit the shown image, save the images with PIL.ImageOps.exif_transpose"),
    "neither": (True, "their masks have neither the stored nor the turned size",
                "Check that each mask belongs to its image (the sizes are listed under problems)"),
}


def orientation_findings(dataset: SegmentationDataset) -> list[Finding]:
    """The images of a file data set whose EXIF orientation is not 1 (viewers turn or flip them; training reads
    the stored pixels), one finding for each size their masks have: stored, turned, either or neither."""
    if not isinstance(dataset, FilePairDataset):
        return []
    verdicts: dict[str, list[str]] = {}
    for image_path, mask_path in dataset.files:
        try:
            stored, orientation = image_header(image_path)
            if orientation == 1:
                continue
            mask = image_header(mask_path)[0]
        except UNREADABLE:  # a missing or unreadable file is a problem of its own
            continue
        turned = stored[::-1] if orientation >= 5 else stored  # 5..8 transpose, 2..4 flip or turn by 180
        verdict = ("either" if mask == stored == turned else "stored" if mask == stored else
                   "turned" if mask == turned else "neither")
        verdicts.setdefault(verdict, []).append(str(image_path))
    findings = []
    for verdict, files in verdicts.items():
        blocking, meaning, fix = ORIENTATION_VERDICTS[verdict]
        findings.append(Finding("exif_orientation", f"{len(files)} images carry an EXIF orientation other than 1 "
                                f"(viewers show them turned or flipped); {meaning}", fix, files, blocking))
    return findings


def unmatched_mask_finding(dataset: SegmentationDataset) -> Finding | None:
    """Mask files that no image of the split pairs with: they are left out of training without a word."""
    unmatched = [str(path) for path in getattr(dataset, "unmatched_masks", ())]
    if not unmatched:
        return None
    return Finding("unmatched_masks", f"{len(unmatched)} mask files have no image of the same stem, so they are "
                   "not used", "Add their images (same stem, any image suffix) or rename the images they belong "
                   "to; remove masks that are left over", unmatched, blocking=False)


def names(paths: list[str]) -> str:
    """The first few file names of a list, and how many more."""
    shown = ", ".join(Path(path).name for path in paths[:MAX_LISTED_FILES])
    return shown + (f" and {len(paths) - MAX_LISTED_FILES} more" if len(paths) > MAX_LISTED_FILES else "")


def class_list(dataset: SegmentationDataset, labels: list[int]) -> str:
    return ", ".join(f"{label} ({dataset.class_names[label]})" for label in labels)


def diagnose(scan: MaskScan, split: str) -> list[Finding]:
    """The label mistakes ``scan`` shows, blocking ones first, each with its counts, files and fix."""
    dataset, findings = scan.dataset, []
    readable = len(scan.counts)
    if scan.color_masks:
        findings.append(color_finding(scan))
    findings += invalid_value_findings(scan)
    if scan.binary_masks:
        findings.append(binary_finding(scan, readable))
    class_pixels = scan.class_pixels
    absent = [label for label, pixels in enumerate(class_pixels) if pixels == 0]
    if readable and absent:
        found = [label for label, pixels in enumerate(class_pixels) if pixels > 0]
        if scan.binary_masks:
            fix = "The 0/255 masks above are the cause"
        elif found and 1 <= max(found) < dataset.num_classes - 1:
            fix = (f"The largest label found in split {split!r} is {max(found)}: is num_classes {dataset.num_classes} "
                   f"meant to be {max(found) + 1}, or do the other classes occur only in other splits? A class with "
                   "no pixels in the training split cannot be learnt")
        else:
            fix = ("Check num_classes and the mask values (label_map), or add images that show these classes; "
                   "a class with no pixels cannot be learnt")
        findings.append(Finding(
            "absent_classes",
            f"{len(absent)} of {dataset.num_classes} classes never occur in the {readable} readable masks of split "
            f"{split!r}: {class_list(dataset, absent)}; their IoU will be 0, or NaN where no split has them", fix))
    labelled = sum(class_pixels)
    zero_share = class_pixels[0] / labelled if labelled else 0.0
    # Asked only where the data set offers the option and it is off, and where it would leave 2 classes or more.
    if zero_share > ZERO_MAJORITY and dataset.ignore_index != 0 and not scan.binary_masks and \
            dataset.num_classes > 2 and getattr(dataset, "reduce_zero_label", None) is False:
        findings.append(Finding(
            "zero_majority", f"label 0 ({dataset.class_names[0]}) covers {zero_share:.1%} of the labelled pixels",
            "If 0 means 'other' or 'unlabelled' rather than a class to learn and score, set reduce_zero_label: true "
            "(MMSegmentation's semantics: 0 becomes ignore (255), every other value v the label v - 1, and "
            "num_classes counts the classes without it); if 0 is a real class, such as a background to segment, "
            "keep it", blocking=False))
    return sorted(findings, key=lambda finding: not finding.blocking)


def color_finding(scan: MaskScan) -> Finding:
    colors = [color for color, _ in scan.colors.most_common()]
    total = sum(scan.colors.values())
    shown = ", ".join(f"{list(color)} {scan.colors[color] / total:.1%}" for color in colors[:MAX_LISTED_COLORS])
    more = f" and {len(colors) - MAX_LISTED_COLORS} more" if len(colors) > MAX_LISTED_COLORS else ""
    if all(red == green == blue for red, green, blue in colors):
        fix = ("The colours are all gray levels: these are index masks saved as RGB; save them single-channel "
               "(PIL mode L, or a palette PNG)")
    elif len(colors) <= MAX_SUGGESTED_PALETTE:
        fix = (f"If each colour is a class, read them with palette: {[list(color) for color in sorted(colors)]} "
               "reordered into your class order (ignore_color: [r, g, b] for a void colour)")
    else:
        fix = ("So many colours are no class palette (anti-aliased or photographic masks?); export the masks "
               "as index PNGs, or as RGB with exact class colours and palette: [[r, g, b], ...]")
    return Finding("color_masks", f"{len(scan.color_masks)} masks are colour (RGB) images where index masks were "
                   f"expected; {len(colors)} distinct colours found: {shown}{more}", fix, scan.color_masks)


def invalid_value_findings(scan: MaskScan) -> list[Finding]:
    """Mask values that are no labels, split into those between the labels and 255 (JPEG artefacts when the
    file was ever compressed) and the rest (more classes than num_classes)."""
    dataset, findings = scan.dataset, []
    between = {path: Counter({value: pixels for value, pixels in values.items() if 0 < value < 255})
               for path, values in scan.invalid_values.items()}
    between = {path: values for path, values in between.items() if values}
    if between:
        values = sum(between.values(), Counter())
        jpegs = [path for path in between if Path(path).suffix.lower() in JPEG_SUFFIXES]
        # JPEG leaves many rare values along the label edges; extra classes are few values with many pixels.
        looks_compressed = jpegs or len(values) > 2 * dataset.num_classes
        shown = ", ".join(str(value) for value in sorted(values)[:MAX_LISTED_COLORS])
        message = (f"{len(between)} masks hold values between the labels (0..{dataset.num_classes - 1}) and 255: "
                   f"{sum(values.values())} pixels, {len(values)} distinct values ({shown}"
                   f"{', ...' if len(values) > MAX_LISTED_COLORS else ''})")
        if looks_compressed:
            findings.append(Finding(
                "jpeg_artefacts", message + ": JPEG compression artefacts" +
                (f" ({len(jpegs)} of the masks are JPEG files)" if jpegs else ""),
                "Lossy compression blurs label edges into in-between values; export the masks again, losslessly "
                "(PNG), from their source", list(between)))
        else:
            findings.append(Finding(
                "values_above_classes", message,
                f"If these are classes, set num_classes to {max(values) + 1}; if they mean void, map them: "
                f"label_map: {{{sorted(values)[0]}: ignore}}", list(between)))
    above = Counter()
    files_above = [path for path, values in scan.invalid_values.items() if any(value > 255 for value in values)]
    for path in files_above:
        above.update({value: pixels for value, pixels in scan.invalid_values[path].items() if value > 255})
    if above:
        example = ", ".join(f"{value}: {label}" for label, value in enumerate(sorted(above)[:3], start=1))
        findings.append(Finding(
            "values_above_classes",
            f"{len(files_above)} masks hold values above 255 (16-bit masks?): {sum(above.values())} pixels, values "
            f"{', '.join(str(value) for value in sorted(above)[:MAX_LISTED_COLORS])}",
            f"Map each to its class, e.g. label_map: {{{example}}}, or to ignore", files_above))
    reported = {path for finding in findings if finding.kind == "jpeg_artefacts" for path in finding.files}
    unreported = [path for path in scan.jpeg_masks if path not in reported]
    if unreported:
        findings.append(Finding(
            "jpeg_masks", f"{len(unreported)} masks are JPEG files: lossy compression moves label values near "
            "edges, where they turn into other valid labels unseen", "Export the masks losslessly (PNG) from their "
            "source", unreported, blocking=False))
    return findings


def binary_finding(scan: MaskScan, readable: int) -> Finding:
    dataset = scan.dataset
    ignored = sum(scan.binary_masks.values())
    two_classes = "" if dataset.num_classes == 2 else " with num_classes: 2"
    every = len(scan.binary_masks) == readable
    return Finding(
        "binary_255", f"{len(scan.binary_masks)} of {readable} masks hold only the values 0 and 255, and 255 is "
        f"read as ignore: binary masks stored as 0/255? Their {ignored} foreground pixels are ignored, so only "
        "class 0 is learnt",
        f"If 255 is the foreground, map it: label_map: {{255: 1}}{two_classes}; if 255 is meant to be ignored, "
        "say so with label_map: {255: ignore}", list(scan.binary_masks), blocking=every)


def unseen_classes(train: CheckReport, other: CheckReport) -> Finding | None:
    """Classes that occur in ``other`` (a validation split) but never in ``train``: their IoU there is 0."""
    if not train.image_class_counts.numel() or not other.image_class_counts.numel():
        return None
    train_pixels, other_counts = train.class_pixels, other.image_class_counts
    unseen = [label for label, pixels in enumerate(other.class_pixels) if pixels and not train_pixels[label]]
    if not unseen:
        return None
    where = ", ".join(f"{label} ({other.class_names[label]}: {other.class_pixels[label]} pixels in "
                      f"{int((other_counts[:, label] > 0).sum())} images)" for label in unseen)
    return Finding("unseen_classes", f"classes in split {other.split!r} but never in {train.split!r}: {where}; "
                   f"their IoU on {other.split!r} will be 0",
                   f"Move some images that show them into {train.split!r}, or check both splits use the same labels")


@dataclass
class CheckReport:
    """What ``check_dataset`` found. ``image_class_counts`` is (N, C): class pixels of each readable item."""

    name: str
    root: str | None
    split: str
    num_items: int = 0
    class_names: list[str] = field(default_factory=list)
    problems: list[DataError] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # the label doctor's diagnoses
    image_class_counts: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, dtype=torch.int64))
    ignore_pixels: int = 0
    image_sizes: Counter = field(default_factory=Counter)  # (height, width) -> number of images
    bit_depths: Counter = field(default_factory=Counter)  # bits per channel -> number of images
    value_range: tuple[float, float] | None = None  # darkest and brightest pixel value over the split

    @property
    def ok(self) -> bool:
        return not self.problems and not self.blocking_findings

    @property
    def blocking_findings(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.blocking]

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
    """Read every item of a data set split (no transform) and collect all problems instead of stopping,
    with the label doctor's findings (``diagnose``)."""
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
    scan = MaskScan(dataset)
    for index in range(len(dataset)):
        try:
            pixels, mask = dataset.load_arrays(index)  # the pixels at the file's bit depth
        except DataError as error:
            scan.failed(index, error)
            continue
        scan.add(index, mask)
        report.image_sizes[tuple(pixels.shape[:2])] += 1
        report.bit_depths[bit_depth(pixels)] += 1
        low, high = float(pixels.min()), float(pixels.max())
        report.value_range = (low, high) if report.value_range is None else (
            min(low, report.value_range[0]), max(high, report.value_range[1]))
    report.problems = scan.problems
    unmatched = unmatched_mask_finding(dataset)
    findings = diagnose(scan, split) + orientation_findings(dataset) + ([unmatched] if unmatched else [])
    report.findings = sorted(findings, key=lambda finding: not finding.blocking)
    report.image_class_counts = scan.image_class_counts
    report.ignore_pixels = scan.ignore_pixels
    return report


def check_splits(name: str, root: str | os.PathLike | None, splits: list[str], **options) -> list[CheckReport]:
    """``check_dataset`` of each split; a later split's classes that the first (training) split lacks are
    added to its findings."""
    reports = [check_dataset(name, root, split, **options) for split in splits]
    for other in reports[1:]:
        finding = unseen_classes(reports[0], other)
        if finding is not None:
            other.findings.insert(0, finding)
    return reports


def format_report(report: CheckReport) -> str:
    """A plain-text report: problems by kind (the first few listed), class frequencies, image sizes."""
    where = report.name if report.root is None else f"{report.name}:{report.root}"
    lines = [f"data set {where}, split {report.split}: {report.num_items} items"]
    if report.problems:
        counts = ", ".join(f"{kind} {count}" for kind, count in sorted(report.problem_counts.items()))
        lines.append(f"problems: {len(report.problems)} ({counts})")
        lines += [f"  {problem}" for problem in report.problems[:MAX_LISTED_PROBLEMS]]
        if len(report.problems) > MAX_LISTED_PROBLEMS:
            lines.append(f"  ... and {len(report.problems) - MAX_LISTED_PROBLEMS} more")
    elif report.blocking_findings:
        lines.append(f"problems: {len(report.blocking_findings)} in the labels (diagnosis below)")
    else:
        lines.append("problems: none")
    if report.findings:
        lines.append("label diagnosis:")
    for finding in report.findings:
        lines.append(f"  {'problem' if finding.blocking else 'note'}: {finding.message}")
        lines.append(f"    fix: {finding.suggestion}")
        if finding.files:
            lines.append(f"    files ({len(finding.files)}): {names(finding.files)}")
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
