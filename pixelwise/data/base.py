"""What every data set shares: the item contract, file reading, label mapping and the errors bad data raises.

An item is ``(image, mask)``: a ``tv_tensors.Image`` (C, H, W), uint8 for 8-bit files and float32 in
[0, 1] for 16-bit ones (read at their true depth: ``read_pixels``), and a ``tv_tensors.Mask`` int64 (H, W)
whose labels are in [0, num_classes) or ``IGNORE_INDEX`` (each format's own "void" value is mapped to it).
With a ``transform`` the item is ``transform(image, mask)``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage
from torch.utils.data import Dataset
from torchvision import tv_tensors

IGNORE_INDEX = 255
# PIL modes that hold one label per pixel: gray, palette (its indices, not its colours), 1-bit and 16/32-bit.
INDEX_MASK_MODES = ("L", "P", "1", "I", "I;16")

Transform = Callable[[tv_tensors.Image, tv_tensors.Mask], object]


class DataError(ValueError):
    """A data set problem; the message names the file and what is wrong with it.

    ``kind`` is one of ``missing_image``, ``missing_mask``, ``unreadable``, ``size_mismatch``,
    ``bad_labels``, ``color_mask`` (a colour image where an index mask was expected), ``empty_split``
    (``check_dataset`` counts problems by it).
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

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(pixels (H, W, C), labels (H, W)) as numpy arrays; file data sets give the file's own bit depth."""
        image, mask = self.load(index)
        return image.permute(1, 2, 0).numpy(), mask.numpy()

    def load_labels(self, index: int) -> np.ndarray:
        """The item's (H, W) int64 labels; file data sets read the mask alone (label scans skip the images)."""
        return self.load_arrays(index)[1]

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
            if mask.mode not in INDEX_MASK_MODES:
                raise DataError(path, f"expected a single-channel index mask, got PIL mode {mask.mode}",
                                "color_mask")
            return np.asarray(mask)

    def labels_or_invalid(self, raw: np.ndarray) -> np.ndarray:
        """Raw (H, W) values -> (H, W) int64 labels, -1 where a value is no label of this data set."""
        raw = raw.astype(np.int64)
        if self.label_table is None:
            labels = raw
        else:
            inside = (raw >= 0) & (raw < len(self.label_table))
            labels = np.where(inside, self.label_table[np.clip(raw, 0, len(self.label_table) - 1)], -1)
        return np.where((labels < 0) | ((labels >= self.num_classes) & (labels != self.ignore_index)), -1, labels)

    def map_labels(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Raw (H, W) values -> (H, W) int64 labels, validated."""
        labels = self.labels_or_invalid(raw)
        bad = labels < 0
        if bad.any():
            values = np.unique(raw[bad])[:10].tolist()
            raise DataError(path, f"mask values {values} are not labels of this data set "
                            f"(expected classes 0..{self.num_classes - 1} or ignore)", "bad_labels")
        return labels

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        pixels, labels = self.load_arrays(index)
        return image_tensor(pixels), tv_tensors.Mask(torch.from_numpy(labels))

    def load_labels(self, index: int) -> np.ndarray:
        mask_path = self.files[index][1]
        return self.map_labels(self.read_raw_mask(mask_path), mask_path)

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(pixels (H, W, in_channels) at the file's bit depth, labels (H, W) int64), checked."""
        image_path, mask_path = self.files[index]
        pixels = to_channels(read_pixels(image_path), self.in_channels)
        labels = self.load_labels(index)
        if labels.shape != pixels.shape[:2]:
            raise size_mismatch(mask_path, labels.shape, image_path, pixels.shape[:2])
        return pixels, labels


def size_mismatch(mask_path: Path, mask_shape: tuple[int, ...], image_path: Path,
                  image_shape: tuple[int, ...]) -> DataError:
    """The error for a mask whose (H, W) differs from its image's."""
    return DataError(mask_path, f"mask size {mask_shape[1]}x{mask_shape[0]} (WxH) differs from image "
                     f"{Path(image_path).name} size {image_shape[1]}x{image_shape[0]}", "size_mismatch")


def open_image(path: Path, role: str) -> PILImage.Image:
    """Open and fully decode an image file, turning any failure into a ``DataError`` naming it."""
    if not Path(path).is_file():
        raise DataError(path, f"{role} file is missing", f"missing_{role}")
    try:
        image = PILImage.open(path)
        image.load()  # decode now, so a truncated file fails here and not deep inside a transform
    except PILImage.DecompressionBombError as error:  # a header claiming more pixels than PIL will decode
        raise DataError(path, f"{role} is too large to decode: {error}", "unreadable") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(path, f"cannot read {role}: {error}", "unreadable") from error
    return image


def image_tensor(pixels: np.ndarray) -> tv_tensors.Image:
    """(H, W, C) pixels -> a (C, H, W) Image: uint8 stays uint8 (the fast path of every transform), deeper
    images become float32 in [0, 1] by their true depth."""
    array = pixels if pixels.dtype == np.uint8 else to_unit_float(pixels)
    if not array.flags.writeable:  # PIL's arrays are read-only views; torch wants memory it may write
        array = array.copy()
    return tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1))


