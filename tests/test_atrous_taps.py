"""Atrous convolution as one GEMM and shifted sums: equal to nn.Conv2d, and swapped in by the fast path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pixelwise import create_model
from pixelwise.infer.fast import optimize_for_cpu
from pixelwise.nn.atrous_taps import AtrousByTaps, FasterAtrous, qualifies


@pytest.mark.parametrize("size, rate, kernel, bias", [
    ((64, 64), 12, 3, True), ((64, 64), 36, 3, True), ((13, 17), 24, 3, False),  # 24 > 17: side taps dropped
    ((5, 3), 2, 3, True), ((1, 1), 6, 3, True), ((20, 9), 3, 5, True),
])
def test_equals_the_convolution_in_fp32(size, rate, kernel, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(24, 10, kernel, padding=rate * (kernel - 1) // 2, dilation=rate, bias=bias).eval()
    x = torch.randn(2, 24, *size)
    with torch.no_grad():
        expected = conv(x)
        for layout in (torch.contiguous_format, torch.channels_last):
            actual = AtrousByTaps(conv)(x.contiguous(memory_format=layout))
            assert actual.shape == expected.shape
            assert (actual - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())


def test_only_convolutions_it_reproduces_qualify():
    assert qualifies(nn.Conv2d(4, 4, 3, padding=6, dilation=6))
    assert not qualifies(nn.Conv2d(4, 4, 3, padding=1))  # rate 1: a plain convolution
    assert not qualifies(nn.Conv2d(4, 4, 3, padding=6, dilation=6, groups=4))  # depthwise
    assert not qualifies(nn.Conv2d(4, 4, 3, padding=6, dilation=6, stride=2))
    assert not qualifies(nn.Conv2d(4, 4, 3, padding=5, dilation=6))  # not "same"
    assert not qualifies(nn.Conv2d(4, 4, 3, padding=6, dilation=6, padding_mode="reflect"))
    with pytest.raises(ValueError, match="stride-1, ungrouped, same-padded"):
        AtrousByTaps(nn.Conv2d(4, 4, 3, padding=1))


def test_faster_atrous_decides_once_per_shape():
    conv = nn.Conv2d(8, 8, 3, padding=2, dilation=2).eval()
    faster = FasterAtrous(conv)
    with torch.no_grad():
        for size in ((9, 9), (9, 9), (12, 7)):
            x = torch.randn(1, 8, *size)
            torch.testing.assert_close(faster(x), conv(x), atol=1e-5, rtol=1e-5)
    assert set(faster.by_taps) == {(1, 9, 9, torch.float32), (1, 12, 7, torch.float32)}


@pytest.mark.parametrize("name, options", [("deeplabv3", {"backbone": "mobilenet_v2"}),
                                           ("deeplabv2", {"backbone": "resnet50"})])
def test_fast_path_swaps_every_dilated_convolution_and_agrees(name, options):
    torch.manual_seed(0)
    model = create_model(name, 4, **options).eval()
    x = torch.randn(1, 3, 65, 49)
    fast = optimize_for_cpu(model, x)
    dilated = [m for m in model.modules() if qualifies(m)]
    assert dilated and sum(isinstance(m, FasterAtrous) for m in fast.modules()) == len(dilated)
    with torch.no_grad():
        expected = model(x)
        actual = fast(x.contiguous(memory_format=torch.channels_last))
    assert (actual - expected).abs().max().item() <= 1e-4 * max(1.0, expected.abs().max().item())
