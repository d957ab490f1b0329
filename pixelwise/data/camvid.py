"""CamVid in the SegNet layout: ``root/{train,val,test}/*.png`` with label maps in ``root/<split>annot/``.

11 classes; label 11 is "void" and becomes the ignore label.
"""

from __future__ import annotations

import os
from pathlib import Path

from pixelwise.data.base import IGNORE_INDEX, DataError, FilePairDataset, Transform, label_lookup

CLASS_NAMES = ["sky", "building", "pole", "road", "pavement", "tree", "sign/symbol", "fence", "car",
               "pedestrian", "bicyclist"]
PALETTE = [[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222], [128, 128, 0],
           [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192]]
# SegNet's median-frequency class weights for the train split (Badrinarayanan et al., 2017).
SEGNET_CLASS_WEIGHTS = [0.2595, 0.1826, 4.5640, 0.1417, 0.9051, 0.3826, 9.6446, 1.8418, 0.6823, 6.2478, 7.3614]
VOID_LABEL = 11
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class CamVid(FilePairDataset):
    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES
    palette = PALETTE
    label_table = label_lookup({**{label: label for label in range(len(CLASS_NAMES))}, VOID_LABEL: IGNORE_INDEX})

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Transform | None = None, *,
                 verify_files: bool = True) -> None:
        if split not in SPLITS:
            raise ValueError(f"camvid split must be one of {SPLITS}, got {split!r}")
        image_dir, mask_dir = Path(root) / split, Path(root) / f"{split}annot"
        if not image_dir.is_dir():
            raise DataError(image_dir, "camvid image folder not found (expected the SegNet layout "
                            "root/{train,val,test} and root/{split}annot)", "empty_split")
        # Images may be PNG (the SegNet release) or re-encoded JPEG; label maps must stay lossless PNG.
        images = sorted(path for path in image_dir.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
        super().__init__([(image, mask_dir / f"{image.stem}.png") for image in images], image_dir, transform,
                         verify_files)
