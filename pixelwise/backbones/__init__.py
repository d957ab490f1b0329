"""Backbones: image (N, C, H, W) -> a list of feature maps, shallow to deep (the contract: ``base.Backbone``).

``BACKBONES`` maps a name to a builder ``(in_channels, output_stride, **options) -> Backbone``;
``build_backbone`` adds ImageNet weights. ``"timm:<name>"`` is any timm model that supports
``features_only=True`` (``timm_backbone.TimmBackbone``, with the ``pixelwise[timm]`` extra). Two VGG16s, two
names: ``vgg16`` is the plain network (FCN, Hypercolumns), ``vgg16_largefov`` DeepLab v1's, with 3x3
poolings, atrous conv5 and a 3x3 atrous fc6.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from functools import partial
from typing import Any

from pixelwise.backbones.base import Backbone, DilationSchedule, check_output_stride, scaled_rates
from pixelwise.backbones.mobilenet import MobileNet
from pixelwise.backbones.pretrained import load_backbone_weights
from pixelwise.backbones.resnet import ResNet
from pixelwise.backbones.timm_backbone import TIMM_PREFIX, TimmBackbone
from pixelwise.backbones.vgg import VGG16, VGG16LargeFOV
from pixelwise.backbones.xception import Xception65

BACKBONES: dict[str, Callable[..., Backbone]] = {
    "vgg16": VGG16,
    "vgg16_largefov": VGG16LargeFOV,
    "resnet34": partial(ResNet, "resnet34"),
    "resnet50": partial(ResNet, "resnet50"),
    "resnet101": partial(ResNet, "resnet101"),
    "xception65": Xception65,
    "mobilenet_v2": partial(MobileNet, "mobilenet_v2"),
    "mobilenet_v3_large": partial(MobileNet, "mobilenet_v3_large"),
}


def build_backbone(
    name: str,
    in_channels: int = 3,
    output_stride: int | None = None,
    pretrained: bool | str | os.PathLike = False,
    **options: Any,
) -> Backbone:
    """The backbone ``name`` (a key of ``BACKBONES`` or ``"timm:<name>"``); ``output_stride`` None takes the
    backbone's own default.

    ``pretrained`` is True (torchvision's or timm's ImageNet weights) or a path to a weights file; ``options``
    are the backbone's own keywords (``multi_grid`` unit rates of the last ResNet stage, VGG16's
    ``first_padding``).
    """
    builder = backbone_builder(name)
    accepted = set(inspect.signature(builder).parameters) - {"in_channels", "output_stride", "pretrained"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"backbone {name!r} takes no option {', '.join(unknown)} (its options: "
                         f"{', '.join(sorted(accepted)) or 'none'})")
    stride = {} if output_stride is None else {"output_stride": output_stride}
    if name.startswith(TIMM_PREFIX):  # timm loads the weights while it builds the network
        return builder(in_channels=in_channels, **stride, **options, pretrained=pretrained)
    backbone = builder(in_channels=in_channels, **stride, **options)
    if pretrained:
        load_backbone_weights(backbone, name, pretrained)
    return backbone


def backbone_builder(name: str) -> Callable[..., Backbone]:
    """The builder of backbone ``name``: an entry of ``BACKBONES``, or ``TimmBackbone`` for ``"timm:<name>"``."""
    if name.startswith(TIMM_PREFIX):
        return partial(TimmBackbone, name.removeprefix(TIMM_PREFIX))
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)} or {TIMM_PREFIX}<name>")
    return BACKBONES[name]


__all__ = [
    "BACKBONES",
    "VGG16",
    "Backbone",
    "DilationSchedule",
    "MobileNet",
    "ResNet",
    "TIMM_PREFIX",
    "TimmBackbone",
    "VGG16LargeFOV",
    "Xception65",
    "backbone_builder",
    "build_backbone",
    "check_output_stride",
    "scaled_rates",
]
