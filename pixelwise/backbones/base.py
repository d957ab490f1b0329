"""The backbone contract, written once: feature maps, their channels and strides, and the output stride.

A backbone maps an image (N, C, H, W) to a list of feature maps, shallow to deep. ``channels[i]`` and
``strides[i]`` describe map ``i``; strides are nominal and capped at ``output_stride``: past it, a stage
keeps its resolution and its stride becomes dilation (atrous convolution). A map at stride ``s`` has
``ceil(H / s)`` by ``ceil(W / s)`` pixels for every input size.

``DilationSchedule`` is the one place that decides, step by step down a network, which strides are kept
and which become dilation; ``scaled_rates`` is the one place that rescales atrous rates chosen at one
output stride to another.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

OUTPUT_STRIDES = (8, 16, 32)


def check_output_stride(output_stride: int, allowed: Sequence[int] = OUTPUT_STRIDES) -> int:
    """``output_stride`` if it is one of ``allowed``, else a ValueError naming the valid values."""
    if output_stride not in allowed:
        *others, last = (str(value) for value in allowed)
        choices = f"{', '.join(others)} or {last}" if others else last
        raise ValueError(f"output_stride must be {choices}, got {output_stride!r}")
    return output_stride


def scaled_rates(rates: Sequence[int], chosen_at: int, output_stride: int) -> tuple[int, ...]:
    """Atrous rates chosen at output stride ``chosen_at``, rescaled to ``output_stride``.

    A rate counts feature-map pixels, so halving the output stride doubles the rate that covers the same
    field of view in input pixels: DeepLab v3's (6, 12, 18) at 16 are (12, 24, 36) at 8.
    """
    return tuple(rate * chosen_at // output_stride for rate in rates)


def map_size(size: Sequence[int], stride: int) -> tuple[int, int]:
    """(ceil(H / stride), ceil(W / stride)): the contract's size of a stride-``stride`` map of an (H, W) input.

    Written with non-negative operands, ``(H + stride - 1) // stride``, because ONNX's integer division
    truncates where Python's floors, so ``-(-H // stride)`` exports wrongly.
    """
    height, width = size
    return (height + stride - 1) // stride, (width + stride - 1) // stride


class DilationSchedule:
    """Walks a network's downsampling steps in order and trades strides past ``output_stride`` for dilation.

    ``downsample(factor)`` returns the stride the step keeps: ``factor`` while the running stride stays
    within ``output_stride``, else 1, and then ``rate`` (the dilation every later layer needs to keep its
    field of view) grows by ``factor``.
    """

    def __init__(self, output_stride: int) -> None:
        self.output_stride = check_output_stride(output_stride)
        self.stride = 1  # the resolution reached so far
        self.rate = 1  # the dilation of the layers from here on

    def downsample(self, factor: int) -> int:
        if self.stride * factor > self.output_stride:
            self.rate *= factor
            return 1
        self.stride *= factor
        return factor


class Backbone(nn.Module):
    """Base of every backbone: ``forward(x) -> list of maps`` described by ``channels`` and ``strides``.

    Subclasses set ``channels`` and ``strides`` (one entry per returned map) and may narrow
    ``output_strides``, the output strides they can be built at.
    """

    channels: tuple[int, ...]
    strides: tuple[int, ...]
    output_strides: tuple[int, ...] = OUTPUT_STRIDES

    def __init__(self, output_stride: int) -> None:
        super().__init__()
        self.output_stride = check_output_stride(output_stride, self.output_strides)

    def capped(self, strides: Sequence[int]) -> tuple[int, ...]:
        """Nominal strides capped at the output stride: the strides of the maps this backbone returns."""
        return tuple(min(stride, self.output_stride) for stride in strides)


def out_channels(block: nn.Module) -> int:
    """Channels a block outputs: those of its last convolution (a residual unit's projection)."""
    return [m for m in block.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
