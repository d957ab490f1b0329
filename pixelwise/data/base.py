"""What every data set shares: the item contract, file reading, label mapping and the errors bad data raises.

An item is ``(image, mask)``: a ``tv_tensors.Image`` uint8 (C, H, W) and a ``tv_tensors.Mask`` int64
(H, W) whose labels are in [0, num_classes) or ``IGNORE_INDEX`` (each format's own "void" value is mapped to
it). With a ``transform`` the item is ``transform(image, mask)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage
from torch.utils.data import Dataset
from torchvision import tv_tensors

IGNORE_INDEX = 255

Transform = Callable[[tv_tensors.Image, tv_tensors.Mask], object]


class DataError(ValueError):
    """A data set problem; the message names the file and what is wrong with it.

    ``kind`` is one of ``missing_image``, ``missing_mask``, ``unreadable``, ``size_mismatch``,
    ``bad_labels``, ``empty_split`` (``check_dataset`` counts problems by it).
    """

    def __init__(self, path: str | os.PathLike | None, problem: str, kind: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        self.kind = kind
        super().__init__(problem if path is None else f"{path}: {problem}")


class SegmentationDataset(Dataset):
    """Base of every loader: subclasses set the class attributes and implement ``__len__`` and ``load``."""

    num_classes: int
    class_names: list[str]
    palette: list[list[int]]
    ignore_index: int = IGNORE_INDEX
    in_channels: int = 3

    def __init__(self, transform: Transform | None = None) -> None:
        self.transform = transform

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        raise NotImplementedError

    def __getitem__(self, index: int):
        image, mask = self.load(index)
        return (image, mask) if self.transform is None else self.transform(image, mask)


def label_lookup(mapping: dict[int, int], size: int = 256) -> np.ndarray:
    """A (size,) int64 table from raw mask value to label; values not in ``mapping`` become -1 (invalid)."""
    table = np.full(size, -1, dtype=np.int64)
    for raw, label in mapping.items():
        table[raw] = label
    return table


class FilePairDataset(SegmentationDataset):
    """Items read from ``files``, a list of (image path, mask path) pairs.

    ``label_table`` maps raw mask values to labels (see ``label_lookup``); None keeps raw values. Either way
    the result must lie in [0, num_classes) or be 255, else the item raises ``DataError``.
    ``verify_files=False`` defers missing-mask errors to item access (``check_dataset`` uses it to collect
    every problem instead of stopping at the first).
    """

    label_table: np.ndarray | None = None

    def __init__(
        self,
        files: Sequence[tuple[Path, Path]],
        source: str | os.PathLike,
        transform: Transform | None = None,
        verify_files: bool = True,
    ) -> None:
        super().__init__(transform)
        self.files = [(Path(image), Path(mask)) for image, mask in files]
        if not self.files:
            raise DataError(source, "the split has no images", "empty_split")
        if verify_files:
            missing = [str(mask) for _, mask in self.files if not mask.is_file()]
            if missing:
                shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
                raise DataError(source, f"{len(missing)} mask file(s) missing: {shown}", "missing_mask")

    def __len__(self) -> int:
        return len(self.files)

    def read_raw_mask(self, path: Path) -> np.ndarray:
        """The mask file's values as an (H, W) integer array (palette PNGs give their indices)."""
        with open_image(path, "mask") as mask:
            if mask.mode not in ("L", "P", "I", "I;16"):
                raise DataError(path, f"expected a single-channel index mask, got PIL mode {mask.mode}",
                                "bad_labels")
            return np.asarray(mask)

    def map_labels(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Raw (H, W) values -> (H, W) int64 labels, validated."""
        raw = raw.astype(np.int64)
        if self.label_table is None:
            labels = raw
        else:
            inside = (raw >= 0) & (raw < len(self.label_table))
            labels = np.where(inside, self.label_table[np.clip(raw, 0, len(self.label_table) - 1)], -1)
        bad = (labels < 0) | ((labels >= self.num_classes) & (labels != self.ignore_index))
        if bad.any():
            values = np.unique(raw[bad])[:10].tolist()
            raise DataError(path, f"mask values {values} are not labels of this data set "
                            f"(expected classes 0..{self.num_classes - 1} or ignore)", "bad_labels")
        return labels

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        image_path, mask_path = self.files[index]
        image = read_image(image_path, self.in_channels)
        labels = self.map_labels(self.read_raw_mask(mask_path), mask_path)
        if labels.shape != tuple(image.shape[-2:]):
            raise DataError(mask_path, f"mask size {labels.shape[1]}x{labels.shape[0]} (WxH) differs from image "
                            f"{image_path.name} size {image.shape[2]}x{image.shape[1]}", "size_mismatch")
        return image, tv_tensors.Mask(torch.from_numpy(labels))


def open_image(path: Path, role: str) -> PILImage.Image:
    """Open and fully decode an image file, turning any failure into a ``DataError`` naming it."""
    if not Path(path).is_file():
        raise DataError(path, f"{role} file is missing", f"missing_{role}")
    try:
        image = PILImage.open(path)
        image.load()  # decode now, so a truncated file fails here and not deep inside a transform
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(path, f"cannot read {role}: {error}", "unreadable") from error
    return image


def read_image(path: Path, channels: int) -> tv_tensors.Image:
    """A (channels, H, W) uint8 image; ``channels`` is 3 (RGB) or 1 (grayscale)."""
    with open_image(path, "image") as image:
        array = np.asarray(image.convert("RGB" if channels == 3 else "L"))
    tensor = torch.from_numpy(array.copy())
    return tv_tensors.Image(tensor.permute(2, 0, 1) if tensor.ndim == 3 else tensor.unsqueeze(0))


def voc_palette(num_colors: int) -> list[list[int]]:
    """The PASCAL VOC colour map: index bits spread over the high bits of R, G and B, so neighbours differ."""
    palette = []
    for index in range(num_colors):
        red = green = blue = 0
        value = index
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        palette.append([red, green, blue])
    return palette


def files_by_stem(directory: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """``{stem: path}`` for the files in ``directory`` whose suffix (lower-cased) is in ``suffixes``."""
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            if path.stem in found:  # a.jpg beside a.png: which one the mask belongs to is a guess
                raise ValueError(f"{directory}: two files share the stem {path.stem!r}: "
                                 f"{found[path.stem].name} and {path.name}")
            found[path.stem] = path
    return found


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
