"""Receptive fields of three stacked 3x3 atrous convolutions, and the holes ("gridding") of equal rates.

Back-propagating from the centre output pixel through the real ``atrous_conv3x3`` layers gives, at each
input pixel, how many paths reach it: the receptive field is ``1 + 2 * sum(rates)`` wide, and with rates
(2, 2, 2) most of its pixels are never seen (Wang et al., "Understanding Convolution for Semantic
Segmentation", 2018), while (1, 2, 5) covers it completely.
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from torch import nn

from pixelwise.explain.base import Explained, require_positive
from pixelwise.nn.conv import atrous_conv3x3

RATE_STACKS = ((1, 1, 1), (2, 2, 2), (1, 2, 5))


def gradient_map(rates: tuple[int, ...], size: int) -> torch.Tensor:
    """(size, size) gradient of the centre output of a stack of ``atrous_conv3x3`` layers w.r.t. the input.

    Every weight is 1 and every bias 0 (as Luo et al. do to isolate the architecture from the training), so
    the gradient at an input pixel counts the paths from it to the centre: zero exactly where none exists.
    """
    stack = nn.Sequential(*(atrous_conv3x3(1, 1, rate, bias=False) for rate in rates)).double()
    for conv in stack:
        nn.init.ones_(conv.weight)
    image = torch.zeros(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    stack(image)[0, 0, size // 2, size // 2].backward()
    return image.grad[0, 0]


def receptive_field(gradient: torch.Tensor) -> tuple[int, float]:
    """The side of the square bounding the nonzero gradient, and the share of zero pixels inside it."""
    rows, cols = gradient.nonzero(as_tuple=True)
    top, bottom, left, right = rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()
    inside = gradient[top : bottom + 1, left : right + 1]
    side = max(bottom - top, right - left) + 1
    return side, (inside == 0).double().mean().item()


def atrous_receptive_fields(*, seed: int = 0, rate_stacks: tuple[tuple[int, ...], ...] = RATE_STACKS,
                            size: int = 41) -> Explained:
    """Gradient maps of each stack of rates on a ``size`` x ``size`` input (``seed`` is unused: all exact)."""
    if not rate_stacks or not all(rate_stacks):
        raise ValueError(f"rate_stacks must hold at least one non-empty stack of rates, got {rate_stacks!r}")
    require_positive(**{f"rate {rate!r} in {rates}": rate for rates in rate_stacks for rate in rates})
    largest = max(1 + 2 * sum(rates) for rates in rate_stacks)
    if size < largest:
        raise ValueError(f"size {size} is smaller than the largest receptive field, {largest}")
    gradients = {rates: gradient_map(rates, size) for rates in rate_stacks}
    stacks = []
    for rates, gradient in gradients.items():
        side, holes = receptive_field(gradient)
        stacks.append({"rates": list(rates), "receptive_field": side, "analytic_receptive_field": 1 + 2 * sum(rates),
                       "hole_fraction": holes})
    return Explained(
        topic="atrous-receptive-fields",
        numbers={"input_size": size, "stacks": stacks},
        figures={"gradient_maps": _figure(gradients)},
        caption=(
            "Each map is the gradient of the centre output pixel of three stacked 3x3 convolutions with respect to "
            "the input (all weights 1): brighter pixels reach the centre by more paths. The receptive field is "
            "1 + 2 x (sum of the rates) wide. With rates (2, 2, 2) every tap lands on even offsets, so the "
            "odd rows and columns inside the field are never seen: the gridding artefact. Rates (1, 2, 5), whose "
            "sums reach every offset, see a larger field than (1, 1, 1) with no holes."
        ),
        source="pixelwise/nn/conv.py: atrous_conv3x3, same_padding",
        extras={"gradients": gradients},
    )


def _figure(gradients: dict[tuple[int, ...], torch.Tensor]) -> Figure:
    figure = Figure(figsize=(4 * len(gradients), 4.8), layout="constrained")
    # Every map cropped to the largest field and a 2-pixel margin, so that the fields compare at one scale.
    reach = max(receptive_field(gradient)[0] for gradient in gradients.values()) // 2 + 2
    axes = figure.subplots(1, len(gradients), squeeze=False)[0]
    for axis, (rates, gradient) in zip(axes, gradients.items(), strict=True):
        side, holes = receptive_field(gradient)
        centre = gradient.shape[0] // 2
        window = gradient[centre - reach : centre + reach + 1, centre - reach : centre + reach + 1]
        axis.imshow(window.numpy(), cmap="inferno", interpolation="nearest")
        axis.set_title(f"rates {rates}: field {side}x{side}\n{holes:.0%} of it never reached")
        axis.set_xticks([])
        axis.set_yticks([])
    return figure
