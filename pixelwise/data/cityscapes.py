"""Cityscapes fine annotations mapped to the 19 evaluation classes (trainIds); every other label is ignored.

Layout: ``root/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and
``root/gtFine/<split>/<city>/*_gtFine_labelIds.png``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pixelwise.data.base import IGNORE_INDEX, DataError, FilePairDataset, Transform

# (name, labelId, colour) of the 19 classes in trainId order (Cordts et al., 2016).
CLASSES = [
    ("road", 7, (128, 64, 128)), ("sidewalk", 8, (244, 35, 232)), ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)), ("fence", 13, (190, 153, 153)), ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)), ("traffic sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)), ("terrain", 22, (152, 251, 152)), ("sky", 23, (70, 130, 180)),
    ("person", 24, (220, 20, 60)), ("rider", 25, (255, 0, 0)), ("car", 26, (0, 0, 142)),
    ("truck", 27, (0, 0, 70)), ("bus", 28, (0, 60, 100)), ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)), ("bicycle", 33, (119, 11, 32)),
]


def _label_id_to_train_id() -> np.ndarray:
    table = np.full(256, IGNORE_INDEX, dtype=np.int64)  # every labelId outside the 19 classes is void
    for train_id, (_, label_id, _) in enumerate(CLASSES):
        table[label_id] = train_id
    return table


class Cityscapes(FilePairDataset):
    num_classes = len(CLASSES)
    class_names = [name for name, _, _ in CLASSES]
    palette = [list(color) for _, _, color in CLASSES]
    label_table = _label_id_to_train_id()

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Transform | None = None, *,
                 verify_files: bool = True) -> None:
        image_root, label_root = Path(root) / "leftImg8bit" / split, Path(root) / "gtFine" / split
        if not image_root.is_dir():
            raise DataError(image_root, "cityscapes image folder not found", "empty_split")
        files = []
        for image in sorted(image_root.glob("*/*_leftImg8bit.png")):
            stem = image.name.removesuffix("_leftImg8bit.png")
            files.append((image, label_root / image.parent.name / f"{stem}_gtFine_labelIds.png"))
        super().__init__(files, image_root, transform, verify_files)
