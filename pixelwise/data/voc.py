"""PASCAL VOC 2012 (``voc``) and the SBD extra masks (``voc_aug``), 21 classes.

VOC masks are palette PNGs whose indices are the labels; 255 marks object borders and "difficult"
pixels, already the ignore label. SBD stores each mask in a MATLAB file as ``GTcls.Segmentation``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pixelwise.data.base import IGNORE_INDEX, DataError, FilePairDataset, Transform, label_lookup, voc_palette

CLASS_NAMES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor"]


def read_split_list(list_file: Path) -> list[str]:
    """The image ids listed one per line in ``list_file``; a missing list means an empty split."""
    if not list_file.is_file():
        raise DataError(list_file, "split list not found", "empty_split")
    return [line.strip() for line in list_file.read_text().splitlines() if line.strip()]


class VOCSegmentation(FilePairDataset):
    """``root`` is the VOC2012 folder (holding JPEGImages/), or a folder above it (VOCdevkit/VOC2012)."""

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES
    palette = voc_palette(len(CLASS_NAMES))
    label_table = label_lookup({**{label: label for label in range(len(CLASS_NAMES))},
                                IGNORE_INDEX: IGNORE_INDEX})

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Transform | None = None, *,
                 verify_files: bool = True) -> None:
        root = Path(root)
        for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
            if (candidate / "JPEGImages").is_dir():
                root = candidate
                break
        ids = read_split_list(root / "ImageSets" / "Segmentation" / f"{split}.txt")
        files = [(root / "JPEGImages" / f"{name}.jpg", root / "SegmentationClass" / f"{name}.png")
                 for name in ids]
        super().__init__(files, root / "ImageSets" / "Segmentation" / f"{split}.txt", transform, verify_files)


class SBDSegmentation(VOCSegmentation):
    """SBD (Hariharan et al. 2011): ``root/dataset/{img/*.jpg, cls/*.mat, train.txt, val.txt}``.

    ``root`` may also be the ``dataset`` folder itself. Reading the .mat files needs scipy.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Transform | None = None, *,
                 verify_files: bool = True) -> None:
        root = Path(root)
        if not (root / "cls").is_dir() and (root / "dataset").is_dir():
            root = root / "dataset"
        ids = read_split_list(root / f"{split}.txt")
        files = [(root / "img" / f"{name}.jpg", root / "cls" / f"{name}.mat") for name in ids]
        FilePairDataset.__init__(self, files, root / f"{split}.txt", transform, verify_files)

    def read_raw_mask(self, path: Path) -> np.ndarray:
        try:
            from scipy.io import loadmat
        except ImportError as error:  # scipy is needed by this loader only
            raise ImportError("the voc_aug (SBD) loader reads .mat files with scipy: pip install scipy") from error
        if not path.is_file():
            raise DataError(path, "mask file is missing", "missing_mask")
        try:
            segmentation = loadmat(path, squeeze_me=True, struct_as_record=False)["GTcls"].Segmentation
        except Exception as error:  # scipy raises MatReadError, ValueError, ... and a missing field KeyError
            raise DataError(path, f"cannot read GTcls.Segmentation: {error!r}", "unreadable") from error
        return np.asarray(segmentation)
