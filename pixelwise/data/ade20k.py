"""ADE20K scene parsing (ADEChallengeData2016), 150 classes.

Layout: ``root/images/{training,validation}/*.jpg`` and ``root/annotations/{training,validation}/*.png``.
Annotation 0 means "other / unlabelled": it becomes the ignore label and labels 1..150 shift down to 0..149.
"""

from __future__ import annotations

import os
from pathlib import Path

from pixelwise.data.base import IGNORE_INDEX, DataError, FilePairDataset, Transform, label_lookup, voc_palette

CLASS_NAMES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
]
SPLIT_FOLDERS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}


class ADE20K(FilePairDataset):
    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES
    palette = voc_palette(len(CLASS_NAMES) + 1)[1:]  # skip VOC's black, which reads as "unlabelled"
    label_table = label_lookup({0: IGNORE_INDEX, **{raw: raw - 1 for raw in range(1, len(CLASS_NAMES) + 1)}})

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Transform | None = None, *,
                 verify_files: bool = True) -> None:
        if split not in SPLIT_FOLDERS:
            raise ValueError(f"ade20k split must be one of {sorted(SPLIT_FOLDERS)}, got {split!r}")
        root = Path(root)
        if not (root / "images").is_dir() and (root / "ADEChallengeData2016").is_dir():
            root = root / "ADEChallengeData2016"
        image_dir = root / "images" / SPLIT_FOLDERS[split]
        if not image_dir.is_dir():
            raise DataError(image_dir, "ade20k image folder not found", "empty_split")
        mask_dir = root / "annotations" / SPLIT_FOLDERS[split]
        files = [(image, mask_dir / f"{image.stem}.png") for image in sorted(image_dir.glob("*.jpg"))]
        super().__init__(files, image_dir, transform, verify_files)
