"""Atrous (dilated) and depthwise-separable convolutions with "same" padding for any dilation.

Atrous convolution (Chen et al., DeepLab) spaces the 3x3 taps ``dilation`` pixels apart: the field of
view grows to ``2 * dilation + 1`` with no extra parameters and no loss of resolution. Padding by
``dilation`` keeps a stride-1 output the same size as its input.

A depthwise-separable convolution (Chollet, Xception) factors a KxK convolution into a per-channel
KxK depthwise filter and a 1x1 pointwise mix: ``C*K*K + C*C_out`` weights instead of ``C*K*K*C_out``.
"""

from __future__ import annotations

from torch import nn


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps a stride-1 convolution's output the size of its input (odd kernels)."""
    return dilation * (kernel_size - 1) // 2


def atrous_conv3x3(
    in_channels: int, out_channels: int, dilation: int = 1, stride: int = 1, bias: bool = True
) -> nn.Conv2d:
    """A 3x3 convolution with holes: taps ``dilation`` apart, "same" padding."""
    return nn.Conv2d(
        in_channels, out_channels, 3, stride=stride,
        padding=same_padding(3, dilation), dilation=dilation, bias=bias,
    )


class SeparableConv2d(nn.Sequential):
    """Depthwise KxK (one filter per channel, optionally dilated) then pointwise 1x1.

    ``depthwise_norm=True`` puts BatchNorm + ReLU between the two, as the DeepLabv3+ Xception does;
    ``norm=True`` puts BatchNorm (and ReLU if ``activation``) after the pointwise convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        depthwise_norm: bool = False,
        norm: bool = True,
        activation: bool = True,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels, in_channels, kernel_size, stride=stride,
                padding=same_padding(kernel_size, dilation), dilation=dilation,
                groups=in_channels, bias=False,
            )
        ]
        if depthwise_norm:
            layers += [nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(in_channels, out_channels, 1, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm2d(out_channels))
        if activation:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ConvBNReLU(nn.Sequential):
    """KxK convolution ("same" padding, optional dilation) + BatchNorm + ReLU: the common unit of heads."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels, out_channels, kernel_size,
                padding=same_padding(kernel_size, dilation), dilation=dilation, bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
