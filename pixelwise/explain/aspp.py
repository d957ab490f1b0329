"""The fields of view of ASPP's branches on a 513x513 image, and why large rates degenerate to a 1x1 filter.

``pixelwise.nn.aspp.ASPP`` runs a 1x1 branch, 3x3 branches at rates (6, 12, 18) (doubled at output stride 8)
and image pooling. On a 65x65 feature map (513 / 8), a 3x3 filter at rate r keeps fewer of its nine weights
inside the map as r grows; at r >= 65 only the centre weight is left (DeepLab v3, Chen et al. 2017, Fig. 4).
"""

from __future__ import annotations

import math

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn

from pixelwise.explain.base import Explained, require_positive
from pixelwise.nn.aspp import ASPP

IMAGE_SIZE = 513  # DeepLab's crop
# Output stride -> the rates of ASPP's 3x3 branches (DeepLab v3: doubled when the stride halves).
RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
VALID_RATES = (1, 6, 12, 18, 24, 36, 48, 64, 65)
FEATURE_SIZE = 65  # the 513x513 crop at output stride 8


def feature_size(image_size: int, output_stride: int) -> int:
    """The side of the feature map of an ``image_size`` input at ``output_stride`` (``ceil``, as our backbones)."""
    return math.ceil(image_size / output_stride)


