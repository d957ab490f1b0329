"""Five ways to upsample by 2, and the checkerboard that uneven kernel overlap paints (Odena et al. 2016).

Each upsampler is ``pixelwise.nn.upsample.Upsample`` as the library builds it: transposed convolutions with
(kernel, stride) (3, 2), (4, 2) and (2, 2), and nearest or bilinear interpolation followed by a 3x3
convolution. The (4, 2) one starts as exact bilinear interpolation, the resize-convolutions as plain
interpolation; (3, 2) and (2, 2) keep PyTorch's random initialisation.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from matplotlib.figure import Figure
from torch.nn import functional as F

from pixelwise.explain.base import Explained
from pixelwise.nn.upsample import Upsample

FACTOR = 2
# Display name -> (mode, kernel size): the five upsamplers of the lecture.
UPSAMPLERS = {
    "transposed 3x3": ("transposed", 3),
    "transposed 4x4 (bilinear)": ("transposed", 4),
    "transposed 2x2": ("transposed", 2),
    "nearest + conv": ("nearest", None),
    "bilinear + conv": ("bilinear", None),
}
BORDER = 4  # output pixels left out of the spectrum: zero padding makes every border differ from the interior
MIN_SIZE = 12  # the smooth input fades out over 3 pixels at each side and is drawn on a grid 4 times coarser


def overlap_counts(upsampler: Upsample, size: int) -> torch.Tensor:
    """How many (input pixel, kernel tap) pairs reach each output pixel: (FACTOR*size, FACTOR*size).

    A copy of ``upsampler`` with every weight 1 and no bias, run on an input of ones, adds exactly one per
    pair: the overlap count, computed by the layer itself.
    """
    counting = copy.deepcopy(upsampler)
    with torch.no_grad():
        counting.conv.weight.fill_(1.0)
        if counting.conv.bias is not None:
            counting.conv.bias.zero_()
        return counting(torch.ones(1, 1, size, size, dtype=counting.conv.weight.dtype))[0, 0]


def periodic_energy(image: torch.Tensor) -> float:
    """The share of an (H, W) image's energy at the stride's period (2 pixels), borders left out.

    The 2-pixel period lives in three DFT bins: (H/2, 0), (0, W/2) and (H/2, W/2) of the even-sized interior.
    A checkerboard puts energy there; any interpolation of a smooth signal puts none.
    """
    interior = image[BORDER:-BORDER, BORDER:-BORDER].double()
    height, width = (side - side % 2 for side in interior.shape)
    spectrum = torch.fft.fft2(interior[:height, :width]).abs().square()
    periodic = spectrum[height // 2, 0] + spectrum[0, width // 2] + spectrum[height // 2, width // 2]
    return (periodic / spectrum.sum()).item()


def smooth_input(size: int, seed: int) -> torch.Tensor:
    """A (1, 1, size, size) random field without fine detail: noise on a grid 4 times coarser, interpolated.

    It fades to exactly zero ``BORDER // FACTOR + 1`` pixels from the edge, so every upsampled output is zero
    where :func:`periodic_energy` crops it: the spectrum then sees the whole signal, with no cut edge that
    would leak energy into the 2-pixel period.
    """
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 1, size // 4, size // 4, generator=generator)
    field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    margin = BORDER // FACTOR + 1
    inside = torch.arange(size - 2 * margin, dtype=field.dtype)
    fade = torch.zeros(size, dtype=field.dtype)
    fade[margin : size - margin] = torch.sin(torch.pi * (inside + 1) / (size - 2 * margin + 1)).square()
    return field * torch.outer(fade, fade)


def upsampling(*, seed: int = 0, size: int = 24) -> Explained:
    """Upsample a constant and a smooth random ``size`` x ``size`` input by 2 with each of the five layers."""
    if size < MIN_SIZE:
        raise ValueError(f"upsampling needs an input of at least {MIN_SIZE}x{MIN_SIZE} pixels, got {size}")
    torch.manual_seed(seed)
    layers = {name: Upsample(1, 1, FACTOR, mode, kernel_size=kernel).eval()
              for name, (mode, kernel) in UPSAMPLERS.items()}
    inputs = {"constant": torch.ones(1, 1, size, size), "smooth": smooth_input(size, seed)}
    with torch.no_grad():
        outputs = {(name, kind): layer(x)[0, 0] for name, layer in layers.items() for kind, x in inputs.items()}
    counts = {name: overlap_counts(layer, size) for name, layer in layers.items()}

    numbers = {
        name: {
            "kernel_size": layer.conv.kernel_size[0],
            "overlap_counts_interior_period": _period_block(counts[name]),
            "overlap_counts_values": sorted({int(value) for value in counts[name].round().unique().tolist()}),
            "periodic_energy_constant": periodic_energy(outputs[name, "constant"]),
            "periodic_energy_smooth": periodic_energy(outputs[name, "smooth"]),
        }
        for name, layer in layers.items()
    }
    return Explained(
        topic="upsampling",
        numbers={"input_size": size, "factor": FACTOR, "upsamplers": numbers},
        figures={"upsamplers": _figure(outputs, counts, inputs)},
        caption=(
            "A transposed convolution paints each input pixel's kernel onto the output, stride 2 apart. With a "
            "3x3 kernel the copies overlap unevenly (counts 1, 2 and 4 alternate, bottom row), so even a constant "
            "input comes out as a checkerboard: energy at the 2-pixel period of the spectrum. A 2x2 kernel "
            "overlaps evenly but still tiles its own (random) kernel. The 4x4 kernel initialised as bilinear "
            "interpolation, and interpolation followed by a convolution, give a constant from a constant and "
            "put no energy at that period, away from the zero-padded border."
        ),
        source="pixelwise/nn/upsample.py: Upsample (modes transposed, nearest, bilinear), bilinear_kernel",
        extras={"outputs": outputs, "overlap_counts": counts},
    )


def _period_block(counts: torch.Tensor) -> list[list[int]]:
    """The FACTOR x FACTOR block of an overlap-count map that repeats in its interior."""
    start = BORDER - BORDER % FACTOR
    return counts[start : start + FACTOR, start : start + FACTOR].round().int().tolist()


def _figure(outputs: dict, counts: dict, inputs: dict) -> Figure:
    names = list(counts)
    figure = Figure(figsize=(3 * (len(names) + 1), 9), layout="constrained")
    axes = figure.subplots(3, len(names) + 1)
    for row, kind in enumerate(inputs):
        axes[row, 0].imshow(inputs[kind][0, 0].numpy(), cmap="gray", **({"vmin": 0} if kind == "constant" else {}))
        axes[row, 0].set_title(f"{kind} input")
        for column, name in enumerate(names, start=1):
            output = outputs[name, kind].numpy()
            # A constant input keeps 0 as black, so that a constant output shows as flat, not as noise.
            scale = {"vmin": min(0.0, output.min()), "vmax": max(output.max(), 1e-6)} if kind == "constant" else {}
            axes[row, column].imshow(output, cmap="gray", **scale)
            axes[row, column].set_title(f"{name}\nperiodic energy {periodic_energy(outputs[name, kind]):.1e}",
                                        fontsize=9)
    axes[2, 0].axis("off")
    axes[2, 0].text(0.5, 0.5, "kernel overlap\ncounts\n(top-left 10x10)", ha="center", va="center", fontsize=12)
    for column, name in enumerate(names, start=1):
        corner = counts[name][:10, :10].round().int().numpy()
        axes[2, column].imshow(corner, cmap="magma", vmin=0, vmax=max(int(np.max(corner)), 1))
        for (row, col), value in np.ndenumerate(corner):
            axes[2, column].text(col, row, str(value), ha="center", va="center", fontsize=7, color="c")
        axes[2, column].set_title(f"{name}: overlap counts", fontsize=9)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    return figure
