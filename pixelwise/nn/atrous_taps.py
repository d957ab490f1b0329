"""Atrous convolution as one matrix product and shifted sums: the "atrous algorithm" rewritten for fast GEMMs.

A k x k convolution at rate r reads, for output pixel (y, x), the input at (y + r (i - c), x + r (j - c)) for
each tap (i, j), c = (k - 1) / 2. So it is the sum over taps of a 1x1 convolution of the input (one matrix
product per tap, all k^2 taps in one product) shifted by r (i - c), r (j - c):

    Y = X @ [W_00 | W_01 | ... | W_kk]        (H W x C_in) @ (C_in x k^2 C_out)
    out[y, x] = bias + sum_taps Y_tap[y + r (i - c), x + r (j - c)]      (the part that lands inside)

The multiply-adds are the convolution's; they all run in one large GEMM, which AMX and AVX512-BF16 execute at
their peak, where oneDNN's dilated bf16 convolution kernels reach about a tenth of it at DeepLab's rates
(12/24/36 on a 64x64 map: most taps of the larger rates read padding, and the kernels do not skip them).
A tap whose shift leaves the map entirely is dropped from the product. In fp32 the result equals the
convolution to float rounding (tested to 1e-5).

Which is faster depends on the machine (AMX or not, oneDNN's version) and the map's size, so
``pixelwise.infer.fast.optimize_for_cpu`` wraps every dilated convolution in :class:`FasterAtrous`, which
times both on the first input of each shape and keeps the faster (benchmarks/bench_inference.py).
"""

from __future__ import annotations

import time

import torch
from torch import nn

TRIALS = 2  # timed runs of each way per input shape (after one untimed run), the best kept


class AtrousByTaps(nn.Module):
    """An inference-only stand-in for a stride-1, ungrouped, "same"-padded dilated ``nn.Conv2d``.

    Takes and returns (N, C, H, W) tensors, fastest channels-last. Weights are copied from ``conv`` at
    construction, in its dtype.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not qualifies(conv):
            raise ValueError(f"AtrousByTaps takes a stride-1, ungrouped, same-padded dilated Conv2d, got {conv}")
        self.rate = conv.dilation[0]
        self.kernel = conv.kernel_size[0]
        self.out_channels = conv.out_channels
        weight = conv.weight.detach()  # (C_out, C_in, k, k) -> (C_in, k k C_out), taps major
        self.weight = nn.Parameter(weight.permute(1, 2, 3, 0).reshape(conv.in_channels, -1).contiguous(),
                                   requires_grad=False)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=weight.dtype)
        self.bias = nn.Parameter(bias.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        centre = (self.kernel - 1) // 2
        taps = [(i, j) for i in range(self.kernel) for j in range(self.kernel)
                if abs(self.rate * (i - centre)) < h and abs(self.rate * (j - centre)) < w]
        columns = self.weight.view(c, self.kernel * self.kernel, self.out_channels)
        if len(taps) < self.kernel * self.kernel:  # the taps that leave the map read only padding
            columns = columns[:, [i * self.kernel + j for i, j in taps]]
        pixels = x.permute(0, 2, 3, 1).reshape(n * h * w, c)  # a view when x is channels-last
        products = (pixels @ columns.reshape(c, -1)).view(n, h, w, len(taps), self.out_channels)
        out = self.bias.expand(n, h, w, self.out_channels).clone()
        for index, (i, j) in enumerate(taps):
            dy, dx = self.rate * (i - centre), self.rate * (j - centre)
            # out[y, x] += products[y + dy, x + dx] wherever both lie inside the map
            out[:, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] += \
                products[:, max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx), index]
        return out.permute(0, 3, 1, 2)  # channels-last (N, C, H, W)


class FasterAtrous(nn.Module):
    """A dilated convolution that runs as the convolution or as :class:`AtrousByTaps`, whichever was faster
    on the first input of the same shape and dtype (each timed ``TRIALS`` times, after a warm-up run)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.taps = AtrousByTaps(conv)
        self.by_taps: dict[tuple, bool] = {}  # (N, H, W, dtype) -> whether the taps were faster

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.shape[0], *x.shape[2:], x.dtype)
        if key not in self.by_taps:
            self.by_taps[key] = best_time(self.taps, x) < best_time(self.conv, x)
        return self.taps(x) if self.by_taps[key] else self.conv(x)


def best_time(module: nn.Module, x: torch.Tensor) -> float:
    module(x)
    times = []
    for _ in range(TRIALS):
        start = time.perf_counter()
        module(x)
        times.append(time.perf_counter() - start)
    return min(times)


def qualifies(conv: nn.Module, min_rate: int = 2) -> bool:
    """Whether ``conv`` is a square, odd, stride-1, ungrouped convolution at rate >= ``min_rate`` with "same"
    zero padding: the convolutions this rewrite reproduces exactly."""
    if type(conv) is not nn.Conv2d:
        return False
    k, rate = conv.kernel_size[0], conv.dilation[0]
    return (conv.kernel_size == (k, k) and k % 2 == 1 and k > 1 and conv.dilation == (rate, rate)
            and rate >= min_rate and conv.stride == (1, 1) and conv.groups == 1
            and conv.padding == (rate * (k - 1) // 2,) * 2 and conv.padding_mode == "zeros")
