"""What every data set shares: the item contract, file reading, label mapping and the errors bad data raises.

An item is ``(image, mask)``: a ``tv_tensors.Image`` (C, H, W), uint8 for 8-bit files and float32 in
[0, 1] for 16-bit ones (read at their true depth: ``read_pixels``), and a ``tv_tensors.Mask`` int64 (H, W)
whose labels are in [0, num_classes) or ``IGNORE_INDEX`` (each format's own "void" value is mapped to it).
With a ``transform`` the item is ``transform(image, mask)``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image as PILImage
from torch.utils.data import Dataset
from torchvision import tv_tensors

if TYPE_CHECKING:
    import tifffile

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
    every problem instead of stopping at the first). ``unmatched_masks`` lists the mask files a format found
    beside the images that no image pairs with (``check_dataset`` reports them).
    """

    label_table: np.ndarray | None = None
    unmatched_masks: Sequence[Path] = ()

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
        # As stored, EXIF orientation not applied: annotation tools draw masks on the stored grid (check-data
        # reports the images whose orientation says otherwise).
        pixels = to_channels(read_pixels(image_path, upright=False), self.in_channels)
        labels = self.load_labels(index)
        if labels.shape != pixels.shape[:2]:
            raise size_mismatch(mask_path, labels.shape, image_path, pixels.shape[:2])
        return pixels, labels


def size_mismatch(mask_path: Path, mask_shape: tuple[int, ...], image_path: Path,
                  image_shape: tuple[int, ...]) -> DataError:
    """The error for a mask whose (H, W) differs from its image's."""
    return DataError(mask_path, f"mask size {mask_shape[1]}x{mask_shape[0]} (WxH) differs from image "
                     f"{Path(image_path).name} size {image_shape[1]}x{image_shape[0]}", "size_mismatch")


@contextmanager
def reading(path: Path, role: str) -> Iterator[None]:
    """Turn any failure to read the ``role`` file ``path`` (missing, too large, damaged) into a DataError
    naming it."""
    if not path.is_file():
        raise DataError(path, f"{role} file is missing", f"missing_{role}")
    try:
        yield
    except PILImage.DecompressionBombError as error:  # a header claiming more pixels than PIL will decode
        raise DataError(path, f"{role} is too large to decode: {error}", "unreadable") from error
    except Exception as error:  # Pillow, pypng, tifffile and numpy raise many types for damaged files
        raise DataError(path, f"cannot read {role}: {error}", "unreadable") from error


def open_image(path: Path, role: str) -> PILImage.Image:
    """Open and fully decode an image file, turning any failure into a ``DataError`` naming it."""
    with reading(Path(path), role):
        image = PILImage.open(path)
        image.load()  # decode now, so a truncated file fails here and not deep inside a transform
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
    """(H, W), (H, W, 3) or (H, W, 4) -> (H, W, channels) of the same dtype: gray is repeated, RGB reduced to
    luma (rounded for integer images), a 4th channel (alpha) dropped for 1- and 3-channel models. Raises
    ValueError for channels the image lacks (a 4-channel model given RGB)."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[2] == 4 and channels in (1, 3):
        pixels = pixels[..., :3]  # alpha means nothing to an RGB or gray model
    if pixels.shape[2] == channels:
        return pixels
    if channels == 3 and pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    if channels == 1 and pixels.shape[2] == 3:
        luma = pixels.astype(np.float32) @ LUMA
        if np.issubdtype(pixels.dtype, np.integer):
            luma += 0.5
        return luma.astype(pixels.dtype)[..., None]
    hint = ("; give it an RGBA PNG, a 4-band TIFF, an (H, W, 4) array or a (4, H, W) tensor" if channels == 4
            else "")
    raise ValueError(f"the model takes {channels}-channel images but this one has {pixels.shape[2]} "
                     f"channel(s){hint}")


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


ORIENTATION_TAG = 0x0112  # EXIF Orientation, TIFF tag 274: how viewers turn the stored pixels for display
# EXIF orientation -> (flip the rows, flip the columns, then transpose): PIL.ImageOps.exif_transpose's table.
ORIENTATIONS = {1: (False, False, False), 2: (False, True, False), 3: (True, True, False),
                4: (True, False, False), 5: (False, False, True), 6: (True, False, True),
                7: (True, True, True), 8: (False, True, True)}
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # either byte order, classic and BigTIFF


def exif_orientation(image: PILImage.Image) -> int:
    """An opened image's EXIF orientation (1..8), 1 (as stored) when absent or invalid. TIFFs give 1: their
    orientation tag is part of decoding, which Pillow applies, as TIFF readers do (and ``first_page``)."""
    if image.format == "TIFF":
        return 1
    orientation = image.getexif().get(ORIENTATION_TAG, 1)
    return orientation if orientation in ORIENTATIONS else 1


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W) or (H, W, C) stored pixels of any dtype turned as viewers show them by an EXIF ``orientation``
    (1..8): the same shape for 1..4, (W, H) or (W, H, C) for 5..8."""
    flip_rows, flip_columns, transpose = ORIENTATIONS[orientation]
    if flip_rows:
        pixels = pixels[::-1]
    if flip_columns:
        pixels = pixels[:, ::-1]
    if transpose:
        pixels = pixels.swapaxes(0, 1)
    return np.ascontiguousarray(pixels)  # torch.from_numpy refuses the negative strides of the views above


