"""Backbones: image (N, C, H, W) -> a list of feature maps, shallow to deep.

Every backbone has ``channels`` and ``strides`` attributes describing the maps its forward returns
(strides are nominal and capped at ``output_stride``: past it, strides become dilation). A map at
stride ``s`` has ``ceil(H / s)`` by ``ceil(W / s)`` pixels for every input size.

``BACKBONES`` maps a name to a builder ``(in_channels, output_stride) -> nn.Module``; ``build_backbone``
adds ImageNet weights and the ResNet multi-grid option.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial

from torch import nn

from pixelwise.backbones.mobilenet import MobileNet
from pixelwise.backbones.pretrained import load_backbone_weights
from pixelwise.backbones.resnet import ResNet
from pixelwise.backbones.vgg import VGG16, VGG16LargeFOV
from pixelwise.backbones.xception import Xception65

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "vgg16": VGG16LargeFOV,
    "resnet50": partial(ResNet, "resnet50"),
    "resnet101": partial(ResNet, "resnet101"),
    "xception65": Xception65,
    "mobilenet_v2": partial(MobileNet, "mobilenet_v2"),
    "mobilenet_v3_large": partial(MobileNet, "mobilenet_v3_large"),
}


def build_backbone(
    name: str,
    in_channels: int = 3,
    output_stride: int = 16,
    pretrained: bool | str | os.PathLike = False,
    multi_grid: Sequence[int] | None = None,
) -> nn.Module:
    """The backbone ``name`` at ``output_stride``; ``pretrained`` True (torchvision's ImageNet weights)
    or a path to a weights file; ``multi_grid`` unit rates of the last stage (ResNets only)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    options = {"multi_grid": multi_grid} if multi_grid is not None else {}
    if options and not name.startswith("resnet"):
        raise ValueError(f"multi_grid applies to the ResNet backbones only, not {name!r}")
    backbone = BACKBONES[name](in_channels=in_channels, output_stride=output_stride, **options)
    if pretrained:
        load_backbone_weights(backbone, name, pretrained)
    return backbone


__all__ = ["BACKBONES", "VGG16", "MobileNet", "ResNet", "VGG16LargeFOV", "Xception65", "build_backbone"]
