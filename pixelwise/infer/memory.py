"""Memory per request, measured: what one image costs a model, and the limits that keep a server in budget.

Whole-image inference keeps the network's activations for every pixel at once: the quickstart U-Net takes
about 500 bytes per input pixel, so one 3000 x 3000 upload needs 4.5 GB. Window by window (slide mode,
overlap-tile) only the image's own buffers grow with it: its pixels, their normalised copy, the logits
accumulated over windows and the labels, a few dozen bytes per pixel, plus one window's activations.

``plan_memory`` measures the model's whole-image cost on one probe image when the server starts: the rise of
the process's peak resident memory (``VmHWM``, Linux), and at least the bytes of every distinct tensor the
network's layers output (memory the allocator already holds does not show in the first), and derives from a
per-request
budget (``request_bytes``, capped by the memory the machine has free): up to how many pixels an image may
run whole, the largest image accepted (``max_pixels``), and how many requests may run at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

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


def activation_bytes(model: nn.Module, example: torch.Tensor) -> int:
    """Bytes of every distinct tensor the model's layers output on ``example`` (in-place results counted once):
    what whole-image inference allocates for its activations, a bound that no allocator state hides."""
    seen: dict[int, int] = {}

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        for tensor in output if isinstance(output, list | tuple) else (output,):
            if isinstance(tensor, torch.Tensor):
                seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()

    handles = [module.register_forward_hook(record) for module in model.modules() if not list(module.children())]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return sum(seen.values())


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

    whole_bytes_per_pixel: float  # measured: whole-image inference, activations included
    window_bytes_per_pixel: float  # the buffers that grow with the image when it runs window by window
    window_bytes: int  # one window's whole-image cost
    request_bytes: int  # the budget of one request
    whole_up_to: int  # pixels: larger images run window by window
    max_pixels: int  # the largest image accepted
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
    one) and ``max_pixels`` (default: what the budget allows, window by window) may be given.
    """
    side = segmenter.model.input_size_for(PROBE_SIDE)
    probe = np.random.default_rng(0).integers(0, 256, (side, side, segmenter.in_channels), dtype=np.uint8)
    segmenter.predict(probe)  # warm-up: the first call allocates what every call reuses
    peak = peak_bytes_of(lambda: segmenter.predict(probe))
    measured = peak is not None
    example = segmenter.normalization.normalize(torch.from_numpy(probe).permute(2, 0, 1)[None])
    activations = activation_bytes(segmenter.model, example)
    whole = SAFETY * max(peak or 0, activations) / (side * side)
    window = SAFETY * window_bytes_per_pixel(segmenter.in_channels, segmenter.num_classes)
    tile_side = max(segmenter.model.input_size_for(max(segmenter.tile)), max(segmenter.tile))
    window_bytes = int(whole * tile_side * tile_side)
    free = available_bytes()
    if max_concurrent is None:
        max_concurrent = 2 if free is None or free // 2 >= 2 * request_bytes else 1
    if free is not None:
        request_bytes = min(request_bytes, free // 2 // max_concurrent)
    if request_bytes <= window_bytes:
        raise ValueError(f"a request budget of {request_bytes / 2**20:.0f} MiB does not fit one "
                         f"{tile_side}x{tile_side} window of this model ({window_bytes / 2**20:.0f} MiB): "
                         "raise --max-request-mb or lower --max-concurrent")
    whole_up_to = int(request_bytes / whole)
    if max_pixels is None:
        max_pixels = int((request_bytes - window_bytes) / window)
    else:  # the caller's own limit: advertise what a request at that limit takes
        request_bytes = max(request_bytes, window_bytes + int(window * max_pixels))
    return MemoryPlan(whole, window, window_bytes, request_bytes, whole_up_to, max_pixels, max_concurrent, measured)