def read_pixels(source: str | os.PathLike | bytes, role: str = "image", upright: bool = True) -> np.ndarray:
    """An image file's (or encoded bytes') pixels at their true bit depth: (H, W), (H, W, 3), or (H, W, 4) for
    RGBA and 4-band TIFFs; uint8 or uint16 (float32 in [0, 1] for floating-point TIFFs). Palette images
    become RGB. ``upright`` applies the EXIF orientation, as viewers do; False keeps the stored grid (TIFFs
    are turned by their orientation tag either way: TIFF readers, Pillow among them, apply it when decoding).

    Pillow reads 8-bit images and 16-bit grayscale (mode I;16) at full depth, but reduces 16-bit RGB to 8 bits;
    those are read by pypng (PNG) or tifffile (TIFF) instead, as are the TIFFs Pillow cannot open (float RGB,
    4-band gray). Raises DataError naming a file that cannot be read; bytes raise the readers' own errors.
    """
    if isinstance(source, bytes):
        return _decode(source, upright)
    with reading(Path(source), role):
        return _decode(Path(source), upright)


def _decode(source: Path | bytes, upright: bool) -> np.ndarray:
    """``read_pixels`` of a file or bytes, with the readers' own errors."""
    image = pillow_or_none(source)
    if image is None:
        return read_tiff(source)
    with image:
        image.load()
        return pixels_of(image, source, upright)


def pillow_or_none(source: Path | bytes) -> PILImage.Image | None:
    """The image opened lazily by Pillow (its header read, no pixels), or None for a TIFF that Pillow cannot
    open, which tifffile reads. Raises Pillow's error for anything else."""
    try:
        return PILImage.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except PILImage.UnidentifiedImageError:
        if leading_bytes(source, 4) in TIFF_SIGNATURES:
            return None
        raise


def image_header(source: Path | bytes) -> tuple[tuple[int, int], int]:
    """The (height, width) an image decodes to (``read_pixels(upright=False)``) and the EXIF orientation that
    turns it for display (``exif_orientation``), from the header alone: nothing is decoded."""
    image = pillow_or_none(source)
    if image is None:
        with tiff_file(source) as tiff:
            page = tiff.pages[0]
            size = (page.imagelength, page.imagewidth)
            return (size[::-1] if tiff_orientation(page) >= 5 else size), 1
    with image:
        return (image.height, image.width), exif_orientation(image)


def pixels_of(image: PILImage.Image, source: Path | bytes | None = None, upright: bool = True) -> np.ndarray:
    """The pixels of an opened image at their true depth (see ``read_pixels``), turned by its EXIF orientation
    unless ``upright`` is False; ``source`` is the file or bytes it came from, needed only for 16-bit RGB,
    which Pillow cannot give at full depth."""
    pixels = stored_pixels(image, source)
    return apply_orientation(pixels, exif_orientation(image)) if upright else pixels


def stored_pixels(image: PILImage.Image, source: Path | bytes | None) -> np.ndarray:
    """``pixels_of`` as decoded, without the EXIF orientation."""
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
    if image.mode == "RGBA":  # kept for 4-channel models; to_channels drops the alpha for the others
        return np.asarray(image)
    return np.asarray(image.convert("L" if image.mode in ("L", "1") else "RGB"))


def unit_range(pixels: np.ndarray, what: str) -> np.ndarray:
    """Floating-point pixels, which must already be in [0, 1]: clipping other ranges would hide the error."""
    if pixels.size and not (pixels.min() >= -1e-3 and pixels.max() <= 1 + 1e-3):  # also refuses NaN
        raise ValueError(f"{what} must hold values in [0, 1], got {pixels.min():g}..{pixels.max():g}: scale it "
                         "(8-bit images as uint8, 16-bit as uint16)")
    return np.clip(pixels, 0.0, 1.0)


