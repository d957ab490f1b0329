"""Training batches from decoded images kept in memory, augmented a whole batch at a time on the device.

A GPU trains CamVid's DeepLabv3+ faster than a dozen loader processes can decode PNGs and resize, crop
and flip them one image at a time. For data sets that fit in memory (CamVid's 367 training images are
190 MB as uint8, ISBI's 30 slices 8 MB) every image is decoded once and kept, uint8, on the training
device; each batch is then cut out of it by one ``grid_sample``: every output pixel looks up where the
random scale, crop and flips of its sample put it in the source image.

The geometry is that of ``build_transforms``: scale by a factor drawn from ``scale_range``, crop to
``crop_size`` (padding with black and the ignore label where the scaled image is smaller), then flip.
One difference: downscaling is plain bilinear, without the antialiasing filter the per-image path uses.
The sample order and each sample's draws come from ``pixelwise.train.sampling``, so a resumed run sees the
same batches. Other augmentations (rotation, elastic, colour, blur, noise) stay on the per-image path.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from pixelwise.data.base import SegmentationDataset
from pixelwise.data.transforms import Normalization

# The DataConfig fields the in-memory path honours; the others must keep their no-augmentation values.
UNSUPPORTED_AUGMENTATIONS = {"quarter_turns": False, "rotation": 0.0, "elastic": None, "elastic_grid": None,
                             "color_jitter": None, "blur": None, "noise": None}


def unsupported_augmentations(data_config) -> list[str]:
    """The augmentations set in ``data_config`` (a DataConfig) that the in-memory path cannot do."""
    return [name for name, off in UNSUPPORTED_AUGMENTATIONS.items() if getattr(data_config, name) not in (off, False)]


class InMemoryBatches:
    """Endless augmented training batches ``(images, masks)`` on ``device`` from a decoded copy of ``dataset``.

    ``samples`` yields ``(index, augmentation seed)`` pairs (``pixelwise.train.sampling.SampleStream``).
    ``crop_size`` may be None only when every batch has one image or ``scale_range`` is None.
    """

    def __init__(self, dataset: SegmentationDataset, samples, device: torch.device, batch_size: int, *,
                 crop_size: int | tuple[int, int] | None, scale_range: tuple[float, float] | None,
                 hflip: bool, vflip: bool, normalization: Normalization) -> None:
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        self.samples = iter(samples)
        self.device = device
        self.batch_size = batch_size
        self.crop_size = crop_size
        self.scale_range = tuple(scale_range) if scale_range is not None else (1.0, 1.0)
        self.hflip, self.vflip = hflip, vflip
        self.normalization = normalization
        self.ignore_index = dataset.ignore_index
        self.images, self.masks = decode_all(dataset, device)

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.masks.nbytes

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        indices, seeds = zip(*(next(self.samples) for _ in range(self.batch_size)), strict=True)
        return self.batch(list(indices), list(seeds))

    def batch(self, indices: list[int], seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented, normalised images (B, C, h, w) float32 and masks (B, h, w) int64 of these samples."""
        height, width = self.images.shape[-2:]
        # Per sample: scale, crop position (as fractions of the free room), horizontal and vertical flip.
        draws = np.stack([np.random.default_rng(seed).random(5) for seed in seeds])
        low, high = self.scale_range
        scales = low + (high - low) * draws[:, 0]
        if self.crop_size is not None:
            out_h, out_w = self.crop_size
        else:  # one image per batch, or no scaling: the whole scaled image
            out_h, out_w = round(height * scales[0]), round(width * scales[0])
        # Where the crop starts in the scaled image; negative where the scaled image is smaller (padding).
        top = crop_start(height * scales, out_h, draws[:, 1])
        left = crop_start(width * scales, out_w, draws[:, 2])
        grid = sampling_grid(top, left, scales, (height, width), (out_h, out_w),
                             draws[:, 3] < 0.5 if self.hflip else None, draws[:, 4] < 0.5 if self.vflip else None,
                             self.device)
        index = torch.as_tensor(indices, device=self.device)
        images = self.images[index]
        images = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        # Border padding inside the image, as a resize sees its edges; what lies outside is set black below.
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        # Labels shifted by one so that the zero padding outside the image reads as "no label".
        masks = self.masks[index].unsqueeze(1).float().add_(1.0)
        masks = F.grid_sample(masks, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        masks = masks.squeeze(1).long().sub_(1)
        outside = masks < 0
        masks[outside] = self.ignore_index
        images.masked_fill_(outside.unsqueeze(1), 0.0)
        return self.normalization.normalize(images.clamp_(0.0, 1.0)), masks


def crop_start(scaled: np.ndarray, out: int, draw: np.ndarray) -> np.ndarray:
    """Where each crop starts in its scaled image: a whole pixel in [0, room] where the image is larger, as
    the per-image RandomCrop picks it, else a negative offset that places the image inside the padding."""
    room = np.floor(scaled) - out
    return np.where(room >= 0, np.minimum(np.floor(draw * (room + 1)), room), draw * room)


def sampling_grid(top: np.ndarray, left: np.ndarray, scales: np.ndarray, source_size: tuple[int, int],
                  out_size: tuple[int, int], hflips: np.ndarray | None, vflips: np.ndarray | None,
                  device: torch.device) -> torch.Tensor:
    """``grid_sample``'s (B, h, w, 2) grid: output pixel (i, j) of sample b reads the source at
    ((top + i + 0.5) / scale, (left + j + 0.5) / scale), in [-1, 1] units (align_corners=False)."""
    height, width = source_size
    out_h, out_w = out_size
    rows = torch.arange(out_h, dtype=torch.float64) + 0.5
    cols = torch.arange(out_w, dtype=torch.float64) + 0.5
    if vflips is not None:
        rows = torch.where(torch.as_tensor(vflips)[:, None], rows.flip(0), rows)
    if hflips is not None:
        cols = torch.where(torch.as_tensor(hflips)[:, None], cols.flip(0), cols)
    scale = torch.as_tensor(scales)[:, None]
    y = ((torch.as_tensor(top)[:, None] + rows.expand(len(scales), -1)) / scale) * (2.0 / height) - 1.0
    x = ((torch.as_tensor(left)[:, None] + cols.expand(len(scales), -1)) / scale) * (2.0 / width) - 1.0
    # Only the (B, h) and (B, w) coordinates cross to the device; the (B, h, w, 2) grid is broadcast there
    # (built on the host it was 40 MB per batch of 16 crops of 352x480, most of a batch's time on a GPU).
    y, x = (t.to(device=device, dtype=torch.float32) for t in (y, x))
    return torch.stack(torch.broadcast_tensors(x[:, None, :], y[:, :, None]), dim=-1)


def decode_all(dataset: SegmentationDataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item of ``dataset`` (no transform) stacked: images (N, C, H, W) as read, masks (N, H, W) uint8."""
    images, masks = [], []
    for index in range(len(dataset)):
        image, mask = dataset.load(index)
        if images and image.shape != images[0].shape:
            path = getattr(dataset, "files", [[index]])[index][0]
            raise ValueError(f"data.in_memory needs images of one size: {path} is {tuple(image.shape[-2:])}, "
                             f"the first image {tuple(images[0].shape[-2:])}; turn data.in_memory off")
        images.append(image.as_subclass(torch.Tensor))
        masks.append(mask.as_subclass(torch.Tensor).to(torch.uint8))  # labels < num_classes or 255
    if not images:
        raise ValueError("data.in_memory: the training split is empty")
    return torch.stack(images).to(device), torch.stack(masks).to(device)
