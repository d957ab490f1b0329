"""Data sets: one item contract ``(image, mask)``, a plain dict of loaders, and ``build_dataset``.

>>> dataset = build_dataset("synthetic", None, "train", num_images=8)
>>> image, mask = dataset[0]   # Image uint8 (3, 64, 64), Mask int64 (64, 64), ignore label 255
"""

from pixelwise.data.base import IGNORE_INDEX, DataError, SegmentationDataset
from pixelwise.data.check import CheckReport, Finding, check_dataset, check_splits, format_report, scan_labels
from pixelwise.data.registry import DATASETS, build_dataset, parse_data_source, resolve_root
from pixelwise.data.statistics import median_frequency_weights

__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "CheckReport",
    "DataError",
    "Finding",
    "SegmentationDataset",
    "build_dataset",
    "check_dataset",
    "check_splits",
    "format_report",
    "median_frequency_weights",
    "parse_data_source",
    "resolve_root",
    "scan_labels",
]
