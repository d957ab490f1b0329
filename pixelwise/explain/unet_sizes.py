"""U-Net's feature-map sizes level by level: valid padding (572 -> 388) and same padding at odd sizes (97x101, 1x1).

The sizes are recorded by hooks on a forward pass of the real ``UNet`` (``level_sizes``), built on the meta
device: full width (64 base channels), and still nothing is computed, only shapes.
"""

from __future__ import annotations

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pixelwise.explain.base import Explained
from pixelwise.models import create_model
from pixelwise.models.unet import level_sizes, valid_margin, valid_output_size

# (name, padding, input rows, input columns): the paper's tile, then the odd sizes same padding must handle.
CASES = (("valid 572x572", "valid", 572, 572), ("same 97x101", "same", 97, 101), ("same 1x1", "same", 1, 1))


def unet_sizes(*, seed: int = 0, depth: int = 4, cases: tuple[tuple[str, str, int, int], ...] = CASES) -> Explained:
    """Record each case's per-level sizes and draw them as the U of the paper's Figure 1.

    ``seed`` is the gallery's keyword every topic takes; shapes depend on no weights, so it changes nothing."""
    numbers: dict = {"depth": depth, "valid_margin": valid_margin(depth), "cases": {}}
    figure = Figure(figsize=(5.0 * len(cases), 4.6))
    for index, (name, padding, height, width) in enumerate(cases):
        with torch.device("meta"):
            model = create_model("unet", 2, padding=padding, depth=depth)
        sizes = level_sizes(model, height, width)
        numbers["cases"][name] = {"padding": padding, "input": [height, width],
                                  **{key: [list(size) for size in value] for key, value in sizes.items()}}
        if padding == "valid":
            numbers["cases"][name]["valid_output_size"] = [valid_output_size(height, depth),
                                                          valid_output_size(width, depth)]
        draw_u(figure.add_subplot(1, len(cases), index + 1), name, sizes, padding)
    figure.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.02, wspace=0.05)
    valid = next((case for case in numbers["cases"].values() if case["padding"] == "valid"), None)
    top = ("" if valid is None else f": {valid['encoder'][0][0]} -> {valid['upsampled'][0][0]} at the top, and "
           f"the output is {valid['output'][0][0]}x{valid['output'][0][1]}")
    return Explained(
        topic="unet-sizes",
        numbers=numbers,
        figures={"unet_sizes": figure},
        caption=(
            "Each box is a feature map of the real U-Net, its size recorded on a forward pass. With valid "
            "padding (left, the paper's 572x572 tile) every pair of 3x3 convolutions trims 4 pixels, so the "
            f"encoder map is larger than the upsampled one it joins and is centre-cropped (red){top}, "
            f"{valid_margin(depth)} pixels lost on each side. With same "
            "padding only pooling can lose pixels: an odd side is pooled with ceil, so the up-convolution "
            "returns one row or column too many, cropped at the bottom/right (97x101: 98x102 -> 97x101); even a "
            "1x1 input goes all the way down and back."
        ),
        source="pixelwise/models/unet.py: UNet.forward, level_sizes, valid_output_size",
    )


def size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def draw_u(axes: Axes, title: str, sizes: dict[str, list[tuple[int, int]]], padding: str) -> None:
    """The U: encoder levels down the left, the bottom, decoder levels up the right, skips across."""
    depth = len(sizes["pooled"])
    gap = 1.4  # extra room between the two sides, for the skip labels
    axes.set_title(title)
    axes.set_xlim(-0.9, 2 * depth + gap + 0.9)
    axes.set_ylim(-depth - 0.7, 0.8)
    axes.axis("off")
    box = {"boxstyle": "round,pad=0.3", "facecolor": "#dbe8f6", "edgecolor": "#3a6ea5"}
    for level in range(depth + 1):
        x = level + (gap / 2 if level == depth else 0)  # the bottom sits midway between the two sides
        axes.text(x, -level, size_text(sizes["encoder"][level]), ha="center", va="center", fontsize=9, bbox=box)
    for level in range(depth):
        # Pooling: the arrow down the left side, labelled with the pooled size.
        bottom_shift = gap / 2 if level == depth - 1 else 0
        axes.annotate("", xy=(level + 0.8 + bottom_shift, -level - 0.8), xytext=(level + 0.2, -level - 0.2),
                      arrowprops={"arrowstyle": "->", "color": "#3a6ea5"})
        axes.text(level + 0.55, -level - 0.35, f"pool\n{size_text(sizes['pooled'][level])}", fontsize=7,
                  color="#3a6ea5")
        right = 2 * depth - level + gap
        axes.text(right, -level, size_text(sizes["decoder"][level]), ha="center", va="center", fontsize=9,
                  bbox={**box, "facecolor": "#e3f1df", "edgecolor": "#4a8a3a"})
        axes.annotate("", xy=(right - 0.2, -level - 0.2), xytext=(right - 0.8 - bottom_shift, -level - 0.8),
                      arrowprops={"arrowstyle": "->", "color": "#4a8a3a"})
        axes.text(right - 0.3, -level - 0.65, f"up\n{size_text(sizes['upsampled'][level])}", fontsize=7,
                  color="#4a8a3a", ha="left")
        # The skip: which map is cropped to which size before the two are concatenated.
        encoder, upsampled, joined = sizes["encoder"][level], sizes["upsampled"][level], sizes["joined"][level]
        if padding == "valid":
            cropped, where = encoder, "skip centre-cropped"
        else:
            cropped, where = upsampled, "up-conv cropped at bottom/right"
        label = f"{where}\n{size_text(cropped)} -> {size_text(joined)}" if cropped != joined else "no crop"
        axes.annotate("", xy=(right - 0.45, -level), xytext=(level + 0.45, -level),
                      arrowprops={"arrowstyle": "->", "color": "#999999", "linestyle": "--"})
        axes.text(depth + gap / 2, -level + 0.12, label, ha="center", va="bottom", fontsize=7,
                  color="#c0392b" if cropped != joined else "#777777")
    axes.text(2 * depth + gap, 0.55, f"output {size_text(sizes['output'][0])}", ha="center", fontsize=9, weight="bold")
