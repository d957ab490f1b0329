"""DeepLab v1, v2, v3 and v3+ (Chen, Papandreou, Kokkinos, Murphy, Yuille, Schroff, Adam, Zhu).

One idea runs through all four: keep the feature maps dense. Past the chosen ``output_stride`` the
backbone's strides become atrous (dilated) convolutions, so the network keeps its receptive field
without losing resolution, and the class scores only need a short upsampling at the end.

- v1 (ICLR 2015): VGG16-LargeFOV, fc6 a 3x3 convolution with rate 12, output stride 8.
- v2 (TPAMI 2017): ResNet-101 and ASPP-v2, four parallel 3x3 atrous classifiers (rates 6/12/18/24) summed.
- v3 (arXiv 2017): ASPP with a 1x1 branch, three 3x3 branches, image-level pooling and BatchNorm;
  optional multi-grid rates in the last ResNet stage.
- v3+ (ECCV 2018): the v3 encoder plus a light decoder that fuses stride-4 features to sharpen edges.

The papers of v1 and v2 post-process the scores with a fully connected CRF (``pixelwise.crf``,
separate from these modules); the networks here are their CNN part.

Upsampling. ``upsampling="interpolate"`` (the default) is parameter-free bilinear interpolation, as
in the papers. "bilinear", "nearest" and "transposed" use ``pixelwise.nn.Upsample`` (interpolation +
a learnable 3x3 convolution, or a transposed convolution) by the integer factor, then ``resize_to``
trims the ``ceil`` surplus to the exact size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from pixelwise.backbones import build_backbone
from pixelwise.models.torchvision_compat import load_torchvision_weights, torchvision_options
from pixelwise.nn.aspp import ASPP, ASPPv2
from pixelwise.nn.conv import ConvBNReLU, SeparableConv2d
from pixelwise.nn.upsample import UPSAMPLING_MODES, Upsample, resize_to

UPSAMPLINGS = ("interpolate", *UPSAMPLING_MODES)
MULTI_GRID = (1, 2, 4)
HEADS = ("paper", "torchvision")


class ScoreUpsample(nn.Module):
    """(N, C, h, w) -> (N, C, *size): bilinear interpolation, or ``Upsample`` by ``factor`` then ``resize_to``."""

    def __init__(self, channels: int, factor: int, mode: str = "interpolate") -> None:
        super().__init__()
        if mode not in UPSAMPLINGS:
            raise ValueError(f"upsampling must be one of {UPSAMPLINGS}, got {mode!r}")
        self.upsample = None if mode == "interpolate" else Upsample(channels, channels, factor, mode, bias=False)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        if self.upsample is not None:
            x = self.upsample(x)
        return resize_to(x, tuple(size))


def scaled_rates(rates_at_16: Sequence[int], output_stride: int) -> tuple[int, ...]:
    """Atrous rates chosen at output stride 16, scaled so the field of view stays the same in pixels."""
    return tuple(rate * 16 // output_stride for rate in rates_at_16)


class DeepLabV1(nn.Module):
    """DeepLab-LargeFOV: VGG16 (pool4/pool5 stride 1, fc6 3x3 rate 12, 1024 channels) + fc8.

    (N, in_channels, H, W) -> logits (N, num_classes, H, W). The paper adds a dense CRF after it.
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        output_stride: int = 8,
        upsampling: str = "interpolate",
        pretrained_backbone: bool | str | os.PathLike = False,
    ) -> None:
        super().__init__()
        self.backbone = build_backbone("vgg16", in_channels, output_stride, pretrained_backbone)
        self.classifier = nn.Conv2d(self.backbone.channels[-1], num_classes, 1)  # fc8
        nn.init.normal_(self.classifier.weight, std=0.01)  # the paper's initialisation of fc8
        nn.init.zeros_(self.classifier.bias)
        self.upsample = ScoreUpsample(num_classes, output_stride, upsampling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.classifier(self.backbone(x)[-1]), x.shape[-2:])


