"""Joint image + mask transforms on torchvision.transforms.v2.

v2 dispatches on tv_tensors: an ``Image`` is resampled bilinearly, a ``Mask`` always with nearest neighbour
(a blended label is meaningless), so one random draw moves both the same way. Padding and rotated-in
corners get 0 in the image and the ignore label in the mask, so the loss never learns from made-up pixels.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from pixelwise.data.base import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# Per-image intensity normalisation before the mean/std step (``Normalization.intensity``).
INTENSITY_MODES = ("none", "minmax", "percentile")
PERCENTILES = (0.01, 0.99)  # "percentile" maps the 1st..99th percentile of each image to 0..1


@dataclass(frozen=True)
class Normalization:
    """What a model expects its input to look like: per-image intensity stretch, then ``(x - mean) / std``.

    Pixels are first taken to [0, 1] by their bit depth (uint8 / 255; 16-bit files arrive as float). Then
    ``intensity`` "minmax" maps each image's darkest..brightest value to 0..1 and "percentile" its 1st..99th
    percentile, clipped (microscopes and 12-bit sensors rarely use the whole 16-bit range); "none" keeps the
    file's own scale. Last, per channel, ``(x - mean) / std``.

    The one place that normalises, undoes it (the CRF compares colours in 0..255), and serves grayscale
    images with three-channel statistics: ``for_channels(1)`` averages them, so one set of statistics
    fits RGB and 1-channel data alike.
    """

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    intensity: str = "none"

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            values = getattr(self, name)
            # A string is a sequence too: "0.5" would be read as the characters "0", ".", "5".
            if isinstance(values, str | bytes) or not all(
                    isinstance(value, numbers.Real) and not isinstance(value, bool) for value in values):
                raise ValueError(f"normalization.{name} must be a list of numbers, one per channel, got {values!r}")
            object.__setattr__(self, name, tuple(float(value) for value in values))
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"normalisation mean {self.mean} and std {self.std} must have the same, non-zero length")
        if not all(s > 0 for s in self.std):
            raise ValueError(f"normalisation std must be positive, got {self.std}")
        if self.intensity not in INTENSITY_MODES:
            raise ValueError(f"intensity must be one of {', '.join(INTENSITY_MODES)}, got {self.intensity!r}")

    def for_channels(self, channels: int) -> Normalization:
        """These statistics for a ``channels``-channel image (grey: the channel averages)."""
        if len(self.mean) == channels:
            return self
        if channels == 1:
            return Normalization((sum(self.mean) / len(self.mean),), (sum(self.std) / len(self.std),), self.intensity)
        raise ValueError(f"normalisation has {len(self.mean)} channels but the image has {channels}")

    def _view(self, values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, 1, 1)

    def stretch_(self, images: torch.Tensor) -> torch.Tensor:
        """Float (..., C, H, W) in [0, 1], each image stretched in place by ``intensity``."""
        if self.intensity == "none":
            return images
        flat = images.flatten(-3)
        if self.intensity == "minmax":
            low, high = flat.amin(-1), flat.amax(-1)
        else:  # kthvalue, not quantile: quantile refuses tensors over 16M values
            count = flat.shape[-1]
            low, high = (flat.kthvalue(max(1, round(q * count)), dim=-1).values for q in PERCENTILES)
        low, high = low[..., None, None, None], high[..., None, None, None]
        return images.sub_(low).div_((high - low).clamp_min(1e-6)).clamp_(0.0, 1.0)

    def normalize(self, images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8, uint16, or float in [0, 1], (..., C, H, W) -> what the model takes: stretched, then
        (x - mean) / std."""
        norm = self.for_channels(images.shape[-3])
        out = images.to(dtype)  # a copy: the in-place steps below never touch the caller's tensor
        if out.data_ptr() == images.data_ptr():
            out = out.clone()
        if images.dtype == torch.uint8:
            out.div_(255.0)
        elif images.dtype == torch.uint16:
            out.div_(65535.0)
        norm.stretch_(out)
        return out.sub_(self._view(norm.mean, out)).div_(self._view(norm.std, out))

    def to_uint8(self, normalized: torch.Tensor) -> torch.Tensor:
        """Normalised float (..., C, H, W) -> the (stretched) uint8 pixels it came from, rounded and clipped."""
        norm = self.for_channels(normalized.shape[-3])
        pixels = normalized * self._view(norm.std, normalized) + self._view(norm.mean, normalized)
        return pixels.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)


