"""MobileNetV2 (Sandler et al. 2018) and MobileNetV3-Large (Howard et al. 2019): the CPU-friendly backbones.

The layers are torchvision's ``features`` (same names, ``features.0`` ...), so its ImageNet weights load
unchanged. The returned maps are the last block at each stride (2, 4, 8, 16, 32). Past
``output_stride`` every stride-2 depthwise convolution becomes stride 1 and it and every later
depthwise convolution are dilated by the stride given up, which for MobileNetV3 at output stride 16 is
exactly torchvision's ``mobilenet_v3_large(dilated=True)`` (the DeepLabv3 backbone).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenet_v2, mobilenet_v3_large

from pixelwise.backbones.base import Backbone, DilationSchedule, out_channels
from pixelwise.nn.conv import same_padding

MOBILENETS = {"mobilenet_v2": mobilenet_v2, "mobilenet_v3_large": mobilenet_v3_large}


class MobileNet(Backbone):
    """(N, in_channels, H, W) -> the last map at each stride: 5 maps at strides (2, 4, 8, 16, 32) capped
    at ``output_stride``. MobileNetV2 channels (16, 24, 32, 96, 1280); MobileNetV3-Large (16, 24, 40, 112, 960).
    """

    def __init__(self, version: str = "mobilenet_v2", in_channels: int = 3, output_stride: int = 32) -> None:
        super().__init__(output_stride)
        if version not in MOBILENETS:
            raise ValueError(f"unknown MobileNet {version!r}; choose from {sorted(MOBILENETS)}")
        self.features = MOBILENETS[version](weights=None).features
        if in_channels != 3:
            first = self.features[0][0]
            self.features[0][0] = nn.Conv2d(
                in_channels, first.out_channels, first.kernel_size, first.stride, first.padding, bias=False
            )
        strides = []
        self._taps: list[int] = []
        schedule = DilationSchedule(output_stride)
        for index, block in enumerate(self.features):
            for conv in (m for m in block.modules() if isinstance(m, nn.Conv2d)):
                if conv.stride[0] > 1:
                    if index > 0:  # the block before a downsampling one is the last at its stride
                        self._taps.append(index - 1)
                        strides.append(schedule.stride)
                    conv.stride = (schedule.downsample(conv.stride[0]),) * 2
                if conv.kernel_size[0] > 1 and schedule.rate > 1:
                    conv.dilation = (schedule.rate, schedule.rate)
                    conv.padding = (same_padding(conv.kernel_size[0], schedule.rate),) * 2
        self._taps.append(len(self.features) - 1)
        strides.append(schedule.stride)
        self.strides = tuple(strides)
        self.channels = tuple(out_channels(self.features[index]) for index in self._taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, block in enumerate(self.features):
            x = block(x)
            if index in self._taps:
                features.append(x)
        return features

