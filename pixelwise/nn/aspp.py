"""Atrous Spatial Pyramid Pooling: look at the same map with several fields of view at once.

Objects appear at many scales. Instead of resizing the image, ASPP runs parallel atrous convolutions
with different rates on one feature map and fuses them.

- DeepLab v2 (``ASPPv2``): four 3x3 atrous convolutions at rates 6, 12, 18 and 24, each predicting
  class scores directly; the scores are summed.
- DeepLab v3 (``ASPP``): a 1x1 branch, three 3x3 branches at rates 6, 12 and 18 (doubled at output
  stride 8) and image-level pooling, each with BatchNorm and 256 channels; concatenated, then
  projected by a 1x1 convolution. At large rates a 3x3 filter on a small map degenerates to its
  centre tap, which is why the global context comes from the pooling branch. ``separable=True`` uses
  depthwise-separable 3x3 branches (DeepLabv3+).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pixelwise.nn.conv import ConvBNReLU, SeparableConv2d, atrous_conv3x3
from pixelwise.nn.upsample import resize_to


class ASPPv2(nn.Module):
    """(N, C_in, h, w) -> class scores (N, num_classes, h, w): the sum of one 3x3 atrous conv per rate."""

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = (6, 12, 18, 24)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(atrous_conv3x3(in_channels, num_classes, rate) for rate in rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(branch(x) for branch in self.branches)


class ImagePooling(nn.Sequential):
    """Image-level features: global average pool, 1x1 conv + BN + ReLU, spread back over (h, w).

    BatchNorm over a 1x1 pooled map has one value per image and channel, so training with one image
    per batch has no batch statistics. With a single image in train mode the branch normalises with
    its running statistics (and leaves them unchanged); with two or more it trains as usual. We keep
    the BatchNorm, unlike dropping it or using GroupNorm, because the paper has it and torchvision's
    weights need it.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool, conv, norm, relu = self
        pooled = conv(pool(x))
        if self.training and x.shape[0] == 1:
            pooled = F.batch_norm(
                pooled, norm.running_mean, norm.running_var, norm.weight, norm.bias, training=False, eps=norm.eps
            )
        else:
            pooled = norm(pooled)
        # Bilinear resizing of a 1x1 map is a broadcast: every pixel gets the image's vector.
        return resize_to(relu(pooled), tuple(x.shape[-2:]))


class ASPP(nn.Module):
    """DeepLabv3 ASPP: (N, C_in, h, w) -> (N, out_channels, h, w).

    ``branches`` holds the 1x1 branch, one 3x3 branch per rate and the image pooling; ``project`` is
    the 1x1 convolution (+ BN, ReLU, dropout) over their concatenation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        separable: bool = False,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvBNReLU(in_channels, out_channels, 1)]
        for rate in rates:
            if separable:
                branches.append(SeparableConv2d(in_channels, out_channels, dilation=rate, depthwise_norm=True))
            else:
                branches.append(ConvBNReLU(in_channels, out_channels, 3, dilation=rate))
        branches.append(ImagePooling(in_channels, out_channels))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))
