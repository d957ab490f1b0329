"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015).

Contracting path: at each level two 3x3 convolutions + ReLU, then a 2x2 max-pool; the resolution
halves and the channels double (64 -> 128 -> 256 -> 512 -> 1024 with the defaults). Expanding path:
a 2x2 up-convolution that halves the channels, concatenation with the encoder map of the same level
(the skip), two 3x3 convolutions. A final 1x1 convolution gives the class scores. ``dropout`` is the
paper's "drop-out layers at the end of the contracting path" (0.5 in its Caffe model): the two deepest
encoder maps, the bottom and the skip above it, are dropped out during training.

Odd sizes, on purpose. With ``padding="same"`` the 3x3 convolutions keep the size, so only pooling
can lose pixels. We pool with ``ceil_mode=True``: a level of size ``h`` goes down to ``ceil(h / 2)``
(the last, partial window is pooled too, so no row is dropped), and on the way up the ``2 * ceil(h / 2)``
upsampled rows are cropped at the bottom/right back to ``h``, the extra row lying past the image.
Upsampled pixel ``i`` then sits exactly on encoder pixel ``i``. For a 97 x 101 input and depth 4:

=====  ===========  ===================  ===========================
level  encoder map  pooled (ceil)         way up: x2, then cropped to
=====  ===========  ===================  ===========================
0      97 x 101     49 x 51              98 x 102 -> 97 x 101
1      49 x 51      25 x 26              50 x 52  -> 49 x 51
2      25 x 26      13 x 13              26 x 26  -> 25 x 26
3      13 x 13      7 x 7 (bottom)       14 x 14  -> 13 x 13
=====  ===========  ===================  ===========================

With ``padding="valid"`` (the paper) every 3x3 convolution trims a pixel on each side, pooling floors,
and the encoder map is centre-cropped to the upsampled map before concatenation: the output is
smaller than the input (572 -> 388 for depth 4), see ``valid_output_size``. Tile a large image with
``valid_input_size`` and overlap-tile inference.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from pixelwise.models.base import SegmentationModel
from pixelwise.nn.skip import center_crop, crop_at
from pixelwise.nn.upsample import Upsample, UpsamplingMode

Padding = Literal["same", "valid"]


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by (optional BatchNorm and) ReLU."""

    def __init__(self, in_channels: int, out_channels: int, padding: int, batch_norm: bool) -> None:
        layers: list[nn.Module] = []
        for channels in (in_channels, out_channels):
            layers.append(nn.Conv2d(channels, out_channels, 3, padding=padding, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UNet(SegmentationModel):
    """(N, in_channels, H, W) -> logits (N, num_classes, H', W').

    H' = H with ``padding="same"`` (any H >= 1); H' = ``valid_output_size(H, depth)`` with "valid", whose
    ``output_margin`` is 92 pixels at depth 4 and ``size_multiple`` 2 ** depth (the model contract).
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        base_channels: int = 64,
        depth: int = 4,
        padding: Padding = "same",
        upsampling: UpsamplingMode = "transposed",
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if base_channels < 1 or in_channels < 1:
            raise ValueError(f"base_channels and in_channels must be >= 1, got {base_channels} and {in_channels}")
        self.padding = padding
        self.depth = depth
        conv_padding = 1 if padding == "same" else 0
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.encoder.append(DoubleConv(channels, width, conv_padding, batch_norm))
            channels = width
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=padding == "same")
        # The 2x2 up-convolution of the paper is kernel_size=2, stride 2.
        self.up = nn.ModuleList(
            Upsample(widths[level + 1], widths[level], 2, upsampling, kernel_size=2)
            for level in reversed(range(depth))
        )
        self.decoder = nn.ModuleList(
            DoubleConv(2 * widths[level], widths[level], conv_padding, batch_norm)
            for level in reversed(range(depth))
        )
        self.head = nn.Conv2d(base_channels, num_classes, 1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        if padding == "valid":
            self.output_margin = valid_margin(depth)
            self.size_multiple = 2**depth

    def input_size_for(self, output_size: int) -> int:
        return valid_input_size(output_size, self.depth) if self.padding == "valid" else output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "valid":
            valid_output_size(min(x.shape[-2:]), self.depth)  # raises a clear error when too small
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x)
            if level >= self.depth - 1:  # the end of the contracting path
                x = self.dropout(x)
            if level < self.depth:
                skips.append(x)
                x = self.pool(x)
        for up, block, skip in zip(self.up, self.decoder, reversed(skips), strict=True):
            x = up(x)
            if self.padding == "same":
                x = crop_at(x, 0, skip.shape[-2:])  # drop the row/column past the image
            else:
                skip = center_crop(skip, x.shape[-2:])
            x = block(torch.cat([skip, x], dim=1))
        return self.head(x)


