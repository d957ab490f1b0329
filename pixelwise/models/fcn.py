"""FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer & Darrell, CVPR 2015) on a VGG16 backbone.

VGG16's fully connected fc6/fc7 are convolutions here (see ``pixelwise.nn.convolutionalize``). The
coarse class scores (stride 32) are upsampled and, for 16s and 8s, summed with scores predicted from
pool4 (stride 16) and pool3 (stride 8): deep layers say *what*, shallow layers say *where*.

Alignment. As in the paper, conv1_1 is padded by 100 pixels so that the 7x7 fc6 fits any input, and
every upsampled map is cropped to line up with the map it joins. Each map's pixel ``j`` is centred
on input coordinate ``offset + stride * j``:

=============  ======  =======
map            stride  offset
=============  ======  =======
pool3          8       -95.5
pool4          16      -91.5
score_fr       32      12.5
x2 of score    16      4.5      -> crop pool4 scores at (4.5 + 91.5) / 16 = 6
x2 again       8       0.5      -> crop pool3 scores at (0.5 + 95.5) / 8 = 12
final          1       -3       -> crop the output at 3
=============  ======  =======

These offsets hold for every input size and every ``upsampling`` mode, because all of our upsamplers
put output pixel ``i`` at ``(i + 0.5) / f - 0.5`` (the paper's are Caffe deconvolutions that keep a
``f / 2`` border, which is why its crop offsets read 5, 9 and 31 instead).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from pixelwise.backbones import build_backbone, check_output_stride
from pixelwise.backbones.pretrained import load_backbone_weights
from pixelwise.models.base import SegmentationModel
from pixelwise.nn.skip import crop_at
from pixelwise.nn.upsample import Upsample, UpsamplingMode

# Crop offsets derived in the module docstring.
POOL4_OFFSET, POOL3_OFFSET, OUTPUT_OFFSET = 6, 12, 3


class FCN(SegmentationModel):
    """Fully convolutional VGG16: (N, in_channels, H, W) -> logits (N, num_classes, H, W).

    ``output_stride`` 32, 16 or 8 gives FCN-32s, -16s or -8s. The skip score layers start at zero,
    as in the paper, so a net fine-tuned from the coarser variant starts where that one ended.
    ``pretrained_backbone`` (True or a file) loads ImageNet VGG16 into the convolutions and fc6/fc7.
    ``width_divisor`` divides the channels of VGG16 and fc6/fc7 (4096): the same offsets and strides, a
    fraction of the cost, for CPU demonstrations; ImageNet weights need the full width.
    """

    def __init__(
        self,
        num_classes: int = 21,
        output_stride: int = 8,
        in_channels: int = 3,
        upsampling: UpsamplingMode = "transposed",
        dropout: float = 0.5,
        pretrained_backbone: bool | str | os.PathLike = False,
        width_divisor: int = 1,
    ) -> None:
        super().__init__()
        if pretrained_backbone and width_divisor != 1:
            raise ValueError(f"pretrained_backbone needs the full VGG16 width, got width_divisor={width_divisor}")
        # FCN-32s/16s/8s: the stride of the finest scores fused (the VGG16 itself always runs at 32).
        self.output_stride = check_output_stride(output_stride)
        self.backbone = build_backbone("vgg16", in_channels, first_padding=100, width_divisor=width_divisor)
        pool3_channels, pool4_channels, pool5_channels = self.backbone.channels[2:]
        fc_channels = 4096 // width_divisor
        self.classifier = nn.Sequential(
            nn.Conv2d(pool5_channels, fc_channels, 7),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(fc_channels, fc_channels, 1),  # fc7
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(fc_channels, num_classes, 1),  # score_fr
        )
        if output_stride <= 16:
            self.score_pool4 = _zero_conv1x1(pool4_channels, num_classes)
            self.upscore2 = Upsample(num_classes, num_classes, 2, upsampling, bias=False)
        if output_stride == 8:
            self.score_pool3 = _zero_conv1x1(pool3_channels, num_classes)
            self.upscore_pool4 = Upsample(num_classes, num_classes, 2, upsampling, bias=False)
        self.upscore_final = Upsample(num_classes, num_classes, output_stride, upsampling, bias=False)
        if pretrained_backbone:
            # The paper's start: ImageNet VGG16 with fc6/fc7 convolutionalized (score layers stay new).
            vgg = nn.ModuleDict({"features": self.backbone.features, "classifier": self.classifier[:6]})
            load_backbone_weights(vgg, "vgg16", pretrained_backbone)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, pool3, pool4, pool5 = self.backbone(x)
        score = self.classifier(pool5)
        if self.output_stride <= 16:
            score = self.upscore2(score)
            score = score + crop_at(self.score_pool4(pool4), POOL4_OFFSET, score.shape[-2:])
        if self.output_stride == 8:
            score = self.upscore_pool4(score)
            score = score + crop_at(self.score_pool3(pool3), POOL3_OFFSET, score.shape[-2:])
        return crop_at(self.upscore_final(score), OUTPUT_OFFSET, x.shape[-2:])


def _zero_conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv
