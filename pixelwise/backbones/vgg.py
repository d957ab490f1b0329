"""VGG16 (Simonyan & Zisserman 2015) as a feature extractor.

The layers keep torchvision's names (``features.0`` ... ``features.30``) so that its ImageNet weights
load unchanged. Two switches matter for segmentation:

- ``ceil_mode=True`` pools partial windows at the bottom/right border, so every input size >= 1
  survives five poolings (1 -> 1 -> ... -> 1) and feature pixel ``j`` of stride ``s`` is centred on
  input pixel ``s * j + (s - 1) / 2``.
- ``first_padding=100`` is FCN's trick: padding the first convolution by 100 lets the 7x7 fc6 fit
  even a 1x1 input; the decoder later crops the surplus away.
"""

from __future__ import annotations

import torch
from torch import nn

from pixelwise.backbones.base import Backbone, DilationSchedule, scaled_rates

# Channels of each 3x3 convolution; "M" is a 2x2 max-pool.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16_layers(
    in_channels: int = 3, first_padding: int = 1, ceil_mode: bool = True, width_divisor: int = 1
) -> nn.Sequential:
    """torchvision's ``vgg16().features``, with the first padding, the pooling mode and the width exposed.

    ``width_divisor`` divides every convolution's channels: the same geometry (sizes, strides, receptive
    fields) at a fraction of the cost, for models trained in seconds on a CPU (the lecture gallery).
    """
    if width_divisor < 1 or 64 % width_divisor:
        raise ValueError(f"width_divisor must divide 64, got {width_divisor}")
    layers: list[nn.Module] = []
    channels = in_channels
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=ceil_mode))
        else:
            padding = first_padding if not layers else 1
            layers += [nn.Conv2d(channels, item // width_divisor, 3, padding=padding), nn.ReLU(inplace=True)]
            channels = item // width_divisor
    return nn.Sequential(*layers)


class VGG16(Backbone):
    """VGG16 convolutional layers: (N, C, H, W) -> the five pooled maps pool1 ... pool5.

    ``channels`` and ``strides`` describe the returned maps: 64, 128, 256, 512, 512 channels at
    strides 2, 4, 8, 16, 32 (``ceil(H / stride)`` pixels each with ``first_padding=1``), every channel
    count divided by ``width_divisor``. The backbone of FCN and Hypercolumns, whose convolutionalized fc6/fc7
    live in the models; output stride 32 only.
    """

    channels = (64, 128, 256, 512, 512)
    strides = (2, 4, 8, 16, 32)
    output_strides = (32,)

    def __init__(
        self, in_channels: int = 3, output_stride: int = 32, first_padding: int = 1, ceil_mode: bool = True,
        width_divisor: int = 1,
    ) -> None:
        super().__init__(output_stride)
        self.features = vgg16_layers(in_channels, first_padding, ceil_mode, width_divisor)
        self.channels = tuple(channels // width_divisor for channels in VGG16.channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        pooled = []
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                pooled.append(x)
        return pooled


class VGG16LargeFOV(Backbone):
    """DeepLab-LargeFOV's VGG16 (Chen et al., ICLR 2015): (N, C, H, W) -> pool1 ... pool5 and fc7.

    The five poolings are 3x3 with stride 2 and padding 1 (DeepLab's), and those past
    ``output_stride`` get stride 1, with every later 3x3 convolution dilated by the stride given up:
    at output stride 8, pool4 and pool5 have stride 1 and conv5 dilation 2. fc6 is a 3x3 convolution
    with 1024 channels and dilation 12 (at output stride 8; ``12 * 8 / output_stride`` otherwise,
    the same field of view), fc7 a 1x1 convolution with 1024 channels; ``classifier.0`` and
    ``classifier.3`` are named like torchvision's fc6 and fc7, whose ImageNet weights DeepLab subsampled.

    ``channels`` (64, 128, 256, 512, 512, 1024) at ``strides`` (2, 4, 8, 16, 32, 32) capped at
    ``output_stride``; each map has ``ceil(H / stride)`` pixels.
    """

    channels = (64, 128, 256, 512, 512, 1024)

    def __init__(self, in_channels: int = 3, output_stride: int = 8, dropout: float = 0.5) -> None:
        super().__init__(output_stride)
        self.features = vgg16_layers(in_channels)
        schedule = DilationSchedule(output_stride)
        for index, layer in enumerate(self.features):
            if isinstance(layer, nn.MaxPool2d):
                self.features[index] = nn.MaxPool2d(3, stride=schedule.downsample(2), padding=1)
            elif isinstance(layer, nn.Conv2d) and schedule.rate > 1:
                layer.dilation, layer.padding = (schedule.rate,) * 2, (schedule.rate,) * 2
        (fc6_rate,) = scaled_rates((12,), 8, output_stride)
        self.classifier = nn.Sequential(
            nn.Conv2d(512, 1024, 3, padding=fc6_rate, dilation=fc6_rate),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(1024, 1024, 1),  # fc7
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.strides = self.capped((2, 4, 8, 16, 32, 32))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                features.append(x)
        features.append(self.classifier(x))
        return features
