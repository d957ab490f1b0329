"""ISBI 2012 EM membranes (the U-Net paper's first data set): ``root/images/N.png``, ``root/labels/N.png``.

Grayscale slices; label 255 is cell interior (class 1), 0 is membrane (class 0). Slices of one volume are
correlated, so the train and val splits are disjoint lists of slice numbers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pixelwise.data.base import DataError, FilePairDataset, Transform, label_lookup

DEFAULT_TRAIN_SLICES = tuple(range(20))
DEFAULT_VAL_SLICES = (20, 21, 22, 23)


class ISBI2012(FilePairDataset):
    num_classes = 2
    class_names = ["membrane", "cell"]
    palette = [[0, 0, 0], [255, 255, 255]]
    in_channels = 1
    label_table = label_lookup({0: 0, 255: 1})

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Transform | None = None, *,
                 train_slices: Sequence[int] = DEFAULT_TRAIN_SLICES,
                 val_slices: Sequence[int] = DEFAULT_VAL_SLICES, verify_files: bool = True) -> None:
        image_dir, label_dir = Path(root) / "images", Path(root) / "labels"
        if not image_dir.is_dir():
            raise DataError(image_dir, "isbi2012 image folder not found (expected root/images/N.png)",
                            "empty_split")
        if split == "all":
            slices = sorted(int(path.stem) for path in image_dir.glob("*.png") if path.stem.isdigit())
        elif split in ("train", "val"):
            slices = list(train_slices if split == "train" else val_slices)
            overlap = set(train_slices) & set(val_slices)
            if overlap:
                raise ValueError(f"isbi2012 train and val slices overlap: {sorted(overlap)}")
        else:
            raise ValueError(f"isbi2012 split must be 'train', 'val' or 'all', got {split!r}")
        files = [(image_dir / f"{index}.png", label_dir / f"{index}.png") for index in slices]
        super().__init__(files, image_dir, transform, verify_files)