def array_pixels(image: np.ndarray, what: str = "an image array") -> np.ndarray:
    """An (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array checked as pixels: one channel becomes (H, W); uint8
    and uint16 stay as they are, bool becomes float32 0/1, floats float32, which must lie in [0, 1]."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)) or 0 in image.shape:
        raise ValueError(f"{what} must be (H, W), (H, W, 3) or (H, W, 4) with H, W >= 1, got shape {image.shape}")
    if image.dtype in (np.uint8, np.uint16):
        return image
    if image.dtype == np.bool_:
        return image.astype(np.float32)
    if np.issubdtype(image.dtype, np.floating):
        return unit_range(image.astype(np.float32), what)
    raise ValueError(f"{what} must be uint8, uint16 or float in [0, 1], got dtype {image.dtype}")


def leading_bytes(source: Path | bytes, count: int) -> bytes:
    """The first ``count`` bytes of a file or of encoded bytes: format signatures and headers."""
    if isinstance(source, bytes):
        return source[:count]
    with open(source, "rb") as handle:
        return handle.read(count)


def sixteen_bits_per_channel(image: PILImage.Image, source: Path | bytes) -> bool:
    if image.format == "PNG":
        header = leading_bytes(source, 26)
        return len(header) == 26 and header[24] == 16  # IHDR bit depth
    if image.format == "TIFF":
        bits = image.tag_v2.get(258)  # BitsPerSample
        return bits is not None and max(bits if isinstance(bits, tuple) else (bits,)) == 16
    return False


def read_deep_color(format: str, source: Path | bytes) -> np.ndarray:
    """(H, W), (H, W, 3) or (H, W, 4) uint16 pixels of a 16-bit PNG (pypng) or TIFF (tifffile) that Pillow
    would cut to 8 bits: RGB, RGBA and gray with alpha (read as gray); the first page of a multi-page TIFF."""
    if format == "PNG":
        import png

        reader = png.Reader(bytes=source) if isinstance(source, bytes) else png.Reader(filename=str(source))
        width, height, rows, info = reader.asDirect()
        array = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, info["planes"])
    else:
        with tiff_file(source) as tiff:
            array = first_page(tiff)
    return color_planes(np.asarray(array, dtype=np.uint16))


def read_tiff(source: Path | bytes) -> np.ndarray:
    """A TIFF that Pillow cannot open (float RGB, 4-band gray ...), read by tifffile (``first_page``) and
    checked as arrays are (``array_pixels``): (H, W), (H, W, 3) or (H, W, 4)."""
    with tiff_file(source) as tiff:
        page = tiff.pages[0]
        count, limit = page.imagelength * page.imagewidth, PILImage.MAX_IMAGE_PIXELS
        if limit and count > 2 * limit:  # Pillow's own limit, so tifffile is no way around it
            raise PILImage.DecompressionBombError(f"TIFF of {count} pixels exceeds the limit of {2 * limit}")
        return array_pixels(color_planes(first_page(tiff)), "a TIFF image")


def tiff_file(source: Path | bytes) -> tifffile.TiffFile:
    """An open ``tifffile.TiffFile`` (a context manager) on a file or encoded bytes."""
    import tifffile

    return tifffile.TiffFile(io.BytesIO(source) if isinstance(source, bytes) else source)


def first_page(tiff: tifffile.TiffFile) -> np.ndarray:
    """The first page of an open TIFF as Pillow decodes TIFFs: channels last whatever the file's layout, turned
    by its orientation tag; (H, W) or (H, W, C)."""
    page = tiff.pages[0]
    array, axes = page.asarray(), page.axes
    if "S" in axes:  # the samples (channels) axis, first in planar files
        array = np.moveaxis(array, axes.index("S"), -1)
    array = array.reshape(array.shape[-3:] if array.ndim >= 3 else array.shape)
    return apply_orientation(array, tiff_orientation(page))


def tiff_orientation(page: tifffile.TiffPage) -> int:
    """A tifffile page's orientation tag: 1..8, 1 when absent or invalid."""
    tag = page.tags.get(ORIENTATION_TAG)
    orientation = 1 if tag is None else int(tag.value)
    return orientation if orientation in ORIENTATIONS else 1


def color_planes(array: np.ndarray) -> np.ndarray:
    """Decoded (H, W) or (H, W, C) planes as pixels: gray and gray + alpha (H, W), RGB and 4 channels as they
    are; more channels are refused."""
    if array.ndim == 3 and array.shape[2] in (1, 2):  # gray, or gray + alpha
        return array[..., 0]
    if array.ndim == 3 and array.shape[2] > 4:
        raise ValueError(f"image has {array.shape[2]} channels: pixelwise reads gray, RGB and 4-channel "
                         "(RGBA, 4-band) images")
    return array


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
