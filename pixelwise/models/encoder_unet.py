"""U-Net on a classification encoder, smp's ``Unet("resnet34")``: ``create_model("unet", n, backbone=...)``.

The expanding path of Ronneberger et al. on any backbone of ``pixelwise.backbones`` (``"timm:<name>"``
included). From the deepest map up, each decoder block upsamples by 2, concatenates the encoder map at the
stride it reaches (the skip) and applies two 3x3 convolutions with BatchNorm and ReLU; a stride with no
encoder map (1, and 2 for an encoder whose first map is at stride 4) gets a block without a skip. A 3x3
convolution gives the class scores. With smp's defaults, decoder channels (256, 128, 64, 32, 16) and
parameter-free nearest-neighbour upsampling, ResNet-34 gives smp's network: 24.44M parameters (1 class).

Odd sizes, level by level, as in ``unet.py``. A backbone map at stride ``s`` has ``ceil(H / s)`` rows,
so a block upsamples ``ceil(H / 2s)`` rows to ``2 ceil(H / 2s) >= ceil(H / s)`` and crops the rows past
the image at the bottom/right; upsampled pixel ``i`` then lies on encoder pixel ``i``. For a 97 x 101
input and ResNet-34:

=======  ===========  ==========================  ==========================
stride   encoder map  way up: x2, then cropped to  skip concatenated
=======  ===========  ==========================  ==========================
32       4 x 4        (the bottom)
16       7 x 7        8 x 8 -> 7 x 7               layer3
8        13 x 13      14 x 14 -> 13 x 13           layer2
4        25 x 26      26 x 26 -> 25 x 26           layer1
2        49 x 51      50 x 52 -> 49 x 51           the stem (conv1)
1        97 x 101     98 x 102 -> 97 x 101         none
=======  ===========  ==========================  ==========================

smp instead requires H and W divisible by 32.
"""

from __future__ import annotations

import inspect
import os

import torch
from torch import nn

from pixelwise.backbones import build_backbone
from pixelwise.backbones.base import map_size
from pixelwise.models.base import SegmentationModel
from pixelwise.models.unet import DoubleConv, Padding, UNet
from pixelwise.nn.skip import crop_at
from pixelwise.nn.upsample import UPSAMPLING_MODES, Upsample

DECODER_CHANNELS = (256, 128, 64, 32, 16)  # smp's Unet
# "interpolate": smp's parameter-free nearest-neighbour x2; the learnable modes are ``pixelwise.nn.Upsample``.
ENCODER_UPSAMPLINGS = ("interpolate", *UPSAMPLING_MODES)


class EncoderUNet(SegmentationModel):
    """(N, in_channels, H, W) -> logits (N, num_classes, H, W) for any H, W >= 1.

    ``backbone`` is built at its own output stride (32 for the CNNs), so its maps form a pyramid of
    strides 2, 4, ..., one decoder block per halving: ``decoder_channels`` needs one width per block.
    """

    def __init__(
        self,
        num_classes: int = 2,
        backbone: str = "resnet34",
        in_channels: int = 3,
        decoder_channels: tuple[int, ...] = DECODER_CHANNELS,
        upsampling: str = "interpolate",
        pretrained_backbone: bool | str | os.PathLike = False,
    ) -> None:
        super().__init__()
        if upsampling not in ENCODER_UPSAMPLINGS:
            raise ValueError(f"upsampling must be one of {ENCODER_UPSAMPLINGS}, got {upsampling!r}")
        self.backbone = build_backbone(backbone, in_channels, None, pretrained_backbone)
        strides, channels = self.backbone.strides, self.backbone.channels
        levels = strides[-1].bit_length() - 1
        if strides[-1] != 2**levels or len(set(strides)) != len(strides):
            raise ValueError(f"backbone {backbone!r} has maps at strides {strides}; the U-Net decoder needs one map "
                             "per stride, at powers of 2")
        if len(decoder_channels) != levels:
            raise ValueError(f"decoder_channels needs {levels} widths for backbone {backbone!r} (stride "
                             f"{strides[-1]}), got {tuple(decoder_channels)}")
        skip_channels = dict(zip(strides, channels, strict=True))
        self.decoder_strides = tuple(strides[-1] >> level for level in range(1, levels + 1))  # 16, 8, 4, 2, 1
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        width = channels[-1]
        for stride, out_width in zip(self.decoder_strides, decoder_channels, strict=True):
            self.up.append(
                nn.Upsample(scale_factor=2, mode="nearest") if upsampling == "interpolate"
                else Upsample(width, width, 2, upsampling)
            )
            self.decoder.append(DoubleConv(width + skip_channels.get(stride, 0), out_width, 1, batch_norm=True))
            width = out_width
        self.head = nn.Conv2d(width, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        skips = dict(zip(self.backbone.strides, features, strict=True))
        y = features[-1]
        for stride, up, block in zip(self.decoder_strides, self.up, self.decoder, strict=True):
            y = crop_at(up(y), 0, map_size(x.shape[-2:], stride))  # drop the rows past the image
            if stride in skips:
                y = torch.cat([y, skips[stride]], dim=1)
            y = block(y)
        return self.head(y)


def build_unet(
    num_classes: int = 2,
    backbone: str | None = None,
    in_channels: int = 3,
    base_channels: int = 64,
    depth: int = 4,
    padding: Padding = "same",
    upsampling: str | None = None,
    batch_norm: bool = False,
    dropout: float = 0.0,
    decoder_channels: tuple[int, ...] | None = None,
    pretrained_backbone: bool | str | os.PathLike = False,
) -> SegmentationModel:
    """The paper's U-Net (``backbone=None``, its own encoder trained from scratch) or ``EncoderUNet``.

    ``upsampling`` None is each one's default: the paper's 2x2 up-convolution ("transposed"), smp's
    parameter-free nearest neighbour ("interpolate") on a backbone; ``decoder_channels`` None is smp's
    (256, 128, 64, 32, 16). The other options belong to one of the two; giving one to the other is an error.
    """
    paper = {"base_channels": base_channels, "depth": depth, "padding": padding, "batch_norm": batch_norm,
             "dropout": dropout}
    if backbone is None:
        if decoder_channels is not None or pretrained_backbone:
            raise ValueError("decoder_channels and pretrained_backbone need a backbone: the paper's U-Net "
                             "(backbone=None) trains its own encoder")
        return UNet(num_classes, in_channels, upsampling=upsampling or "transposed", **paper)
    defaults = inspect.signature(UNet).parameters
    changed = [key for key, value in paper.items() if value != defaults[key].default]
    if changed:
        raise ValueError(f"{', '.join(changed)} belong to the paper's U-Net (backbone=None), not to a U-Net on "
                         f"backbone {backbone!r}")
    return EncoderUNet(num_classes, backbone, in_channels, decoder_channels or DECODER_CHANNELS,
                       upsampling or "interpolate", pretrained_backbone)
