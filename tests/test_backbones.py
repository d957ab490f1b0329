"""Backbones: the shared contract (channels, strides, ceil(H / stride) maps), dilation and structure."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v3_large, resnet50

from pixelwise.backbones import BACKBONES, DilationSchedule, build_backbone, scaled_rates
from pixelwise.backbones.vgg import VGG16
from pixelwise.nn.conv import SeparableConv2d

SIZES = [(1, 1), (2, 3), (31, 47)]
LIGHT = ("vgg16", "vgg16_largefov", "mobilenet_v2", "mobilenet_v3_large")


def output_strides(name: str) -> tuple[int, ...]:
    """The output strides a backbone can be built at (the contract's attribute, on its class)."""
    builder = BACKBONES[name]
    return getattr(builder, "func", builder).output_strides


@pytest.mark.parametrize(("name", "output_stride"), [(n, s) for n in BACKBONES for s in output_strides(n)])
def test_every_map_has_ceil_size_at_its_capped_stride(name: str, output_stride: int) -> None:
    backbone = build_backbone(name, output_stride=output_stride).eval()
    assert max(backbone.strides) == output_stride
    assert list(backbone.strides) == sorted(backbone.strides)
    sizes = SIZES + [(97, 101)] if name in LIGHT else SIZES
    with torch.no_grad():
        for height, width in sizes:
            features = backbone(torch.randn(1, 3, height, width))
            assert len(features) == len(backbone.channels) == len(backbone.strides)
            for feature, channels, stride in zip(features, backbone.channels, backbone.strides, strict=True):
                assert tuple(feature.shape) == (1, channels, math.ceil(height / stride), math.ceil(width / stride))


@pytest.mark.parametrize("name", list(BACKBONES))
def test_train_mode_grayscale_batch_of_two(name: str) -> None:
    output_stride = 16 if 16 in output_strides(name) else 32
    backbone = build_backbone(name, in_channels=1, output_stride=output_stride).train()
    features = backbone(torch.randn(2, 1, 17, 18))
    assert [f.shape[0] for f in features] == [2] * len(features)
    side = math.ceil(17 / output_stride)
    assert tuple(features[-1].shape[-2:]) == (side, side)


def test_resnet_matches_torchvision_dilated_resnet() -> None:
    """Output stride 8 is torchvision's replace_stride_with_dilation=[False, True, True]."""
    ours = build_backbone("resnet50", output_stride=8).eval()
    reference = resnet50(weights=None, replace_stride_with_dilation=[False, True, True]).eval()
    ours.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(1, 3, 37, 29)
    with torch.no_grad():
        expected = reference.layer4(reference.layer3(reference.layer2(reference.layer1(
            reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))))))
        assert torch.allclose(ours(x)[-1], expected, atol=1e-5)


@pytest.mark.parametrize(("output_stride", "rates"), [(16, [2, 4, 8]), (8, [4, 8, 16]), (32, [1, 2, 4])])
def test_multi_grid_unit_rates(output_stride: int, rates: list[int]) -> None:
    backbone = build_backbone("resnet50", output_stride=output_stride, multi_grid=(1, 2, 4))
    assert [unit.conv2.dilation[0] for unit in backbone.layer4] == rates
    assert [unit.conv2.padding[0] for unit in backbone.layer4] == rates


def test_multi_grid_is_resnet_only() -> None:
    with pytest.raises(ValueError, match="backbone 'mobilenet_v2' takes no option multi_grid"):
        build_backbone("mobilenet_v2", multi_grid=(1, 2, 4))


def test_unknown_backbone_and_output_stride() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'resnet18'"):
        build_backbone("resnet18")
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32, got 4"):
        build_backbone("xception65", output_stride=4)
    with pytest.raises(ValueError, match="output_stride must be 32, got 16"):
        build_backbone("vgg16", output_stride=16)  # the plain VGG16 of FCN and Hypercolumns has no atrous variant


def test_mobilenet_v3_at_stride_16_is_torchvisions_dilated_network() -> None:
    ours = build_backbone("mobilenet_v3_large", output_stride=16).eval()
    reference = mobilenet_v3_large(weights=None, dilated=True).features.eval()
    ours.features.load_state_dict(reference.state_dict())
    for mine, theirs in zip(ours.features.modules(), reference.modules(), strict=True):
        if isinstance(theirs, nn.Conv2d):
            assert (mine.stride, mine.padding, mine.dilation) == (theirs.stride, theirs.padding, theirs.dilation)
    x = torch.randn(1, 3, 45, 38)
    with torch.no_grad():
        assert torch.allclose(ours(x)[-1], reference(x), atol=1e-5)


def test_vgg16_large_fov_layout() -> None:
    backbone = build_backbone("vgg16_largefov", output_stride=8)
    pools = [m for m in backbone.features if isinstance(m, nn.MaxPool2d)]
    assert [p.stride for p in pools] == [2, 2, 2, 1, 1]
    convs = [m for m in backbone.features if isinstance(m, nn.Conv2d)]
    assert [c.dilation[0] for c in convs] == [1] * 10 + [2] * 3  # conv5 follows pool4 at stride 1
    fc6, fc7 = backbone.classifier[0], backbone.classifier[3]
    assert (fc6.out_channels, fc6.kernel_size, fc6.dilation, fc6.padding) == (1024, (3, 3), (12, 12), (12, 12))
    assert (fc7.out_channels, fc7.kernel_size) == (1024, (1, 1))
    # The torchvision names are shared with the FCN's VGG16, whose layers stay as they were.
    assert set(VGG16().state_dict()) <= set(backbone.state_dict())


def test_xception65_is_aligned_xception() -> None:
    backbone = build_backbone("xception65", output_stride=32)
    assert not any(isinstance(m, nn.MaxPool2d) for m in backbone.modules())
    separable = [m for m in backbone.modules() if isinstance(m, SeparableConv2d)]
    # 2 stem convolutions + 3 x (3 entry + 16 middle + 1 exit) block convolutions + 3 exit convolutions = 65.
    regular = [m for m in backbone.stem.modules() if isinstance(m, nn.Conv2d)]
    assert len(regular) + len(separable) == 65
    for conv in separable:  # BN + ReLU right after every depthwise convolution
        depthwise, norm, relu = conv[0], conv[1], conv[2]
        assert depthwise.groups == depthwise.in_channels
        assert isinstance(norm, nn.BatchNorm2d) and isinstance(relu, nn.ReLU)
    strided = [m[0] for m in separable if m[0].stride == (2, 2)]
    assert len(strided) == 4  # the four max-poolings, replaced by strided separable convolutions


@pytest.mark.parametrize(("output_stride", "kept", "rate"), [(8, [2, 2, 2, 1, 1], 4), (32, [2, 2, 2, 2, 2], 1)])
def test_dilation_schedule_trades_strides_past_the_output_stride(output_stride, kept, rate) -> None:
    schedule = DilationSchedule(output_stride)
    assert [schedule.downsample(2) for _ in range(5)] == kept
    assert (schedule.stride, schedule.rate) == (output_stride, rate)


def test_rates_rescale_to_keep_the_field_of_view() -> None:
    assert scaled_rates((6, 12, 18), 16, 8) == (12, 24, 36)  # DeepLab v3 at output stride 8
    assert scaled_rates((6, 12, 18, 24), 8, 16) == (3, 6, 9, 12)  # DeepLab v2's rates at 16
    assert build_backbone("vgg16_largefov", output_stride=16).classifier[0].dilation == (6, 6)
