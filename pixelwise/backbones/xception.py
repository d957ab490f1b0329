"""Aligned Xception-65, the DeepLabv3+ backbone (Chen et al. ECCV 2018, section 3.2 and figure 4).

Changes from Chollet's Xception, as in the paper: a deeper middle flow (16 repeats instead of 8);
every max-pooling replaced by a depthwise-separable convolution with stride 2, so that atrous
convolution can replace it at any output stride; and BatchNorm + ReLU after every 3x3 depthwise
convolution (``SeparableConv2d(depthwise_norm=True)``), as in MobileNet.

Entry flow:  conv 3x3/2 (32), conv 3x3 (64), blocks of 128, 256 and 728 channels, each with stride 2
Middle flow: 16 blocks of 728 channels with identity shortcuts
Exit flow:   a block (728, 1024, 1024) with stride 2, then separable convs of 1536, 1536 and 2048

A block is three separable 3x3 convolutions (the last one strided) plus a shortcut (a strided 1x1
convolution + BN when the shape changes). The returned maps are the last at each stride, as in the
paper's decoder, whose stride-4 features come from inside the 256 block, before its strided convolution.
"""

from __future__ import annotations

import torch
from torch import nn

from pixelwise.backbones.base import Backbone, DilationSchedule
from pixelwise.nn.conv import ConvBNReLU, SeparableConv2d

MIDDLE_REPEATS = 16


class XceptionBlock(nn.Module):
    """Three separable 3x3 convolutions (the last with ``stride``) plus a shortcut.

    ``forward`` returns the block output and the map before the strided convolution (the last one
    at the input's stride).
    """

    def __init__(self, in_channels: int, channels: tuple[int, int, int], stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.sepconv1 = SeparableConv2d(in_channels, channels[0], dilation=dilation, depthwise_norm=True)
        self.sepconv2 = SeparableConv2d(channels[0], channels[1], dilation=dilation, depthwise_norm=True)
        self.sepconv3 = SeparableConv2d(channels[1], channels[2], stride=stride, dilation=dilation, depthwise_norm=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels[2]:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels[2], 1, stride=stride, bias=False), nn.BatchNorm2d(channels[2])
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.sepconv2(self.sepconv1(x))
        return self.sepconv3(hidden) + self.shortcut(x), hidden


class Xception65(Backbone):
    """(N, in_channels, H, W) -> 5 maps, the last at each stride.

    ``channels`` = (64, 256, 728, 1024, 2048) at ``strides`` (2, 4, 8, 16, 32), capped at ``output_stride``.
    """

    channels = (64, 256, 728, 1024, 2048)

    def __init__(self, in_channels: int = 3, output_stride: int = 32) -> None:
        super().__init__(output_stride)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            ConvBNReLU(32, 64, 3),
        )
        schedule = DilationSchedule(output_stride)
        schedule.downsample(2)  # the stem
        blocks: list[XceptionBlock] = []
        # (input channels, block channels, stride) for entry flow, middle flow and the exit block.
        layout = [(64, (128, 128, 128), 2), (128, (256, 256, 256), 2), (256, (728, 728, 728), 2)]
        layout += [(728, (728, 728, 728), 1)] * MIDDLE_REPEATS
        layout += [(728, (728, 1024, 1024), 2)]
        for block_in, block_channels, block_stride in layout:
            # A block whose stride is replaced by dilation keeps the previous rate; later ones get the new one.
            rate = schedule.rate
            kept = schedule.downsample(block_stride) if block_stride > 1 else 1
            blocks.append(XceptionBlock(block_in, block_channels, kept, rate))
        rate = schedule.rate
        self.blocks = nn.ModuleList(blocks)
        self.exit = nn.Sequential(
            SeparableConv2d(1024, 1536, dilation=rate, depthwise_norm=True),
            SeparableConv2d(1536, 1536, dilation=rate, depthwise_norm=True),
            SeparableConv2d(1536, 2048, dilation=rate, depthwise_norm=True),
        )
        self.strides = self.capped((2, 4, 8, 16, 32))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = [x]
        for index, block in enumerate(self.blocks):
            x, hidden = block(x)
            # The hidden maps of the 256 and 728 entry blocks and of the exit block are the last at
            # strides 4, 8 and 16.
            if index in (1, 2, len(self.blocks) - 1):
                features.append(hidden)
        features.append(self.exit(x))
        return features
