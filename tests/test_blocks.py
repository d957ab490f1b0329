"""The lecture's building blocks, each against an independent reference."""

import pytest
import torch
import torch.nn.functional as F
import torchvision

import pixelwise
from pixelwise.nn import SeparableConv2d, Upsample, atrous_conv3x3, center_crop, crop_at, pad_to_match
from pixelwise.nn.convolutionalize import linear_to_conv


@pytest.mark.parametrize("factor", [2, 4, 8, 16, 32])
@pytest.mark.parametrize("size", [(9, 11), (5, 7)])
def test_bilinear_transposed_conv_equals_interpolate_away_from_borders(factor, size):
    up = Upsample(4, 4, factor, "transposed")
    x = torch.randn(2, 4, *size)
    with torch.no_grad():
        ours = up(x)
    reference = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert ours.shape == reference.shape == (2, 4, size[0] * factor, size[1] * factor)
    border = factor  # interpolate clamps at the edge, the transposed convolution sees zeros there
    inner = (slice(None), slice(None), slice(border, -border), slice(border, -border))
    torch.testing.assert_close(ours[inner], reference[inner], atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_interpolate_then_convolve_starts_as_plain_interpolation(mode):
    up = Upsample(3, 3, 4, mode)
    x = torch.randn(1, 3, 6, 7)
    align = {"align_corners": False} if mode == "bilinear" else {}
    with torch.no_grad():
        torch.testing.assert_close(up(x), F.interpolate(x, scale_factor=4, mode=mode, **align))


def test_transposed_conv_with_kernel_3_stride_2_paints_a_checkerboard():
    up = Upsample(1, 1, 2, "transposed", kernel_size=3, bias=False)
    torch.nn.init.ones_(up.conv.weight)
    with torch.no_grad():
        out = up(torch.ones(1, 1, 16, 16))[0, 0, 2:-2, 2:-2]
    # Uneven overlap: rows/columns alternate between one and two kernel taps, period 2.
    assert out.std() > 0.5
    torch.testing.assert_close(out[2:], out[:-2])
    torch.testing.assert_close(out[:, 2:], out[:, :-2])
    assert not torch.allclose(out[1:], out[:-1])


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_upsample_then_convolve_is_flat_on_a_constant(mode):
    up = Upsample(1, 1, 2, mode, bias=False)
    torch.nn.init.ones_(up.conv.weight)
    with torch.no_grad():
        out = up(torch.ones(1, 1, 16, 16))[0, 0, 1:-1, 1:-1]  # the 3x3 conv's zero padding touches the rim
    assert out.std() < 1e-6
    torch.testing.assert_close(out, torch.full_like(out, 9.0))


@pytest.mark.parametrize("dilation", [1, 2, 6, 12])
def test_atrous_conv_equals_a_dense_kernel_with_holes(dilation):
    conv = atrous_conv3x3(3, 5, dilation)
    x = torch.randn(1, 3, 29, 31)
    # The equivalent dense kernel: (2d+1) x (2d+1) with the 3x3 taps d apart and zeros between.
    dense = torch.zeros(5, 3, 2 * dilation + 1, 2 * dilation + 1)
    dense[:, :, ::dilation, ::dilation] = conv.weight.detach()
    with torch.no_grad():
        ours = conv(x)
        reference = F.conv2d(x, dense, conv.bias, padding=dilation)
    assert ours.shape == (1, 5, 29, 31)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("stride", "dilation"), [(1, 1), (1, 4), (2, 1)])
def test_separable_conv_equals_the_factored_full_conv(stride, dilation):
    conv = SeparableConv2d(4, 6, stride=stride, dilation=dilation, norm=False, activation=False)
    depthwise, pointwise = conv[0], conv[1]
    assert sum(p.numel() for p in conv.parameters()) == 4 * 9 + 4 * 6 + 6
    # W[o, i] = P[o, i] * D[i]: the full convolution a separable one factors.
    full = pointwise.weight[:, :, 0, 0, None, None] * depthwise.weight[:, 0][None]
    x = torch.randn(2, 4, 17, 19)
    with torch.no_grad():
        reference = F.conv2d(x, full, pointwise.bias, stride=stride, padding=dilation, dilation=dilation)
        torch.testing.assert_close(conv(x), reference, atol=1e-5, rtol=1e-5)
    assert conv(x).shape[-2:] == ((17 - 1) // stride + 1, (19 - 1) // stride + 1)


def test_skip_alignment_on_odd_sizes():
    x = torch.arange(7 * 9.0).view(1, 1, 7, 9)
    cropped = center_crop(x, (4, 4))
    assert torch.equal(cropped, x[..., 1:5, 2:6])
    padded = pad_to_match(cropped, (7, 9))
    assert padded.shape[-2:] == (7, 9) and torch.equal(padded[..., 1:5, 2:6], cropped)
    assert torch.equal(crop_at(x, 2, (3, 3)), x[..., 2:5, 2:5])
    with pytest.raises(ValueError, match="cannot crop a 7x9 map to the larger 8x9"):
        center_crop(x, (8, 9))
    with pytest.raises(ValueError, match="cannot pad a 7x9 map to the smaller 6x9"):
        pad_to_match(x, (6, 9))
    with pytest.raises(ValueError, match="does not fit"):
        crop_at(x, 5, (3, 3))


def test_convolutionalized_vgg16_equals_the_classifier():
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).eval()
    fully_convolutional = pixelwise.convolutionalize(vgg).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        logits = vgg(x)
        scores = fully_convolutional(x)
        assert scores.shape == (2, 1000, 1, 1)
        assert (scores[:, :, 0, 0] - logits).abs().max() <= 1e-4
        # A larger input gives a spatial score map: floor(H / 32) - 6 positions per side.
        assert fully_convolutional(torch.randn(1, 3, 288, 352)).shape == (1, 1000, 3, 5)


def test_linear_to_conv_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match="cannot read a 3x2x2 map"):
        linear_to_conv(torch.nn.Linear(10, 4), 3, 2)