class DeepLabV2(nn.Module):
    """ResNet-101 + ASPP-v2: four 3x3 atrous classifiers at rates 6/12/18/24 (at output stride 8), summed.

    (N, in_channels, H, W) -> logits (N, num_classes, H, W). The paper adds a dense CRF after it.
    """

    def __init__(
        self,
        num_classes: int = 21,
        backbone: str = "resnet101",
        in_channels: int = 3,
        output_stride: int = 8,
        upsampling: str = "interpolate",
        pretrained_backbone: bool | str | os.PathLike = False,
    ) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, in_channels, output_stride, pretrained_backbone)
        rates = tuple(rate * 8 // output_stride for rate in (6, 12, 18, 24))
        self.classifier = ASPPv2(self.backbone.channels[-1], num_classes, rates)
        self.upsample = ScoreUpsample(num_classes, output_stride, upsampling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.classifier(self.backbone(x)[-1]), x.shape[-2:])


class DeepLabV3(nn.Module):
    """Backbone -> ASPP (256 channels) -> 1x1 classifier: (N, in_channels, H, W) -> (N, num_classes, H, W).

    ``atrous_rates`` default to 6/12/18 at output stride 16 (doubled at 8). ``head="torchvision"``
    adds torchvision's 3x3 conv + BN + ReLU between ASPP and the classifier (the paper has none) and
    uses its projection dropout of 0.5 (0.1 otherwise, as DeepLab's code). ``multi_grid=True`` gives
    the last ResNet stage unit rates (1, 2, 4). ``weights="torchvision"`` loads torchvision's
    COCO-trained weights (21 VOC classes) and sets head, output stride and rates to torchvision's.
    """

    def __init__(
        self,
        num_classes: int = 21,
        backbone: str = "resnet101",
        in_channels: int = 3,
        output_stride: int = 16,
        upsampling: str = "interpolate",
        atrous_rates: Sequence[int] | None = None,
        separable_aspp: bool = False,
        multi_grid: bool = False,
        head: str = "paper",
        pretrained_backbone: bool | str | os.PathLike = False,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        if weights is not None:
            tv_options = torchvision_options("deeplabv3", backbone, weights, num_classes)
            head, output_stride = tv_options["head"], tv_options["output_stride"]
            atrous_rates = tv_options["atrous_rates"]
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.backbone = build_backbone(
            backbone, in_channels, output_stride, pretrained_backbone, MULTI_GRID if multi_grid else None
        )
        rates = atrous_rates or scaled_rates((6, 12, 18), output_stride)
        dropout = 0.5 if head == "torchvision" else 0.1
        layers: list[nn.Module] = [ASPP(self.backbone.channels[-1], 256, rates, separable_aspp, dropout)]
        if head == "torchvision":
            layers += list(ConvBNReLU(256, 256, 3))
        layers.append(nn.Conv2d(256, num_classes, 1))
        # Flat, so that the parameter names are torchvision's (classifier.0 is the ASPP, ...).
        self.classifier = nn.Sequential(*layers)
        self.upsample = ScoreUpsample(num_classes, output_stride, upsampling)
        if weights is not None:
            load_torchvision_weights(self, "deeplabv3", backbone)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.classifier(self.backbone(x)[-1]), x.shape[-2:])


class DeepLabV3Plus(nn.Module):
    """The v3 encoder plus a decoder: (N, in_channels, H, W) -> logits (N, num_classes, H, W).

    Decoder: the stride-4 backbone features are reduced to 48 channels (1x1 conv + BN + ReLU) and
    concatenated with the ASPP output upsampled to stride 4; two 3x3 convolutions of 256 channels
    (depthwise-separable with ``separable_decoder=True``, the default) and a 1x1 classifier follow,
    then a 4x upsampling. ``separable_aspp=True`` makes the ASPP's 3x3 branches separable too.
    """

    def __init__(
        self,
        num_classes: int = 21,
        backbone: str = "xception65",
        in_channels: int = 3,
        output_stride: int = 16,
        upsampling: str = "interpolate",
        atrous_rates: Sequence[int] | None = None,
        separable_aspp: bool = False,
        separable_decoder: bool = True,
        multi_grid: bool = False,
        pretrained_backbone: bool | str | os.PathLike = False,
    ) -> None:
        super().__init__()
        self.backbone = build_backbone(
            backbone, in_channels, output_stride, pretrained_backbone, MULTI_GRID if multi_grid else None
        )
        if 4 not in self.backbone.strides:
            raise ValueError(f"backbone {backbone!r} has no stride-4 features for the DeepLabv3+ decoder")
        self.low_level_index = self.backbone.strides.index(4)
        rates = atrous_rates or scaled_rates((6, 12, 18), output_stride)
        self.aspp = ASPP(self.backbone.channels[-1], 256, rates, separable_aspp)
        self.upsample_aspp = ScoreUpsample(256, output_stride // 4, upsampling)
        self.reduce_low_level = ConvBNReLU(self.backbone.channels[self.low_level_index], 48, 1)
        if separable_decoder:
            self.decoder = nn.Sequential(
                SeparableConv2d(256 + 48, 256, depthwise_norm=True), SeparableConv2d(256, 256, depthwise_norm=True)
            )
        else:
            self.decoder = nn.Sequential(ConvBNReLU(256 + 48, 256, 3), ConvBNReLU(256, 256, 3))
        self.classifier = nn.Conv2d(256, num_classes, 1)
        self.upsample = ScoreUpsample(num_classes, 4, upsampling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        low_level = self.reduce_low_level(features[self.low_level_index])
        context = self.upsample_aspp(self.aspp(features[-1]), low_level.shape[-2:])
        scores = self.classifier(self.decoder(torch.cat([context, low_level], dim=1)))
        return self.upsample(scores, x.shape[-2:])

