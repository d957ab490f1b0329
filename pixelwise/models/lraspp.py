"""LR-ASPP, the "lite reduced" ASPP of MobileNetV3 (Howard et al., Searching for MobileNetV3, ICCV 2019).

ASPP made cheap for phones: instead of parallel atrous branches, one 1x1 branch on the deepest map
(stride 16) is gated channel by channel by a squeeze-and-excitation style global-pooling branch, upsampled
to stride 8 and added to a 1x1 classifier of the stride-8 features, a one-skip decoder as in FCN-16s.
The layer names are torchvision's ``LRASPPHead``, so ``from_torchvision`` copies its weights unchanged.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.backbones import build_backbone
from pixelwise.backbones.base import out_channels
from pixelwise.models.base import SegmentationModel


class LRASPPHead(nn.Module):
    """(low stride-8 map, high stride-16 map) -> class scores at stride 8."""

    def __init__(self, low_channels: int, high_channels: int, num_classes: int, inter_channels: int) -> None:
        super().__init__()
        self.cbr = nn.Sequential(nn.Conv2d(high_channels, inter_channels, 1, bias=False),
                                 nn.BatchNorm2d(inter_channels), nn.ReLU(inplace=True))
        # The gate sees the whole image: the "pooling" branch of ASPP, used as a multiplier, not concatenated.
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_channels, inter_channels, 1, bias=False),
                                   nn.Sigmoid())
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        gated = self.cbr(high) * self.scale(high)
        gated = F.interpolate(gated, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.low_classifier(low) + self.high_classifier(gated)


class LRASPP(SegmentationModel):
    """MobileNet (atrous past ``output_stride``) -> LR-ASPP -> bilinear upsampling: (N, C, H, W) -> logits.

    The head reads the deepest map and, as the paper and torchvision do, the output of the block that
    brings the network to stride 8 (not the last block at that stride, which the other decoders tap);
    ``output_stride`` must be 16 (the paper's and torchvision's) or 32.
    """

    def __init__(
        self,
        num_classes: int = 21,
        backbone: str = "mobilenet_v3_large",
        in_channels: int = 3,
        output_stride: int = 16,
        inter_channels: int = 128,
        pretrained_backbone: bool | str | os.PathLike = False,
    ) -> None:
        super().__init__()
        if output_stride not in (16, 32):
            raise ValueError(f"lraspp output_stride must be 16 or 32, got {output_stride!r}")
        self.backbone = build_backbone(backbone, in_channels, output_stride, pretrained_backbone)
        blocks = self.backbone.features
        # The stem, then the blocks that halve the resolution: the third of them reaches stride 8.
        downsampling = [index for index, block in enumerate(blocks)
                        if any(m.stride[0] > 1 for m in block.modules() if isinstance(m, nn.Conv2d))]
        self.low_block = downsampling[2]
        self.classifier = LRASPPHead(out_channels(blocks[self.low_block]), self.backbone.channels[-1], num_classes,
                                     inter_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x
        for index, block in enumerate(self.backbone.features):
            features = block(features)
            if index == self.low_block:
                low = features
        scores = self.classifier(low, features)
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)