# ElasticTransform (alpha, sigma) in pixels used when ``elastic=True``: smooth, cell-sized deformations
# in the spirit of the U-Net paper's augmentation for the ISBI 2012 membranes.
DEFAULT_ELASTIC = (50.0, 5.0)


class RandomScale(v2.Transform):
    """Resize image and mask by one factor drawn uniformly from ``scale_range`` (the aspect ratio is kept)."""

    def __init__(self, scale_range: tuple[float, float]) -> None:
        super().__init__()
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (float(low), float(high))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        # torch's generator, like every v2 transform, so torch.manual_seed makes a run repeatable.
        scale = torch.empty(()).uniform_(*self.scale_range).item()
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        # resize dispatches on the tv_tensor type: bilinear + antialias for images, nearest for masks.
        return self._call_kernel(v2.functional.resize, inpt, size=params["size"], antialias=True)


class GridElastic(v2.ElasticTransform):
    """The U-Net paper's elastic deformation: random displacements on a coarse grid, smooth everywhere else.

    Each of ``points`` x ``points`` control points spread over the image moves by a vector drawn from a
    normal distribution with ``std`` pixels; bicubic interpolation carries the displacement to every pixel
    (the paper: a 3 x 3 grid, 10 pixels). Unlike torchvision's ``ElasticTransform``, whose blurred per-pixel
    noise bends edges on the scale of its ``sigma``, this moves whole cells and keeps membranes smooth.
    """

    def __init__(self, points: int = 3, std: float = 10.0, fill: Any = 0) -> None:
        super().__init__(fill=fill)
        if points < 2 or std < 0:
            raise ValueError(f"grid elastic needs points >= 2 and std >= 0, got {points} and {std}")
        self.points, self.std = int(points), float(std)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        coarse = torch.randn(1, 2, self.points, self.points) * self.std  # (dx, dy) in pixels
        field = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
        # F.elastic takes displacements in grid_sample's [-1, 1] coordinates, (1, H, W, 2).
        to_grid = torch.tensor([2.0 / width, 2.0 / height]).view(1, 2, 1, 1)
        return {"displacement": (field * to_grid).permute(0, 2, 3, 1)}


class RandomQuarterTurn(v2.Transform):
    """Rotate image and mask by 0, 90, 180 or 270 degrees, each with probability 1/4.

    A quarter turn moves pixels without resampling, so unlike ``RandomRotation`` it blends nothing and fills
    no corners; with both flips it gives all eight symmetries of the pixel grid, the lossless augmentation
    for images without a preferred orientation (electron microscopy, aerial views). The canvas turns with
    the image (``expand``), so put it before the crop when batches need one shape.
    """

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"angle": 90 * int(torch.randint(4, ()).item())}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        # torchvision turns multiples of 90 degrees with torch.rot90: an exact permutation of the pixels.
        return self._call_kernel(v2.functional.rotate, inpt, angle=params["angle"], expand=True)


class JointTransform:
    """``transform(image, mask) -> (image, mask)``: (C, H, W) float32 normalised, (H, W) int64.

    Accepts tv_tensors or plain tensors (image (C, H, W) uint8, mask (H, W) integer). Grayscale images
    given three-channel statistics are normalised with their channel average, so one transform serves RGB
    and 1-channel data sets alike.
    """

    def __init__(self, geometry: Sequence[v2.Transform], mean: Sequence[float], std: Sequence[float],
                 intensity: str = "none") -> None:
        steps = list(geometry) + [
            v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True)
        ]
        self.pipeline = v2.Compose(steps)
        self.normalization = Normalization(tuple(mean), tuple(std), intensity)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = image if isinstance(image, tv_tensors.Image) else tv_tensors.Image(image)
        mask = mask if isinstance(mask, tv_tensors.Mask) else tv_tensors.Mask(torch.as_tensor(mask))
        image, mask = self.pipeline(image, mask)  # float32 in [0, 1]
        image = self.normalization.normalize(image.as_subclass(torch.Tensor))
        return image, mask.as_subclass(torch.Tensor)

    def __repr__(self) -> str:
        return f"JointTransform({self.pipeline}, {self.normalization})"