def branch_fields(aspp: ASPP, size: int) -> list[tuple[int, int]]:
    """(first, last) feature-map rows that reach the centre output of each branch of ``aspp``, by backprop.

    ``aspp`` has one input channel and is in eval mode with positive weights, so that no ReLU cuts a path and
    the gradient is nonzero exactly on the field of view, clipped to the ``size`` x ``size`` map.
    """
    fields = []
    for branch in aspp.branches:
        features = torch.ones(1, 1, size, size, requires_grad=True)
        branch(features)[0, 0, size // 2, size // 2].backward()
        rows = features.grad[0, 0].abs().sum(1).nonzero()[:, 0]
        fields.append((rows.min().item(), rows.max().item()))
    return fields


def valid_weight_fraction(rate: int, size: int = FEATURE_SIZE) -> tuple[float, float]:
    """For a 3x3 filter at ``rate`` on a ``size`` x ``size`` map with zero padding: the mean share of its nine
    weights that fall inside the map, and the share of positions where only the centre weight does.

    Counted by the 3x3 branch of a real ASPP with every weight 1 run on a map of ones: each output is then the
    number of weights that land inside.
    """
    if rate < 1 or size < 1:
        raise ValueError(f"rate and size must be >= 1, got rate={rate}, size={size}")
    conv = ASPP(1, 1, rates=(rate,)).branches[1][0]
    with torch.no_grad():
        nn.init.ones_(conv.weight)
        counts = conv(torch.ones(1, 1, size, size))[0, 0]
    return (counts / 9).mean().item(), (counts == 1).double().mean().item()


def aspp(*, seed: int = 0, image_size: int = IMAGE_SIZE, valid_rates: tuple[int, ...] = VALID_RATES) -> Explained:
    """ASPP's branch fields at output strides 16 and 8 on ``image_size``, and the valid-weight curve."""
    require_positive(image_size=image_size, **{f"valid_rates[{i}]": rate for i, rate in enumerate(valid_rates)})
    torch.manual_seed(seed)
    strides = {}
    for output_stride, rates in RATES.items():
        size = feature_size(image_size, output_stride)
        module = ASPP(1, 1, rates=rates).eval()
        for parameter in module.parameters():
            nn.init.ones_(parameter)
        fields = branch_fields(module, size)
        names = ["1x1", *(f"3x3 rate {rate}" for rate in rates), "image pooling"]
        strides[output_stride] = {
            "feature_size": size,
            "rates": list(rates),
            "branches": [
                {"branch": name, "feature_rows": [first, last],
                 "input_pixels": [first * output_stride, min((last + 1) * output_stride, image_size) - 1]}
                for name, (first, last) in zip(names, fields, strict=True)
            ],
        }
    fractions = [valid_weight_fraction(rate) for rate in valid_rates]
    numbers = {
        "image_size": image_size,
        "output_strides": {str(output_stride): entry for output_stride, entry in strides.items()},
        "valid_weights": {"feature_size": FEATURE_SIZE, "rates": list(valid_rates),
                          "mean_fraction": [mean for mean, _ in fractions],
                          "centre_only_fraction": [centre for _, centre in fractions]},
    }
    return Explained(
        topic="aspp",
        numbers=numbers,
        figures={"branch_fields": _fields_figure(strides, image_size), "valid_weights": _valid_figure(numbers)},
        caption=(
            f"Left: the input pixels that reach the centre of each ASPP branch on a {image_size}x{image_size} image, "
            "found by back-propagation through the branches (positive weights), at output stride 16 (rates 6, 12, "
            "18) and 8 (rates 12, 24, 36). The largest rates reach past the image: their outer taps read zero "
            "padding. Right: averaged over a 65x65 feature map, the share of a 3x3 filter's nine weights that land "
            "inside the map falls as the rate grows, to 1/9 at rate 65, where the filter is a 1x1 convolution "
            "everywhere. This is why DeepLab v3 adds image pooling for global context."
        ),
        source="pixelwise/nn/aspp.py: ASPP (branches: ConvBNReLU, ImagePooling); pixelwise/nn/conv.py: ConvBNReLU",
    )


def _fields_figure(strides: dict, image_size: int) -> Figure:
    figure = Figure(figsize=(10, 5.2), layout="constrained")
    colors = ["tab:blue", "tab:green", "tab:orange", "tab:red", "tab:purple"]
    for axis, (output_stride, entry) in zip(figure.subplots(1, len(strides)), strides.items(), strict=True):
        axis.add_patch(Rectangle((0, 0), image_size, image_size, facecolor="0.92", edgecolor="k"))
        for color, branch in zip(colors, entry["branches"], strict=True):
            first, last = branch["input_pixels"]
            # Outlines above the taps (zorder), so the 1x1 branch's one-cell field shows over the centre tap.
            axis.add_patch(Rectangle((first, first), last - first + 1, last - first + 1, fill=False,
                                     edgecolor=color, linewidth=2, label=branch["branch"], zorder=3))
        centre = entry["feature_size"] // 2 * output_stride
        for rate, color in zip(entry["rates"], colors[1:], strict=False):
            # The nine taps of the 3x3 branch, one feature cell each, whether or not they land on the image.
            for dy in (-rate, 0, rate):
                for dx in (-rate, 0, rate):
                    axis.add_patch(Rectangle((centre + dx * output_stride, centre + dy * output_stride),
                                             output_stride, output_stride, color=color, alpha=0.8))
        margin = max(entry["rates"]) * output_stride - image_size // 2 + 2 * output_stride
        axis.set_xlim(-max(margin, 10), image_size + max(margin, 10))
        axis.set_ylim(image_size + max(margin, 10), -max(margin, 10))
        axis.set_aspect("equal")
        axis.set_title(f"output stride {output_stride}: {entry['feature_size']}x{entry['feature_size']} features")
        axis.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    return figure


def _valid_figure(numbers: dict) -> Figure:
    figure = Figure(figsize=(6, 4.5), layout="constrained")
    axis = figure.subplots()
    valid = numbers["valid_weights"]
    axis.plot(valid["rates"], valid["mean_fraction"], "o-", label="mean share of the 9 weights inside the map")
    axis.plot(valid["rates"], valid["centre_only_fraction"], "s--", label="positions where only the centre is inside")
    axis.set_xlabel("atrous rate")
    axis.set_ylabel("fraction")
    axis.set_ylim(0, 1.05)
    axis.set_title(f"3x3 atrous filter on a {valid['feature_size']}x{valid['feature_size']} feature map")
    axis.legend()
    axis.grid(True, alpha=0.3)
    return figure
