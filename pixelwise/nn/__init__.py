"""Building blocks of the lecture, one small module each."""

from pixelwise.nn.conv import ConvBNReLU, SeparableConv2d, atrous_conv3x3, same_padding
from pixelwise.nn.skip import align_to, center_crop, crop_at, pad_to_match
from pixelwise.nn.upsample import (
    SCORE_UPSAMPLINGS,
    UPSAMPLING_MODES,
    ScoreUpsample,
    Upsample,
    bilinear_kernel,
    resize_to,
)

__all__ = [
    "SCORE_UPSAMPLINGS",
    "UPSAMPLING_MODES",
    "ConvBNReLU",
    "ScoreUpsample",
    "SeparableConv2d",
    "Upsample",
    "align_to",
    "atrous_conv3x3",
    "bilinear_kernel",
    "center_crop",
    "crop_at",
    "pad_to_match",
    "resize_to",
    "same_padding",
]
