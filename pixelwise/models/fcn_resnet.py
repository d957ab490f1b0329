"""FCN on a dilated ResNet: torchvision's ``fcn_resnet50/101``, the FCN idea on a modern backbone.

The ResNet keeps output stride 8 through dilation, so no skip connections are needed; the head is a
3x3 conv (to a quarter of the channels) + BN + ReLU + dropout + a 1x1 classifier, as torchvision's
FCNHead, then the scores are upsampled to the input size.
"""

from __future__ import annotations

import os

from torch import nn

from pixelwise.backbones import build_backbone
from pixelwise.models.base import BackboneHead
from pixelwise.nn.conv import ConvBNReLU
from pixelwise.nn.upsample import ScoreUpsample


class BackboneFCN(BackboneHead):
    """(N, in_channels, H, W) -> logits (N, num_classes, H, W) from the backbone's deepest map.

    ``create_model("fcn", ..., weights="torchvision")`` loads torchvision's COCO-trained weights (21 VOC
    classes) into torchvision's architecture (output stride 8).
    """

    def __init__(
        self,
        num_classes: int = 21,
        backbone: str = "resnet50",
        in_channels: int = 3,
        output_stride: int = 8,
        upsampling: str = "interpolate",
        dropout: float = 0.1,
        pretrained_backbone: bool | str | os.PathLike = False,
    ) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, in_channels, output_stride, pretrained_backbone)
        channels = self.backbone.channels[-1]
        # Flat, so that the parameter names are torchvision's (classifier.0, .1 and .4).
        self.classifier = nn.Sequential(
            *ConvBNReLU(channels, channels // 4, 3), nn.Dropout(dropout), nn.Conv2d(channels // 4, num_classes, 1)
        )
        self.upsample = ScoreUpsample(num_classes, output_stride, upsampling)