# ITU-R 601 luma weights, the ones PIL's convert("L") uses, so a gray model sees what PIL would give it.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, 3) or (H, W) -> (H, W, channels) of the same dtype: gray is repeated, RGB reduced to luma
    (rounded for integer images)."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[2] == channels:
        return pixels
    if channels == 3:
        return np.repeat(pixels, 3, axis=2)
    if channels == 1:
        luma = pixels.astype(np.float32) @ LUMA
        if np.issubdtype(pixels.dtype, np.integer):
            luma += 0.5
        return luma.astype(pixels.dtype)[..., None]
    raise ValueError(f"cannot turn a {pixels.shape[2]}-channel image into {channels} channels")


def to_unit_float(pixels: np.ndarray) -> np.ndarray:
    """Pixels as float32 in [0, 1] by their bit depth: uint8 / 255, uint16 / 65535, floats clipped."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / 255.0
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) / 65535.0
    return np.clip(pixels.astype(np.float32), 0.0, 1.0)


def bit_depth(pixels: np.ndarray) -> int:
    """Bits per channel of an array ``read_pixels`` returns (32 for floats)."""
    return {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(pixels.dtype, 32)


def read_pixels(source: str | os.PathLike | bytes, role: str = "image") -> np.ndarray:
    """An image file's (or encoded bytes') pixels at their true bit depth: (H, W) or (H, W, 3), uint8 or
    uint16 (float32 for floating-point TIFFs). Alpha is dropped, palette images become RGB.

    Pillow reads 8-bit images and 16-bit grayscale (mode I;16) at full depth, but reduces 16-bit RGB to 8 bits;
    those are read by pypng (PNG) or tifffile (TIFF) instead. Raises DataError naming a file that cannot be read.
    """
    if isinstance(source, bytes):
        with PILImage.open(io.BytesIO(source)) as image:
            image.load()
            return pixels_of(image, source)
    with open_image(Path(source), role) as image:
        try:
            return pixels_of(image, Path(source))
        except Exception as error:  # pypng, tifffile and numpy raise many types for damaged 16-bit files
            raise DataError(source, f"cannot read {role}: {error}", "unreadable") from error


def pixels_of(image: PILImage.Image, source: Path | bytes | None = None) -> np.ndarray:
    """The pixels of an opened image at their true depth (see ``read_pixels``); ``source`` is the file or
    bytes it came from, needed only for 16-bit RGB, which Pillow cannot give at full depth."""
    if image.mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)
    if image.mode == "I":  # integers: what some 16-bit (and signed) files decode to
        array = np.asarray(image)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(f"integer image with values {array.min()}..{array.max()}: pixelwise reads unsigned "
                             "8- and 16-bit images (0..65535)")
        return array.astype(np.uint16)
    if image.mode == "F":
        return unit_range(np.asarray(image, dtype=np.float32), "a floating-point image")
    if source is not None and image.mode in ("RGB", "RGBA") and sixteen_bits_per_channel(image, source):
        return read_deep_color(image.format, source)
    return np.asarray(image.convert("L" if image.mode in ("L", "1") else "RGB"))


def unit_range(pixels: np.ndarray, what: str) -> np.ndarray:
    """Floating-point pixels, which must already be in [0, 1]: clipping other ranges would hide the error."""
    if pixels.size and not (pixels.min() >= -1e-3 and pixels.max() <= 1 + 1e-3):  # also refuses NaN
        raise ValueError(f"{what} must hold values in [0, 1], got {pixels.min():g}..{pixels.max():g}: scale it "
                         "(8-bit images as uint8, 16-bit as uint16)")
    return np.clip(pixels, 0.0, 1.0)


def sixteen_bits_per_channel(image: PILImage.Image, source: Path | bytes) -> bool:
    if image.format == "PNG":
        if isinstance(source, bytes):
            header = source[:26]
        else:
            with open(source, "rb") as handle:
                header = handle.read(26)
        return len(header) == 26 and header[24] == 16  # IHDR bit depth
    if image.format == "TIFF":
        bits = image.tag_v2.get(258)  # BitsPerSample
        return bits is not None and max(bits if isinstance(bits, tuple) else (bits,)) == 16
    return False


def read_deep_color(format: str, source: Path | bytes) -> np.ndarray:
    """(H, W, 3) or (H, W) uint16 pixels of a 16-bit PNG (pypng) or TIFF (tifffile) that Pillow would cut to
    8 bits: RGB, RGBA and gray with alpha; the first page of a multi-page TIFF, channels last whatever the
    file's layout."""
    if format == "PNG":
        import png

        reader = png.Reader(bytes=source) if isinstance(source, bytes) else png.Reader(filename=str(source))
        width, height, rows, info = reader.asDirect()
        array = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, info["planes"])
    else:
        import tifffile

        with tifffile.TiffFile(io.BytesIO(source) if isinstance(source, bytes) else source) as tiff:
            page = tiff.pages[0]
            array, axes = page.asarray(), page.axes
        if "S" in axes:  # the samples (channels) axis, first in planar files
            array = np.moveaxis(array, axes.index("S"), -1)
        array = array.reshape(array.shape[-3:] if array.ndim >= 3 else array.shape)
    array = np.asarray(array, dtype=np.uint16)
    if array.ndim == 3 and array.shape[2] in (1, 2):  # gray, or gray + alpha
        return array[..., 0]
    return array[..., :3]


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
