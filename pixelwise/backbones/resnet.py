"""ResNet-34, -50 and -101 (He et al. 2016) as atrous feature extractors, as in DeepLab v2 and v3.

The layers are torchvision's own (``conv1``, ``bn1``, ``layer1`` ... ``layer4``, same names), so its
ImageNet weights load unchanged. Past ``output_stride`` a stage keeps its resolution: its stride-2
convolution becomes stride 1 and every later 3x3 convolution is dilated by the stride it gave up
(the first block of a dilated stage keeps the previous rate, as DeepLab's and torchvision's do).
torchvision builds ResNet-34's basic blocks without dilation, so here every 3x3 convolution of a dilated
stage takes the stage's rate (as smp's ``make_dilated``).

Multi-grid (DeepLabv3, section 3.2): the three units of the last stage get rates
``base_rate * (1, 2, 4)`` instead of ``base_rate`` each, where ``base_rate`` is the dilation the
output stride gives that stage (2 at output stride 16).

Every strided layer pads by ``(kernel - 1) // 2``, so a stride-``s`` map has ``ceil(H / s)`` pixels
for every H >= 1, a 1x1 input included.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models import resnet34, resnet50, resnet101

from pixelwise.backbones.base import Backbone, DilationSchedule, out_channels
from pixelwise.nn.conv import same_padding

RESNETS = {"resnet34": resnet34, "resnet50": resnet50, "resnet101": resnet101}
BASIC_BLOCK_RESNETS = ("resnet34",)
STAGES = ("layer1", "layer2", "layer3", "layer4")
MAP_STRIDES = (2, 4, 8, 16, 32)  # the stem (conv1 + bn1 + relu), then the four stages
MULTI_GRID = (1, 2, 4)


class ResNet(Backbone):
    """(N, in_channels, H, W) -> [stem, layer1, layer2, layer3, layer4] maps.

    ``channels`` = (64, 256, 512, 1024, 2048) for ResNet-50/101, (64, 64, 128, 256, 512) for ResNet-34;
    ``strides`` = (2, 4, 8, 16, 32) capped at ``output_stride``. The stride-2 stem map is the U-Net decoder's
    last skip. ``multi_grid`` = (1, 2, 4) (or any rates, one per unit of ``layer4``) sets the last stage's
    unit rates.
    """

    def __init__(
        self,
        depth: str = "resnet50",
        in_channels: int = 3,
        output_stride: int = 32,
        multi_grid: Sequence[int] | None = None,
    ) -> None:
        super().__init__(output_stride)
        if depth not in RESNETS:
            raise ValueError(f"unknown ResNet {depth!r}; choose from {sorted(RESNETS)}")
        schedule = DilationSchedule(output_stride)
        schedule.downsample(4)  # conv1 and the max-pool, always kept
        # torchvision dilates layer2/3/4 by a flag each: a stage whose stride-2 step is not kept is dilated.
        dilate = [schedule.downsample(2) == 1 for _ in STAGES[1:]]
        if depth in BASIC_BLOCK_RESNETS:
            net = RESNETS[depth](weights=None)
            _dilate_basic_blocks(net, dilate)
        else:
            net = RESNETS[depth](weights=None, replace_stride_with_dilation=dilate)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        for name in STAGES:
            setattr(self, name, getattr(net, name))
        if multi_grid is not None:
            self._set_unit_rates(schedule.rate, multi_grid)
        self.strides = self.capped(MAP_STRIDES)
        self.channels = (net.conv1.out_channels, *(out_channels(getattr(net, name)[-1]) for name in STAGES))

    def _set_unit_rates(self, base_rate: int, multi_grid: Sequence[int]) -> None:
        units = list(self.layer4)
        if len(multi_grid) != len(units):
            raise ValueError(f"multi_grid needs one rate per unit of the last stage ({len(units)}), got {multi_grid}")
        for unit, rate in zip(units, multi_grid, strict=True):
            unit.conv2.dilation = (base_rate * rate,) * 2
            unit.conv2.padding = (same_padding(3, base_rate * rate),) * 2

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        features = [x]
        x = self.maxpool(x)
        for name in STAGES:
            x = getattr(self, name)(x)
            features.append(x)
        return features


def _dilate_basic_blocks(net: nn.Module, dilate: Sequence[bool]) -> None:
    """Trade the stride of ``layer2/3/4`` for dilation where ``dilate`` says so, in a basic-block ResNet."""
    rate = 1
    for name, dilated in zip(STAGES[1:], dilate, strict=True):
        stage = getattr(net, name)
        if dilated:
            rate *= 2
            stage[0].conv1.stride = stage[0].downsample[0].stride = (1, 1)
        for conv in (m for m in stage.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)):
            conv.dilation = (rate, rate)
            conv.padding = (same_padding(3, rate),) * 2
