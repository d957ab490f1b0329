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
in the papers; "bilinear", "nearest" and "transposed" are learnable (``pixelwise.nn.ScoreUpsample``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from pixelwise.backbones import Backbone, build_backbone, scaled_rates
from pixelwise.models.base import BackboneHead, SegmentationModel
from pixelwise.nn.aspp import ASPP, ASPPv2
from pixelwise.nn.conv import ConvBNReLU, SeparableConv2d
from pixelwise.nn.upsample import ScoreUpsample

MULTI_GRID = (1, 2, 4)
HEADS = ("paper", "torchvision")
# The papers' atrous rates and the output stride they are given at (other output strides rescale them).
V2_RATES, V2_RATES_AT = (6, 12, 18, 24), 8
V3_RATES, V3_RATES_AT = (6, 12, 18), 16


def atrous_backbone(name: str, in_channels: int, output_stride: int, pretrained: bool | str | os.PathLike,
                    multi_grid: bool) -> Backbone:
    """The backbone at ``output_stride``; ``multi_grid`` gives the last ResNet stage unit rates (1, 2, 4)."""
    options = {"multi_grid": MULTI_GRID} if multi_grid else {}
    return build_backbone(name, in_channels, output_stride, pretrained, **options)


class DeepLabV1(BackboneHead):
    """DeepLab-LargeFOV, (N, in_channels, H, W) -> logits (N, num_classes, H, W): VGG16 with pool4/pool5 at
    stride 1, fc6 a 3x3 convolution at rate 12 with 1024 channels, then fc8. The ICLR 2015 paper refines the
    scores with a fully connected CRF: ``Segmenter(run, crf=True)`` with the recipe's ``DEEPLAB_VOC``.
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
        self.backbone = build_backbone("vgg16_largefov", in_channels, output_stride, pretrained_backbone)
        self.classifier = nn.Conv2d(self.backbone.channels[-1], num_classes, 1)  # fc8
        nn.init.normal_(self.classifier.weight, std=0.01)  # the paper's initialisation of fc8
        nn.init.zeros_(self.classifier.bias)
        self.upsample = ScoreUpsample(num_classes, output_stride, upsampling)


class DeepLabV2(BackboneHead):
    """ResNet-101 + ASPP-v2, (N, in_channels, H, W) -> logits (N, num_classes, H, W): four 3x3 atrous
    classifiers at rates 6/12/18/24 (at output stride 8), summed. Like v1, the TPAMI paper post-processes
    with the dense CRF (``pixelwise.crf``), whose published VOC setting the deeplabv2 recipe carries.
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
        rates = scaled_rates(V2_RATES, V2_RATES_AT, output_stride)
        self.classifier = ASPPv2(self.backbone.channels[-1], num_classes, rates)
        self.upsample = ScoreUpsample(num_classes, output_stride, upsampling)


class DeepLabV3(BackboneHead):
    """Backbone -> ASPP (256 channels) -> 1x1 classifier: (N, in_channels, H, W) -> (N, num_classes, H, W).

    ``atrous_rates`` default to 6/12/18 at output stride 16 (doubled at 8). ``head="torchvision"``
    adds torchvision's 3x3 conv + BN + ReLU between ASPP and the classifier (the paper has none) and
    uses its projection dropout of 0.5 (0.1 otherwise, as DeepLab's code). ``multi_grid=True`` gives
    the last ResNet stage unit rates (1, 2, 4). ``create_model(..., weights="torchvision")`` loads
    torchvision's COCO-trained weights (21 VOC classes) into torchvision's architecture.
    """

    def __init__(
        self,
        num_classes: int = 21,
        backbone: str = "resnet101",
        head: str = "paper",  # what sets this model apart first, then the options of the atrous encoder
        in_channels: int = 3,
        output_stride: int = 16,
        upsampling: str = "interpolate",
        atrous_rates: Sequence[int] | None = None,
        separable_aspp: bool = False,
        multi_grid: bool = False,
        pretrained_backbone: bool | str | os.PathLike = False,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.backbone = atrous_backbone(backbone, in_channels, output_stride, pretrained_backbone, multi_grid)
        rates = atrous_rates or scaled_rates(V3_RATES, V3_RATES_AT, output_stride)
        dropout = 0.5 if head == "torchvision" else 0.1
        layers: list[nn.Module] = [ASPP(self.backbone.channels[-1], 256, rates, separable_aspp, dropout)]
        if head == "torchvision":
            layers += list(ConvBNReLU(256, 256, 3))
        layers.append(nn.Conv2d(256, num_classes, 1))
        # Flat, so that the parameter names are torchvision's (classifier.0 is the ASPP, ...).
        self.classifier = nn.Sequential(*layers)
        self.upsample = ScoreUpsample(num_classes, output_stride, upsampling)


class DeepLabV3Plus(SegmentationModel):
    """The v3 encoder plus a decoder: (N, in_channels, H, W) -> logits (N, num_classes, H, W).

    Decoder: the stride-4 backbone features are reduced to 48 channels (1x1 conv + BN + ReLU) and
    concatenated with the ASPP output upsampled to stride 4; ``decoder_convs`` 3x3 convolutions of 256
    channels (two in the paper, which also tried one; depthwise-separable with ``separable_decoder=True``,
    the default) and a 1x1 classifier follow,
    then a 4x upsampling. ``separable_aspp=True`` makes the ASPP's 3x3 branches separable too; its
    default, None, is the paper's choice for the backbone: separable on Xception-65 (the paper's best
    models, 54.17B multiply-adds at 513x513), regular 3x3 branches on the others.
    """

    def __init__(
        self,
        num_classes: int = 21,
        backbone: str = "xception65",
        separable_decoder: bool = True,  # what sets this model apart first, then the options of the encoder
        decoder_convs: int = 2,
        separable_aspp: bool | None = None,
        in_channels: int = 3,
        output_stride: int = 16,
        upsampling: str = "interpolate",
        atrous_rates: Sequence[int] | None = None,
        multi_grid: bool = False,
        pretrained_backbone: bool | str | os.PathLike = False,
    ) -> None:
        super().__init__()
        self.backbone = atrous_backbone(backbone, in_channels, output_stride, pretrained_backbone, multi_grid)
        if 4 not in self.backbone.strides:
            raise ValueError(f"backbone {backbone!r} has no stride-4 features for the DeepLabv3+ decoder")
        self.low_level_index = self.backbone.strides.index(4)
        rates = atrous_rates or scaled_rates(V3_RATES, V3_RATES_AT, output_stride)
        if separable_aspp is None:
            separable_aspp = backbone == "xception65"
        self.aspp = ASPP(self.backbone.channels[-1], 256, rates, separable_aspp)
        self.upsample_aspp = ScoreUpsample(256, output_stride // 4, upsampling)
        self.reduce_low_level = ConvBNReLU(self.backbone.channels[self.low_level_index], 48, 1)
        if decoder_convs < 1:
            raise ValueError(f"decoder_convs must be at least 1, got {decoder_convs}")
        widths = [256 + 48] + [256] * decoder_convs
        self.decoder = nn.Sequential(*(
            SeparableConv2d(width, 256, depthwise_norm=True) if separable_decoder else ConvBNReLU(width, 256, 3)
            for width in widths[:-1]))
        self.classifier = nn.Conv2d(256, num_classes, 1)
        self.upsample = ScoreUpsample(num_classes, 4, upsampling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        low_level = self.reduce_low_level(features[self.low_level_index])
        context = self.upsample_aspp(self.aspp(features[-1]), low_level.shape[-2:])
        scores = self.classifier(self.decoder(torch.cat([context, low_level], dim=1)))
        return self.upsample(scores, x.shape[-2:])

