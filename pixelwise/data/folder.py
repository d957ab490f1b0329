"""Your own data: ``images/`` and ``masks/`` folders whose files are matched by stem (``a.jpg`` <-> ``a.png``).

Layout: ``root/<split>/{images,masks}``, or ``root/{images,masks}`` read as the split ``"all"``.
Masks are index PNGs (values 0..num_classes-1, ``ignore_value`` for void; palette PNGs give their indices),
or RGB images with a ``palette`` (list of [r, g, b], one per class; ``ignore_color`` for void).

Index masks stored another way are mapped on reading (``pixelwise check-data`` suggests which):

- ``label_map: {255: 1}``: file value -> label (or ``ignore``), e.g. binary masks saved as 0/255. An entry
  overrides the other rules for its value.
- ``reduce_zero_label: true``: MMSegmentation's rule for sets where 0 means "other" or "unlabelled": file
  value 0 becomes ignore (255) and every other value v the label v - 1 (255 stays ignore), so
  ``num_classes`` counts the classes without the 0.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pixelwise.data.base import (
    IGNORE_INDEX,
    IMAGE_SUFFIXES,
    DataError,
    FilePairDataset,
    Transform,
    files_by_stem,
    label_lookup,
    open_image,
    voc_palette,
)


class FolderDataset(FilePairDataset):
    def __init__(self, root: str | os.PathLike, split: str = "all", transform: Transform | None = None, *,
                 num_classes: int | None = None, palette: Sequence[Sequence[int]] | None = None,
                 class_names: Sequence[str] | None = None, ignore_value: int = IGNORE_INDEX,
                 ignore_color: Sequence[int] | None = None, in_channels: int = 3,
                 label_map: Mapping[int, int | str] | None = None, reduce_zero_label: bool = False,
                 verify_files: bool = True) -> None:
        if palette is not None and (label_map or reduce_zero_label):
            raise ValueError("folder label_map and reduce_zero_label apply to index masks; with a palette, list "
                             "the colours in label order (ignore_color for void)")
        if palette is not None:
            if num_classes is not None and num_classes != len(palette):
                raise ValueError(f"num_classes {num_classes} disagrees with the {len(palette)} palette colours")
            num_classes = len(palette)
            self.color_to_label = {tuple(int(v) for v in color): label for label, color in enumerate(palette)}
            if len(self.color_to_label) != len(palette):
                raise ValueError("palette colours must be distinct")
            if ignore_color is not None:
                self.color_to_label[tuple(int(v) for v in ignore_color)] = IGNORE_INDEX
        elif num_classes is None:
            raise ValueError("folder data set needs num_classes (index masks) or palette (RGB masks)")
        elif num_classes < 1:
            raise ValueError(f"folder num_classes must be >= 1, got {num_classes}")
        else:
            self.color_to_label = None
            self.label_table = index_mask_table(num_classes, ignore_value, label_map or {}, reduce_zero_label)
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        # What the user chose about their mask values: check-data suggests only what is still open.
        self.label_map = dict(label_map or {})
        self.reduce_zero_label = reduce_zero_label
        self.class_names = list(class_names) if class_names is not None else [f"class_{i}" for i in
                                                                              range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names given for {num_classes} classes")
        self.palette = [list(color) for color in palette] if palette is not None else voc_palette(num_classes)

        base = Path(root) / split
        if not (base / "images").is_dir():
            if split != "all" or not (Path(root) / "images").is_dir():
                raise DataError(base / "images", "folder not found (expected root/<split>/images and masks, "
                                "or root/images and masks for split 'all')", "empty_split")
            base = Path(root)
        images = files_by_stem(base / "images", IMAGE_SUFFIXES)
        masks = files_by_stem(base / "masks", IMAGE_SUFFIXES) if (base / "masks").is_dir() else {}
        files = [(path, masks.get(stem, base / "masks" / f"{stem}.png")) for stem, path in images.items()]
        super().__init__(files, base / "images", transform, verify_files)
        self.unmatched_masks = [path for stem, path in masks.items() if stem not in images]

    def read_raw_mask(self, path: Path) -> np.ndarray:
        if self.color_to_label is None:
            return super().read_raw_mask(path)
        with open_image(path, "mask") as mask:
            rgb = np.asarray(mask.convert("RGB")).astype(np.int64)
        # Pack each colour into one integer so np.unique finds the few distinct colours at once.
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        colors, inverse = np.unique(packed, return_inverse=True)
        labels = []
        for color in colors.tolist():
            rgb_color = (color >> 16, (color >> 8) & 255, color & 255)
            if rgb_color not in self.color_to_label:
                raise DataError(path, f"colour {list(rgb_color)} is not in the palette", "bad_labels")
            labels.append(self.color_to_label[rgb_color])
        return np.asarray(labels, dtype=np.int64)[inverse.reshape(packed.shape)]


def index_mask_table(num_classes: int, ignore_value: int, label_map: Mapping[int, int | str],
                     reduce_zero_label: bool) -> np.ndarray:
    """The file value -> label table of index masks: identity (or MMSegmentation's reduce_zero_label shift),
    ``ignore_value`` -> ignore, then the ``label_map`` entries, which win for their values."""
    if reduce_zero_label:
        mapping = {0: IGNORE_INDEX, **{value: value - 1 for value in range(1, num_classes + 1)}}
    else:
        mapping = {label: label for label in range(num_classes)}
    mapping[ignore_value] = IGNORE_INDEX
    for value, label in label_map.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
            raise ValueError(f"folder label_map: key {value!r} is not a mask value (an integer 0..65535)")
        if label == "ignore" or label == IGNORE_INDEX:
            mapping[value] = IGNORE_INDEX
        elif isinstance(label, int) and not isinstance(label, bool) and 0 <= label < num_classes:
            mapping[value] = label
        else:
            raise ValueError(f"folder label_map: {value}: {label!r} is not a label (0..{num_classes - 1}) or 'ignore'")
    return label_lookup(mapping, size=max(256, max(mapping) + 1))