def valid_margin(depth: int = 4) -> int:
    """Pixels a valid-padding U-Net loses on each side: 2 per 3x3 convolution pair at every level, counted
    at the input's scale (92 at depth 4: (572 - 388) / 2)."""
    return 6 * 2**depth - 4


def valid_output_size(input_size: int, depth: int = 4) -> int:
    """Output side of a valid-padding U-Net for an input side (572 -> 388 at depth 4).

    Raises ValueError when the input is too small to leave at least one output pixel.
    """
    size = input_size
    for _ in range(depth):
        size = (size - 4) // 2
        if size < 1:
            break
    size -= 4
    for _ in range(depth):
        size = 2 * size - 4
    if size < 1:
        smallest = valid_input_size(1, depth)
        raise ValueError(
            f"input side {input_size} is too small for a valid-padding U-Net of depth {depth}: "
            f"it needs at least {smallest}"
        )
    return size


def valid_input_size(output_size: int, depth: int = 4) -> int:
    """Smallest input side whose valid-padding output covers ``output_size`` with every pooled size even.

    Even sizes before each pooling keep the skip crops aligned to whole pixels (the paper's rule).
    """
    size = output_size
    for _ in range(depth):
        size = (size + 4 + 1) // 2  # ceil((size + 4) / 2): the map before the up-convolution
    size += 4
    for _ in range(depth):
        size = 2 * size + 4
    return size


def level_sizes(model: UNet, height: int, width: int) -> dict[str, list[tuple[int, int]]]:
    """The (rows, columns) of every map of ``model`` for an ``height x width`` input, recorded by forward hooks.

    Lists in level order (0 = full resolution): ``encoder`` (depth + 1 maps, the last the bottom; each is the
    skip before alignment), ``pooled`` (depth), and on the way up ``upsampled`` (the up-convolution's output),
    ``joined`` (the size skip and upsampled map are concatenated at, after the crop) and ``decoder``; plus
    ``output``, one entry. Shapes only: build the model under ``torch.device("meta")`` and nothing is computed.
    """
    sizes: dict[str, list[tuple[int, int]]] = {key: [] for key in ("encoder", "pooled", "upsampled", "joined",
                                                                    "decoder")}

    def record(key: str, of_input: bool = False):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            sizes[key].append(tuple((inputs[0] if of_input else output).shape[-2:]))
        return hook

    hooks = [block.register_forward_hook(record("encoder")) for block in model.encoder]
    hooks.append(model.pool.register_forward_hook(record("pooled")))
    hooks += [up.register_forward_hook(record("upsampled")) for up in model.up]
    hooks += [block.register_forward_hook(record("joined", of_input=True)) for block in model.decoder]
    hooks += [block.register_forward_hook(record("decoder")) for block in model.decoder]
    first = model.encoder[0][0]
    try:
        with torch.no_grad():
            output = model(torch.zeros(1, first.in_channels, height, width, device=first.weight.device))
    finally:
        for hook in hooks:
            hook.remove()
    for key in ("upsampled", "joined", "decoder"):  # the way up runs from the bottom: put it in level order
        sizes[key].reverse()
    sizes["output"] = [tuple(output.shape[-2:])]
    return sizes
