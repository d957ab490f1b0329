"""Convolutionalization (Long et al., FCN, section 3.1).

A fully connected layer that reads a C x k x k feature map is a k x k convolution with C input
channels: the same weights, reshaped. Turned into convolutions, a classifier slides over any larger
input and yields a spatial map of scores instead of one score vector.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def linear_to_conv(linear: nn.Linear, in_channels: int, kernel_size: int) -> nn.Conv2d:
    """The k x k convolution computing ``linear`` on a (in_channels, k, k) input, weights copied exactly."""
    expected = in_channels * kernel_size * kernel_size
    if linear.in_features != expected:
        raise ValueError(
            f"a Linear with {linear.in_features} inputs cannot read a {in_channels}x{kernel_size}x{kernel_size} map"
        )
    conv = nn.Conv2d(in_channels, linear.out_features, kernel_size, bias=linear.bias is not None)
    with torch.no_grad():
        # nn.Flatten orders a (C, k, k) map channel-major, exactly as a conv weight is laid out.
        conv.weight.copy_(linear.weight.view(linear.out_features, in_channels, kernel_size, kernel_size))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def convolutionalize(vgg: nn.Module) -> nn.Sequential:
    """Turn a ``torchvision.models.vgg16`` classifier into a fully convolutional network.

    fc6 (25088 -> 4096) becomes a 7x7 convolution over pool5's 512 channels; fc7 and fc8 become 1x1
    convolutions. The returned network maps (N, 3, H, W) to (N, 1000, H', W') with
    ``H' = floor(H / 32) - 6`` (for H >= 224): at 224x224, H' = 1 and the scores equal the classifier's
    logits. torchvision's adaptive average pool is dropped: at 224x224 it is the identity.
    """
    classifier = getattr(vgg, "classifier", None)
    if not isinstance(classifier, nn.Sequential) or not hasattr(vgg, "features"):
        raise ValueError("convolutionalize expects a torchvision VGG with .features and .classifier")
    linears = [layer for layer in classifier if isinstance(layer, nn.Linear)]
    if len(linears) != 3:
        raise ValueError(f"expected a VGG classifier with 3 Linear layers, found {len(linears)}")
    fc6, fc7, fc8 = linears
    channels = fc6.in_features // 49
    return nn.Sequential(
        OrderedDict(
            features=vgg.features,
            fc6=linear_to_conv(fc6, channels, 7),
            relu6=nn.ReLU(inplace=True),
            drop6=nn.Dropout2d(0.5),
            fc7=linear_to_conv(fc7, fc7.in_features, 1),
            relu7=nn.ReLU(inplace=True),
            drop7=nn.Dropout2d(0.5),
            fc8=linear_to_conv(fc8, fc8.in_features, 1),
        )
    )
