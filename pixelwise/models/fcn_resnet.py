"""FCN on a dilated ResNet: torchvision's ``fcn_resnet50/101``, the FCN idea on a modern backbone.

The ResNet keeps output stride 8 through dilation, so no skip connections are needed; the head is a
3x3 conv (to a quarter of the channels) + BN + ReLU + dropout + a 1x1 classifier, as torchvision's
FCNHead, then the scores are upsampled to the input size.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from pixelwise.backbones import build_backbone
from pixelwise.models.deeplab import ScoreUpsample
from pixelwise.models.torchvision_compat import load_torchvision_weights, torchvision_options
from pixelwise.nn.conv import ConvBNReLU


class BackboneFCN(nn.Module):
    """(N, in_channels, H, W) -> logits (N, num_classes, H, W) from the backbone's deepest map.

    ``weights="torchvision"`` loads torchvision's COCO-trained weights (21 VOC classes) and sets the
    output stride to torchvision's 8.
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
        weights: str | None = None,
    ) -> None:
        super().__init__()
        if weights is not None:
            output_stride = torchvision_options("fcn", backbone, weights, num_classes)["output_stride"]
        self.backbone = build_backbone(backbone, in_channels, output_stride, pretrained_backbone)
        channels = self.backbone.channels[-1]
        # Flat, so that the parameter names are torchvision's (classifier.0, .1 and .4).
        self.classifier = nn.Sequential(
            *ConvBNReLU(channels, channels // 4, 3), nn.Dropout(dropout), nn.Conv2d(channels // 4, num_classes, 1)
        )
        self.upsample = ScoreUpsample(num_classes, output_stride, upsampling)
        if weights is not None:
            load_torchvision_weights(self, "fcn", backbone)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.classifier(self.backbone(x)[-1]), x.shape[-2:])
