"""Memory per request, measured: what one image costs a model, and the limits that keep a server in budget.

Whole-image inference keeps the network's activations for every pixel at once: the quickstart U-Net takes
about 500 bytes per input pixel, so one 3000 x 3000 upload needs 4.5 GB. Window by window (slide mode,
overlap-tile) only the image's own buffers grow with it: its pixels, their normalised copy, the logits
accumulated over windows and the labels, a few dozen bytes per pixel, plus one window's activations.

What the network computes is not the image: ``layout_for`` says, from the image's height and width and the
segmenter's settings alone (so a server can ask before decoding), whether it runs whole or window by window,
the network's input per run (padding included: a valid-padding U-Net needs 204 rows of input at depth 4
even for a 1-pixel-high image) and how many runs. Windows shrink to an image shorter than the tile. A
network's strided layers pad each side up to their coarser grids, so a thin strip costs more per pixel than
a square (2.3 times for the quickstart U-Net, 7 times for DeepLabv3+ at 1 pixel high): the network's cost is
planned on ``(rows + grid_padding) * (columns + grid_padding)`` pixels, ``grid_padding`` measured once.

``plan_memory`` measures the model's whole-image cost on one probe image when the server starts: the rise of
the process's peak resident memory (``VmHWM``, Linux), and at least the bytes of every distinct tensor the
network's layers output (memory the allocator already holds does not show in the first), and derives from a
per-request budget (``request_bytes``, capped by the memory the machine has free): up to how many computed
pixels an image may run whole, the largest image accepted (``max_pixels``), how many pixels the network may
compute for one image (``max_computed_pixels``) and how many requests may run at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from pixelwise.infer.sliding import window_starts

if TYPE_CHECKING:
    from pixelwise.infer.segmenter import Segmenter

DEFAULT_REQUEST_BYTES = 1 << 30  # 1 GiB per request
PROBE_SIDE = 512
SAFETY = 1.25  # measured costs are raised by a quarter: allocators and decoders keep some slack


def peak_bytes_of(run: Callable[[], Any]) -> int | None:
    """How much the process's peak resident memory rose while ``run()`` ran; None where it cannot be read.

    Linux keeps the peak (VmHWM) and resets it to the current size on ``5 > /proc/self/clear_refs``.
    """
    status, clear = Path("/proc/self/status"), Path("/proc/self/clear_refs")
    if not (status.is_file() and os.access(clear, os.W_OK)):
        return None

    def read(field: str) -> int:
        for line in status.read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
        raise ValueError(f"{field} not in {status}")

    clear.write_text("5")
    before = read("VmRSS:")
    run()
    return max(0, read("VmHWM:") - before)


def activation_bytes(model: nn.Module, example: torch.Tensor, distinct: bool = True) -> int:
    """Bytes of every distinct tensor the model's layers output on ``example`` (in-place results counted once):
    what whole-image inference allocates for its activations, a bound that no allocator state hides.

    With ``distinct=False`` every layer's output counts, wherever the allocator put it: the sum of the
    network's feature maps, exactly proportional to their areas (what ``grid_padding`` compares).
    """
    outputs: list[tuple[int, int]] = []  # (address, bytes) of each output's storage

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        for tensor in output if isinstance(output, list | tuple) else (output,):
            if isinstance(tensor, torch.Tensor):
                outputs.append((tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes()))

    handles = [module.register_forward_hook(record) for module in model.modules() if not list(module.children())]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return sum(dict(outputs).values()) if distinct else sum(size for _, size in outputs)


def grid_padding(model: nn.Module, square: torch.Tensor, strip: torch.Tensor) -> float:
    """Pixels that the network's strided layers add, in effect, to each side of its input: (1, C, S, S) and
    (1, C, h, L) examples, ``h`` the thinnest input side, give it from the sum of the feature maps' bytes.

    A layer of stride ``k`` computes ceil(H / k) x ceil(W / k) positions, at most (H + k) (W + k) / k ** 2:
    the network's cost is at most its cost per pixel times (H + g) (W + g) for a ``g`` set by its strides
    and channels, measured here on a thin strip (0 for a network that never pools).
    """
    per_pixel = activation_bytes(model, square, distinct=False) / square[0, 0].numel()
    rows, columns = strip.shape[-2:]
    extra = activation_bytes(model, strip, distinct=False) / per_pixel - rows * columns
    return max(0.0, extra / (rows + columns))


@dataclass(frozen=True)
class Layout:
    """How one image runs through the network; sides are (rows, columns) in pixels."""

    windowed: bool
    window: tuple[int, int]  # the network's input in one run, padding included: the padded image when whole
    step: tuple[int, int]  # slide: windows' stride; overlap-tile: the output tile each window covers
    runs: int  # how many windows the network runs on (1 when whole)

    @property
    def computed_pixels(self) -> int:
        """Input pixels the network computes over all runs: padding and overlaps included."""
        return self.runs * self.window[0] * self.window[1]

    def cost_pixels(self, padding: float) -> float:
        """One run's input area with ``padding`` (``grid_padding``) added to each side: what its activations
        cost, counted in pixels of a large square input (on which that padding is negligible)."""
        return (self.window[0] + padding) * (self.window[1] + padding)


def whole_layout(height: int, width: int, segmenter: Segmenter) -> Layout:
    """The image run whole: as it is, or for a model with an output margin (overlap-tile), one output tile
    covering it, rounded up to the model's ``size_multiple`` and mirrored past its borders."""
    unit = segmenter.size_multiple
    step = (-(-height // unit) * unit, -(-width // unit) * unit)
    return Layout(False, (segmenter.model.input_size_for(step[0]), segmenter.model.input_size_for(step[1])), step, 1)


def windowed_layout(height: int, width: int, segmenter: Segmenter) -> Layout:
    """The image run window by window. A window shrinks to an image shorter than the tile (a same-size model
    runs any size; a model with an output margin runs output tiles on its pooling grid, at least its
    ``size_multiple``), and then grows along the image, within the cost of a full window: a 1-pixel-high
    image runs a few long strips, not one tile-high window per few hundred pixels. Slide mode keeps the
    tile's overlap: the stride grows and shrinks with the window."""
    unit, margin, padding = segmenter.size_multiple, segmenter.output_margin, segmenter.grid_padding
    input_for = segmenter.model.input_size_for
    # Output sides: the tile's (on the pooling grid) and the image's (rounded up to it).
    full = [max(unit, side // unit * unit) for side in segmenter.tile]
    most = [-(-side // unit) * unit for side in (height, width)]
    step = [min(full[axis], most[axis]) for axis in (0, 1)]
    full_cost = (input_for(full[0]) + padding) * (input_for(full[1]) + padding)
    for short, long in ((0, 1), (1, 0)):
        if step[short] < full[short]:
            longest = full_cost / (input_for(step[short]) + padding) - padding - 2 * margin
            step[long] = min(most[long], max(step[long], int(longest) // unit * unit))
            break
    window = (input_for(step[0]), input_for(step[1]))
    if margin:
        return Layout(True, window, (step[0], step[1]), -(-height // step[0]) * -(-width // step[1]))
    stride = [max(1, window[axis] * segmenter.stride[axis] // segmenter.tile[axis]) for axis in (0, 1)]
    runs = len(window_starts(height, window[0], stride[0])) * len(window_starts(width, window[1], stride[1]))
    return Layout(True, window, (stride[0], stride[1]), runs)


def layout_for(height: int, width: int, segmenter: Segmenter) -> Layout:
    """How a (height, width) image runs with ``segmenter``'s settings: whole in whole mode while its cost
    (``Layout.cost_pixels`` with the segmenter's ``grid_padding``) is within ``whole_up_to``, else window by
    window. A pure function of the sizes and the settings: a server asks it before decoding the image."""
    whole = whole_layout(height, width, segmenter)
    limit = segmenter.whole_up_to
    if segmenter.mode == "whole" and (limit is None or whole.cost_pixels(segmenter.grid_padding) <= limit):
        return whole
    return windowed_layout(height, width, segmenter)


def available_bytes() -> int | None:
    """Memory the machine can give without swapping (MemAvailable), None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class MemoryPlan:
    """The limits of a server, each in bytes or pixels, with the measurements they come from."""

    whole_bytes_per_pixel: float  # measured: a run's cost per pixel of Layout.cost_pixels, activations included
    grid_padding: float  # measured: pixels the network's strided layers add to each side (Layout.cost_pixels)
    window_bytes_per_pixel: float  # the buffers that grow with the image when it runs window by window
    window_bytes: int  # one full window's cost
    request_bytes: int  # the budget of one request
    whole_up_to: int  # pixels of Layout.cost_pixels: costlier images run window by window
    max_pixels: int  # the largest image accepted
    max_computed_pixels: int  # the most input pixels the network may compute for one image (Layout.computed_pixels)
    max_concurrent: int
    measured: bool  # False where the peak memory could not be read and a bound was used instead

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def window_bytes_per_pixel(channels: int, classes: int) -> float:
    """Bytes per pixel that window-by-window inference keeps for the whole image: an upload that does not
    compress, received and joined (2C), the decoded image and its array (2C), the stacked batch (C), its
    normalised float copy (4C), the logits accumulated over windows (4K), the int64 labels (8) and the PNG
    written from them (about 2)."""
    return 9 * channels + 4 * classes + 8 + 2


def plan_memory(segmenter: Segmenter, request_bytes: int = DEFAULT_REQUEST_BYTES, max_concurrent: int | None = None,
                max_pixels: int | None = None) -> MemoryPlan:
    """Measure ``segmenter``'s whole-image cost on one probe image and derive the limits of a server.

    ``request_bytes`` is the budget of one request; with several requests at once the machine's free
    memory caps their sum at half of it. ``max_concurrent`` (default: 2, or 1 when the memory allows only
    one) and ``max_pixels`` (default: what the budget allows, window by window) may be given. The network
    may compute up to four times what overlapping full windows compute for ``max_pixels`` (edge windows
    overlap up to twice as much on each axis): every image of ``max_pixels`` whose sides are at least a tile
    stays within it; a thin image padded to the model's smallest window may not.
    """
    rng = np.random.default_rng(0)
    probe = rng.integers(0, 256, (PROBE_SIDE, PROBE_SIDE, segmenter.in_channels), dtype=np.uint8)
    segmenter.predict(probe)  # warm-up: the first call allocates what every call reuses
    peak = peak_bytes_of(lambda: segmenter.predict(probe))
    measured = peak is not None

    def example(height: int, width: int) -> torch.Tensor:
        """A normalised (1, C, rows, columns) network input for a (height, width) image run whole."""
        rows, columns = whole_layout(height, width, segmenter).window
        pixels = torch.from_numpy(rng.integers(0, 256, (1, segmenter.in_channels, rows, columns), dtype=np.uint8))
        return segmenter.normalization.normalize(pixels)

    square = example(PROBE_SIDE, PROBE_SIDE)
    padding = grid_padding(segmenter.model, square, example(1, 8 * PROBE_SIDE))
    probe_cost = whole_layout(PROBE_SIDE, PROBE_SIDE, segmenter).cost_pixels(padding)
    whole = SAFETY * max(peak or 0, activation_bytes(segmenter.model, square)) / probe_cost
    window = SAFETY * window_bytes_per_pixel(segmenter.in_channels, segmenter.num_classes)
    full = windowed_layout(*segmenter.tile, segmenter)
    window_bytes = int(whole * full.cost_pixels(padding))
    free = available_bytes()
    if max_concurrent is None:
        max_concurrent = 2 if free is None or free // 2 >= 2 * request_bytes else 1
    if free is not None:
        request_bytes = min(request_bytes, free // 2 // max_concurrent)
    if request_bytes <= window_bytes:
        raise ValueError(f"a request budget of {request_bytes / 2**20:.0f} MiB does not fit one "
                         f"{full.window[0]}x{full.window[1]} window of this model ({window_bytes / 2**20:.0f} MiB): "
                         "raise --max-request-mb or lower --max-concurrent")
    whole_up_to = int(request_bytes / whole)
    if max_pixels is None:
        max_pixels = int((request_bytes - window_bytes) / window)
    else:  # the caller's own limit: advertise what a request at that limit takes
        request_bytes = max(request_bytes, window_bytes + int(window * max_pixels))
    overlap = full.window[0] * full.window[1] / (full.step[0] * full.step[1])
    max_computed = max(whole_up_to, int(4 * overlap * max_pixels))
    return MemoryPlan(whole, padding, window, window_bytes, request_bytes, whole_up_to, max_pixels, max_computed,
                      max_concurrent, measured)
