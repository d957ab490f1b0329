"""Upsampling two ways: a learnable transposed convolution, or interpolation followed by a convolution.

Both produce exactly ``factor * H`` by ``factor * W`` and put output pixel ``i`` at input coordinate
``(i + 0.5) / factor - 0.5``, the same grid as ``F.interpolate(..., align_corners=False)``. Because
every mode lands on the same grid, a decoder can switch modes without changing its crop offsets.

A transposed convolution whose kernel is not a multiple of its stride overlaps unevenly and paints a
checkerboard (Odena et al., "Deconvolution and Checkerboard Artifacts", Distill 2016); interpolating
first and convolving after cannot, since every output pixel sees the same number of inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

UpsamplingMode = Literal["transposed", "bilinear", "nearest"]
UPSAMPLING_MODES = ("transposed", "bilinear", "nearest")
# Score upsampling adds parameter-free interpolation, the DeepLab papers' choice, to the learnable modes.
SCORE_UPSAMPLINGS = ("interpolate", *UPSAMPLING_MODES)


def bilinear_kernel(kernel_size: int) -> torch.Tensor:
    """The (kernel_size, kernel_size) weights of bilinear interpolation by ``ceil(kernel_size / 2)``.

    This is FCN's initialisation of its upsampling layers: a transposed convolution with these
    weights, stride ``f`` and kernel ``2f`` interpolates bilinearly.
    """
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(kernel_size, dtype=torch.float64) - center).abs() / factor
    return torch.outer(taps, taps).float()


class Upsample(nn.Module):
    """Upsample (N, C_in, H, W) to (N, C_out, factor*H, factor*W).

    mode="transposed": ``ConvTranspose2d(kernel_size, stride=factor)``; with ``kernel_size=2*factor``
    (the default) and ``C_in == C_out`` it starts as exact bilinear interpolation per channel, as in FCN.
    mode="bilinear" | "nearest": ``F.interpolate`` then a 3x3 convolution; with ``C_in == C_out`` the
    convolution starts as the identity, so the layer starts as plain interpolation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        factor: int = 2,
        mode: UpsamplingMode = "transposed",
        kernel_size: int | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if mode not in UPSAMPLING_MODES:
            raise ValueError(f"upsampling must be one of {UPSAMPLING_MODES}, got {mode!r}")
        if factor < 1:
            raise ValueError(f"upsampling factor must be >= 1, got {factor}")
        self.factor = factor
        self.mode = mode
        if mode == "transposed":
            kernel_size = kernel_size or 2 * factor
            if kernel_size < factor:
                raise ValueError(f"kernel_size {kernel_size} is smaller than the factor {factor}")
            # Trim the overhang of (kernel_size - factor) pixels evenly so the output is exactly
            # factor * H and sits on the interpolation grid; output_padding restores an odd remainder.
            padding = (kernel_size - factor + 1) // 2
            output_padding = 2 * padding - (kernel_size - factor)
            self.conv = nn.ConvTranspose2d(
                in_channels, out_channels, kernel_size, stride=factor,
                padding=padding, output_padding=output_padding, bias=bias,
            )
            if in_channels == out_channels and kernel_size == 2 * factor:
                self._init_bilinear()
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)
            if in_channels == out_channels:
                nn.init.dirac_(self.conv.weight)
                if bias:
                    nn.init.zeros_(self.conv.bias)

    def _init_bilinear(self) -> None:
        weight = torch.zeros_like(self.conv.weight)
        kernel = bilinear_kernel(self.conv.kernel_size[0])
        for channel in range(weight.shape[0]):
            weight[channel, channel] = kernel
        with torch.no_grad():
            self.conv.weight.copy_(weight)
            if self.conv.bias is not None:
                self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "transposed":
            return self.conv(x)
        align = {"align_corners": False} if self.mode == "bilinear" else {}
        return self.conv(F.interpolate(x, scale_factor=self.factor, mode=self.mode, **align))


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize logits (N, C, h, w) to ``size`` (H, W): the final step of every model."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ScoreUpsample(nn.Module):
    """(N, C, h, w) -> (N, C, *size), the last step of a model that predicts at a stride.

    ``mode="interpolate"`` is parameter-free bilinear interpolation; the other modes are ``Upsample`` by the
    integer ``factor`` (a learnable layer), then ``resize_to`` trims the ``ceil`` surplus to the exact size.
    """

    def __init__(self, channels: int, factor: int, mode: str = "interpolate") -> None:
        super().__init__()
        if mode not in SCORE_UPSAMPLINGS:
            raise ValueError(f"upsampling must be one of {SCORE_UPSAMPLINGS}, got {mode!r}")
        self.upsample = None if mode == "interpolate" else Upsample(channels, channels, factor, mode, bias=False)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        if self.upsample is not None:
            x = self.upsample(x)
        return resize_to(x, tuple(size))
