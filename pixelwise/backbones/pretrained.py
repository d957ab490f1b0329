"""ImageNet weights for the backbones, from torchvision's weights API or from a local file.

``pretrained=True`` reads torchvision's cache (``$TORCH_HOME/hub/checkpoints``) first and downloads
only when the file is not there; offline and without the file it raises an error saying where to
put it. ``pretrained="path/to/file.pth"`` (or ``.safetensors``) reads a local file, never pickled
objects (``torch.load(weights_only=True)``). The file may hold torchvision's whole classification
network (its classifier is dropped, or for VGG16 subsampled into DeepLab-LargeFOV's fc6/fc7) or
just the backbone's own state dict.

A first convolution with other than 3 input channels is adapted from the RGB filters as timm and smp do
(``adapt_first_conv``), so grayscale EM images and multispectral aerial images start from ImageNet too.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torchvision.models import (
    MobileNet_V2_Weights,
    MobileNet_V3_Large_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
    VGG16_Weights,
)
from torchvision.models._api import WeightsEnum

# The ImageNet checkpoints torchvision's own segmentation models start from.
IMAGENET_WEIGHTS: dict[str, WeightsEnum] = {
    "vgg16": VGG16_Weights.IMAGENET1K_V1,
    "vgg16_largefov": VGG16_Weights.IMAGENET1K_V1,  # fc6/fc7 subsampled on loading
    "resnet34": ResNet34_Weights.IMAGENET1K_V1,  # smp's "imagenet" resnet34 encoder
    "resnet50": ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": ResNet101_Weights.IMAGENET1K_V1,
    "mobilenet_v2": MobileNet_V2_Weights.IMAGENET1K_V1,
    "mobilenet_v3_large": MobileNet_V3_Large_Weights.IMAGENET1K_V1,
}


def cache_path(url: str) -> Path:
    """Where ``torch.hub`` keeps the file downloaded from ``url``: ``$TORCH_HOME/hub/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a ``torch.save`` file (read with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load and safetensors raise many types for garbled files
        raise ValueError(f"{path}: cannot be read as a state dict ({error})") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict (a mapping from names to tensors)")
    return state


def download_state_dict(weights: WeightsEnum, hint: str) -> dict[str, torch.Tensor]:
    """torchvision's checkpoint for ``weights``: from the cache, else downloaded (hash checked).

    ``hint`` completes the error raised when neither works (e.g. which local-file option to use instead).
    """
    cached = cache_path(weights.url)
    if cached.is_file():
        return read_state_dict(cached)
    try:
        return torch.hub.load_state_dict_from_url(
            weights.url, map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except Exception as error:  # URLError, socket errors, HTTP errors: all mean "not reachable"
        raise FileNotFoundError(
            f"cannot download {weights.url} ({error}). Offline, put that file at {cached} "
            f"(torchvision's cache; set TORCH_HOME to move it) or {hint}"
        ) from error


def load_backbone_weights(backbone: nn.Module, name: str, source: bool | str | os.PathLike) -> None:
    """Load ImageNet weights into ``backbone`` (built under the name ``name``) in place.

    ``source`` is True (torchvision's weights) or a path. A first convolution with other than 3 input
    channels is adapted from the RGB filters (``adapt_first_conv``). Raises ValueError naming the source
    when the tensors do not match the backbone.
    """
    if source is True:
        if name not in IMAGENET_WEIGHTS:
            raise ValueError(
                f"torchvision has no ImageNet weights for {name!r}; pass pretrained_backbone='path/to/file.pth' "
                "with a state dict in pixelwise's parameter names"
            )
        state = download_state_dict(IMAGENET_WEIGHTS[name], "pass pretrained_backbone='path/to/file.pth'")
        origin = IMAGENET_WEIGHTS[name].url
    else:
        state = read_state_dict(source)
        origin = str(source)
    expected = backbone.state_dict()
    state = adapt_classification_state(state, expected)
    first_conv = next(n for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d)) + ".weight"
    if first_conv in state and state[first_conv].shape[1] != expected[first_conv].shape[1]:
        state[first_conv] = adapt_first_conv(state[first_conv], expected[first_conv].shape[1])
    missing = sorted(set(expected) - set(state))
    mismatched = [
        f"{key}: file {tuple(state[key].shape)} vs backbone {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    if missing or mismatched:
        raise ValueError(
            f"{origin} does not fit the {name} backbone: missing {missing[:5]}, shape mismatch {mismatched[:5]}"
        )
    backbone.load_state_dict({key: state[key] for key in expected})


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB filters (out, 3, kh, kw) adapted to ``in_channels`` inputs, as timm's ``adapt_input_conv`` and smp.

    1 channel: the sum of the RGB filters, so a gray image gives exactly the response of its RGB copy.
    2 or more than 3: the RGB filters cycled (R, G, B, R, ...) and scaled by 3 / ``in_channels``, which keeps
    the activation's scale when the channels carry similar values.
    """
    if weight.shape[1] != 3:
        raise ValueError(f"can only adapt a first convolution with 3 input channels, got {weight.shape[1]}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if in_channels == 1:
        return weight.sum(1, keepdim=True)
    if in_channels == 3:
        return weight
    cycled = weight.repeat(1, -(-in_channels // 3), 1, 1)[:, :in_channels]
    return cycled * (3 / in_channels)


def adapt_classification_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict:
    """Drop an ImageNet classifier the backbone lacks; convolutionalize VGG16's fc6/fc7 where it has them.

    FCN and Hypercolumns keep fc6 as a 4096 x 512 x 7 x 7 convolution and fc7 as 4096 x 4096 x 1 x 1 (the
    same weights, reshaped). DeepLab-LargeFOV (Chen et al. 2015, section 4.1) subsamples them to
    1024 x 512 x 3 x 3 (every 4th filter, every 3rd tap) and 1024 x 1024.
    """
    state = dict(state)
    if "classifier.0.weight" in expected and state.get("classifier.0.weight", torch.empty(0)).dim() == 2:
        fc6 = state["classifier.0.weight"].view(-1, 512, 7, 7)
        fc7 = state["classifier.3.weight"][:, :, None, None]
        if expected["classifier.0.weight"].shape[-1] == 3:  # DeepLab-LargeFOV's 3x3 fc6
            fc6, fc7 = fc6[::4, :, ::3, ::3], fc7[::4, ::4]
            state["classifier.0.bias"] = state["classifier.0.bias"][::4].clone()
            state["classifier.3.bias"] = state["classifier.3.bias"][::4].clone()
        state["classifier.0.weight"], state["classifier.3.weight"] = fc6.contiguous(), fc7.contiguous()
    return {key: value for key, value in state.items() if key in expected}