def build_transforms(
    train: bool,
    *,
    crop_size: int | tuple[int, int] | None = None,
    scale_range: tuple[float, float] | None = (0.5, 2.0),
    hflip: bool = True,
    vflip: bool = False,
    quarter_turns: bool = False,
    rotation: float = 0.0,
    elastic: bool | tuple[float, float] | None = None,
    elastic_grid: tuple[int, float] | None = None,
    color_jitter: float | tuple[float, float, float, float] | None = None,
    blur: float | None = None,
    noise: float | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    intensity: str = "none",
    ignore_index: int = IGNORE_INDEX,
) -> JointTransform:
    """The standard segmentation augmentation, or (``train=False``) only dtype conversion + normalisation.

    Train order: random scale (``scale_range``, None to skip) -> random quarter turn (``quarter_turns``) ->
    random crop to ``crop_size`` padding what is missing -> horizontal and vertical flips (each with
    probability 1/2) -> rotation by up to ``rotation`` degrees -> the U-Net paper's coarse-grid elastic
    deformation of the crop (``elastic_grid`` = (points, std px)) -> torchvision's elastic deformation
    (``True`` for the default (alpha, sigma) = (50, 5) px, or an (alpha, sigma) pair) -> colour jitter
    (brightness/contrast/saturation strength, or a (brightness, contrast, saturation, hue) tuple) -> Gaussian
    blur with a sigma drawn from [0.1, ``blur``] pixels, on half of the images -> additive Gaussian noise
    with standard deviation ``noise`` (in units of the full intensity range, 1 = black to white). Blur and
    noise stand in for the focus and the dose that vary from one microscope image to the next.
    """
    if not train:
        return JointTransform([], mean, std, intensity)
    fill = {tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}
    geometry: list[v2.Transform] = []
    if scale_range is not None and tuple(scale_range) != (1.0, 1.0):
        geometry.append(RandomScale(scale_range))
    if quarter_turns:  # before the crop, so that non-square crops keep their shape
        geometry.append(RandomQuarterTurn())
    if crop_size is not None:
        geometry.append(v2.RandomCrop(crop_size, pad_if_needed=True, fill=fill))
    if hflip:
        geometry.append(v2.RandomHorizontalFlip())
    if vflip:
        geometry.append(v2.RandomVerticalFlip())
    if rotation:
        geometry.append(v2.RandomRotation(rotation, interpolation=v2.InterpolationMode.BILINEAR, fill=fill))
    if elastic_grid is not None:  # after the crop: warping only the pixels we keep is several times cheaper
        geometry.append(GridElastic(*elastic_grid, fill=fill))
    if elastic:
        alpha, sigma = DEFAULT_ELASTIC if elastic is True else elastic
        geometry.append(v2.ElasticTransform(alpha=alpha, sigma=sigma, fill=fill))
    if color_jitter:
        if isinstance(color_jitter, int | float):
            geometry.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
        else:
            brightness, contrast, saturation, hue = color_jitter
            geometry.append(v2.ColorJitter(brightness, contrast, saturation, hue))
    if blur:
        kernel = 2 * math.ceil(3 * blur) + 1  # +-3 sigma of the widest blur
        geometry.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, blur))], p=0.5))
    if noise:
        geometry.append(v2.GaussianNoise(sigma=noise))  # on uint8 images sigma is in the same 0-1 units, clipped
    return JointTransform(geometry, mean, std, intensity)
