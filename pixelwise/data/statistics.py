"""Class statistics of a data set: per-image pixel counts and SegNet's median-frequency class weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset


def class_pixel_counts(mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes,) int64 pixels of each class in an (H, W) mask; ignore pixels are not counted."""
    labels = mask[mask < num_classes]
    return torch.bincount(labels.flatten().long(), minlength=num_classes)


def per_image_class_counts(dataset: Dataset) -> torch.Tensor:
    """(N, num_classes) int64: the pixels of each class in each of the data set's N masks (untransformed)."""
    # The masks alone, without augmentation or decoding the images, when the loader allows it.
    load_labels = getattr(dataset, "load_labels", lambda index: dataset[index][1])
    return torch.stack([class_pixel_counts(torch.as_tensor(load_labels(index)), dataset.num_classes)
                        for index in range(len(dataset))])


def median_frequency_weights(dataset_or_counts: Dataset | torch.Tensor | Sequence) -> torch.Tensor:
    """Median-frequency balancing (Eigen & Fergus 2015, used by SegNet): (C,) float32 loss weights.

    ``weight[c] = median(freq) / freq[c]`` with ``freq[c]`` = pixels of class c divided by the labelled
    pixels of the images where c is present. Accepts a data set, per-image counts (N, C), or total counts
    (C,) (then ``freq[c]`` is simply the class's share of all pixels). A class never present gets weight 0
    and is left out of the median.
    """
    if isinstance(dataset_or_counts, Dataset):
        counts = per_image_class_counts(dataset_or_counts)
    else:
        counts = torch.as_tensor(dataset_or_counts)
        if counts.ndim not in (1, 2) or counts.is_floating_point() and (counts < 0).any():
            raise ValueError(f"expected (C,) or (N, C) class pixel counts, got shape {tuple(counts.shape)}")
    counts = counts.double()
    if counts.ndim == 1:
        class_pixels, pixels_where_present = counts, counts.sum().expand_as(counts)
    else:
        class_pixels = counts.sum(dim=0)
        pixels_where_present = ((counts > 0) * counts.sum(dim=1, keepdim=True)).sum(dim=0)
    present = class_pixels > 0
    if not present.any():
        raise ValueError("no labelled pixels: class weights are undefined")
    frequency = class_pixels[present] / pixels_where_present[present]
    weights = torch.zeros_like(class_pixels)
    # torch.median takes the lower middle value for an even count; the median is the mean of both.
    weights[present] = frequency.quantile(0.5) / frequency
    return weights.float()
