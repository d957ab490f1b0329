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

# Channels of each 3x3 convolution; "M" is a 2x2 max-pool.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16_layers(in_channels: int = 3, first_padding: int = 1, ceil_mode: bool = True) -> nn.Sequential:
    """torchvision's ``vgg16().features``, with the first padding and the pooling mode exposed."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=ceil_mode))
        else:
            padding = first_padding if not layers else 1
            layers += [nn.Conv2d(channels, item, 3, padding=padding), nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(*layers)


class VGG16(nn.Module):
    """VGG16 convolutional layers: (N, C, H, W) -> the five pooled maps pool1 ... pool5.

    ``channels`` and ``strides`` describe the returned maps: 64, 128, 256, 512, 512 channels at
    strides 2, 4, 8, 16, 32 (``ceil(H / stride)`` pixels each with ``first_padding=1``).
    """

    channels = (64, 128, 256, 512, 512)
    strides = (2, 4, 8, 16, 32)

    def __init__(self, in_channels: int = 3, first_padding: int = 1, ceil_mode: bool = True) -> None:
        super().__init__()
        self.features = vgg16_layers(in_channels, first_padding, ceil_mode)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        pooled = []
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                pooled.append(x)
        return pooled
