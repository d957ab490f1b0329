"""``Segmenter``: images in, label maps or class probabilities out.

>>> segmenter = Segmenter("runs/camvid-unet", mode="slide", scales=(0.75, 1.0, 1.25), flip=True)
>>> labels = segmenter.predict("street.png")            # (H, W) int64
>>> probs = segmenter.predict_proba(["a.png", "b.png"])  # list of (C, H, W) float32

One pipeline for every model: read -> normalise (with the run's statistics) -> logits by one of
the modes -> test-time augmentation -> softmax -> optional dense CRF -> argmax.

- ``mode="whole"`` runs the whole image at once; ``"slide"`` runs ``tile``-sized windows ``stride`` apart
  and averages where they overlap (see ``sliding``).
- A model with an ``output_margin`` (the valid-padding U-Net) always runs overlap-tile (see
  ``overlap_tile``): the image is mirrored past its borders and cut into output tiles stitched edge to
  edge, one tile in whole mode, ``tile``-sized output tiles in slide mode. ``stride`` does not apply.
- ``scales`` and ``flip`` average the softmax over rescaled and mirrored copies of the image,
  DeepLab v3's "+MS +Flip" evaluation.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pixelwise.card import RunCard
from pixelwise.checkpoint import load_model
from pixelwise.crf.dense_crf import refine
from pixelwise.crf.settings import CRFSettings
from pixelwise.device import resolve_device
from pixelwise.infer.export import as_numpy, export_onnx, onnx_session
from pixelwise.infer.fast import DTYPES, optimize_for_cpu
from pixelwise.infer.inputs import ImageLike, to_channels, to_pixels, unit_or_uint8
from pixelwise.infer.memory import layout_for
from pixelwise.infer.openvino import OpenVINOForward
from pixelwise.infer.options import BACKENDS, DEFAULT_TILE, MODES, PRECISIONS, default_stride
from pixelwise.infer.overlap_tile import overlap_tile_logits
from pixelwise.infer.sliding import slide_logits


class Segmenter:
    """Semantic segmentation of images with a saved run (a directory) or a model from ``create_model``.

    ``device`` and ``precision`` ("fp32", "bf16", "fp16"; default fp32) apply to the torch backend;
    ``backend="onnxruntime"`` exports the model to ONNX in memory and runs it on the CPU in fp32;
    ``backend="openvino"`` runs that export with OpenVINO on the CPU, in the precision OpenVINO picks for
    this CPU (bf16 where it has AMX or AVX512-BF16) unless ``precision`` pins fp32 or bf16; ``precision``
    then says what runs. ``fast=True``
    folds BatchNorm, uses channels-last memory and (``compile=True``) torch.compile. ``tile`` and
    ``stride`` shape slide mode: windows of ``tile`` pixels every ``stride`` (default two thirds of the
    tile); for a model with an output margin ``tile`` is the output tile and ``stride`` is an error.
    ``crf`` refines the probabilities with the dense CRF: True for the run's own settings (its card),
    a ``pixelwise.crf.CRFSettings``, or a dict of its fields. ``whole_up_to`` (pixels of network input,
    padding included) bounds memory: a costlier image runs window by window even in whole mode. Windows
    shrink to an image shorter than the tile and grow along it within a full window's cost
    (``pixelwise.infer.memory.layout_for``; ``plan_memory`` plans both for a server).
    """

    def __init__(
        self,
        model_or_run_dir: nn.Module | str | os.PathLike,
        device: str | torch.device = "cpu",
        precision: str | None = None,
        mode: str = "whole",
        tile: tuple[int, int] = DEFAULT_TILE,
        stride: tuple[int, int] | None = None,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        crf: bool | CRFSettings | Mapping | None = False,
        backend: str = "torch",
        fast: bool = False,
        compile: bool = False,
        batch_size: int = 4,
        whole_up_to: int | None = None,
    ) -> None:
        for option, value, allowed in (("precision", precision, (None, *PRECISIONS)), ("mode", mode, MODES),
                                       ("backend", backend, BACKENDS)):
            if value not in allowed:
                raise ValueError(f"{option} must be one of {', '.join(filter(None, allowed))}; got {value!r}")
        device = resolve_device(device)
        if backend == "onnxruntime" and (precision not in (None, "fp32") or device.type != "cpu"):
            raise ValueError("the onnxruntime backend runs in fp32 on the CPU")
        if backend == "openvino" and (precision == "fp16" or device.type != "cpu"):
            raise ValueError("the openvino backend runs on the CPU, in fp32 or bf16 (default: OpenVINO's choice)")
        if not scales or any(not scale > 0 for scale in scales):
            raise ValueError(f"scales must be positive numbers, got {tuple(scales)}")
        tile = positive_pair(tile, "tile")
        stride = positive_pair(stride, "stride") if stride is not None else None
        if stride is not None and any(step > side for step, side in zip(stride, tile, strict=True)):
            raise ValueError(f"stride {stride} is larger than the tile {tile}: some pixels would get no window")
        if type(batch_size) is not int or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        if whole_up_to is not None and (type(whole_up_to) is not int or whole_up_to < 1):
            raise ValueError(f"whole_up_to must be a whole number of pixels >= 1, got {whole_up_to!r}")
        # Images that cost more run window by window even in whole mode: memory then grows with the
        # image only by its buffers, not by the network's activations (pixelwise.infer.memory).
        self.whole_up_to = whole_up_to
        # Pixels the network's strided layers add to each side of its input, in effect: what a thin image
        # costs beyond its area (pixelwise.infer.memory.grid_padding; a server's memory plan sets it).
        self.grid_padding = 0.0
        if isinstance(model_or_run_dir, nn.Module):
            model = model_or_run_dir.eval()
        else:
            model = load_model(model_or_run_dir)
        card = getattr(model, "card", None)
        if not isinstance(card, RunCard):
            raise ValueError("Segmenter needs a run directory or a model from pixelwise.create_model / load_model")
        self.card = card
        self.num_classes = card.num_classes
        self.class_names = card.classes
        self.palette = card.colours
        self.in_channels = card.in_channels
        self.normalization = card.input_normalization
        self.mode, self.tile = mode, tuple(tile)
        self.scales, self.flip = tuple(scales), flip
        self.crf = crf_settings(crf, card)
        self.batch_size = batch_size
        # The model contract says whether the output loses a margin and how tiles must be laid out.
        self.output_margin, self.size_multiple = model.output_margin, model.size_multiple
        self.model = model  # the network as loaded (the fast path runs an optimised copy)
        if self.output_margin:
            if stride is not None:
                raise ValueError(f"stride applies to sliding windows; this model loses a {self.output_margin}-pixel "
                                 "margin and runs overlap-tile, whose output tiles (tile) are stitched edge to edge: "
                                 "drop stride")
            if mode == "slide" and any(side % self.size_multiple for side in self.tile):
                raise ValueError(f"overlap-tile output tiles must be multiples of {self.size_multiple}, "
                                 f"got {self.tile}")
        self.stride = tuple(stride) if stride is not None else default_stride(self.tile)
        self.backend, self.device = backend, device
        if backend == "onnxruntime":
            self.forward = OnnxForward(export_onnx(model))
            self.precision = "fp32"
        elif backend == "openvino":
            self.forward = OpenVINOForward(model, precision)
            self.precision = self.forward.precision
        else:
            self.precision = precision or "fp32"
            self.forward = TorchForward(model, device, DTYPES[self.precision], fast, compile)

    def __repr__(self) -> str:
        chosen = " (OpenVINO's choice for this CPU)" if getattr(self.forward, "chosen_by_runtime", False) else ""
        return (f"Segmenter(model={self.card.name!r}, classes={self.num_classes}, backend={self.backend!r}, "
                f"device='{self.device}', precision='{self.precision}'{chosen}, mode={self.mode!r})")

    @property
    def mean(self) -> list[float]:
        """Per-channel mean the inputs are normalised with, on [0, 1] pixels (from the run card)."""
        return list(self.normalization.mean)

    @property
    def std(self) -> list[float]:
        """Per-channel standard deviation the inputs are normalised with, on [0, 1] pixels."""
        return list(self.normalization.std)

    # -- public API ---------------------------------------------------------------------------------------

    def predict(self, image: ImageLike | list[ImageLike]) -> np.ndarray | list[np.ndarray]:
        """Label map(s): (H, W) int64 per image; a list in gives a list out."""
        return self._run(image, labels=True)

    def predict_proba(self, image: ImageLike | list[ImageLike]) -> np.ndarray | list[np.ndarray]:
        """Class probabilities: (C, H, W) float32 per image; a list in gives a list out."""
        return self._run(image, labels=False)

    # -- pipeline -----------------------------------------------------------------------------------------

    def _run(self, image: ImageLike | list[ImageLike], labels: bool) -> np.ndarray | list[np.ndarray]:
        images = image if isinstance(image, list) else [image]
        pixels = [unit_or_uint8(to_channels(to_pixels(item), self.in_channels)) for item in images]
        results: list[np.ndarray | None] = [None] * len(pixels)
        # Batch images of the same size (and uint8 or float) together, batch_size at a time.
        by_size: dict[tuple, list[int]] = {}
        for index, item in enumerate(pixels):
            by_size.setdefault((item.shape, item.dtype), []).append(index)
        with torch.inference_mode():
            for indices in by_size.values():
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start : start + self.batch_size]
                    # (N, C, H, W), uint8 or float in [0, 1]: what the model sees, before normalisation.
                    batch = torch.from_numpy(np.stack([pixels[i] for i in chunk])).permute(0, 3, 1, 2)
                    normalized = self.normalization.normalize(batch)
                    scores = self.scores(normalized, probabilities=not labels or self.crf is not None)
                    if self.crf is not None:  # on the pixels as the model saw them, stretched, in 0..255
                        scores = refine(scores, self.normalization.to_uint8(normalized), self.crf)
                    for i, score in zip(chunk, scores, strict=True):
                        results[i] = score.argmax(0).numpy() if labels else score.numpy()
        return results if isinstance(image, list) else results[0]

    def scores(self, batch: torch.Tensor, probabilities: bool = True) -> torch.Tensor:
        """Normalised images (N, C, H, W) with the model's channels -> (N, K, H, W) class probabilities.

        With ``probabilities=False`` and a single view (no multi-scale, no flip) the logits are
        returned instead: their argmax is the same and the softmax pass is saved.
        """
        if self.scales == (1.0,) and not self.flip:
            logits = self.logits(batch)
            return softmax_(logits) if probabilities else logits
        return average_views(self.logits, batch, self.scales, self.flip)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Normalised (N, C, H, W) -> (N, K, H, W) float32 logits, by the configured mode.

        ``pixelwise.infer.memory.layout_for`` decides, from H, W and the settings, whether the image runs
        whole or window by window and how large the windows are.
        """
        layout = layout_for(*batch.shape[-2:], self)
        if self.output_margin:
            return overlap_tile_logits(self.forward, batch, self.num_classes, layout.step, layout.window,
                                       self.output_margin)
        if layout.windowed:
            return slide_logits(self.forward, batch, self.num_classes, layout.window, layout.step)
        return self.forward(batch)


def positive_pair(value: Sequence[int], name: str) -> tuple[int, int]:
    """(rows, columns) of whole numbers >= 1, or a ValueError naming ``name``."""
    if not isinstance(value, Sequence) or len(value) != 2 or not all(
            type(side) is int and side >= 1 for side in value):
        raise ValueError(f"{name} must be two whole numbers >= 1 (rows, columns), got {value!r}")
    return (value[0], value[1])


def crf_settings(crf: bool | CRFSettings | Mapping | None, card: RunCard) -> CRFSettings | None:
    """What ``Segmenter(crf=...)`` means: None (off), the card's settings (True), or the ones given."""
    if crf is None or crf is False:
        return None
    if crf is True:
        return card.crf
    if isinstance(crf, CRFSettings):
        return crf
    if isinstance(crf, Mapping):
        return CRFSettings.from_dict(dict(crf))
    raise ValueError(f"crf must be True, False, a CRFSettings or a dict of its fields, got {crf!r}")


def average_views(logits_of: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor,
                  scales: Sequence[float] = (1.0,), flip: bool = False) -> torch.Tensor:
    """Test-time augmentation: the softmax of ``logits_of`` averaged over rescaled and mirrored views.

    ``batch`` is (N, C, H, W); each view is resized by a scale (bilinear) and optionally mirrored left-right,
    its logits are mirrored and resized back to (H, W) and the class probabilities (N, K, H, W) are averaged.
    """
    height, width = batch.shape[-2:]
    total = None
    views = [(scale, flipped) for scale in scales for flipped in ((False, True) if flip else (False,))]
    for scale, flipped in views:
        view = batch
        if scale != 1.0:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            view = F.interpolate(batch, size=size, mode="bilinear", align_corners=False)
        if flipped:
            view = view.flip(-1)
        logits = logits_of(view).float()
        if scale != 1.0 and logits.shape[-2:] != view.shape[-2:]:  # stretching a cropped output misaligns it
            raise ValueError(f"multi-scale averaging needs logits the size of their input; got "
                             f"{tuple(logits.shape[-2:])} for {tuple(view.shape[-2:])} (a valid-padding model?)")
        if flipped:
            logits = logits.flip(-1)
        if scale != 1.0:
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        probs = softmax_(logits)
        total = probs if total is None else total.add_(probs)
    return total.div_(len(views))


def softmax_(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes (dim 1) of (N, K, H, W), in place, a block of rows at a time (no full-size copy)."""
    rows = max(1, (1 << 22) // max(1, logits.shape[1] * logits.shape[-1]))
    for top in range(0, logits.shape[-2], rows):
        block = logits[..., top : top + rows, :]
        block.copy_(torch.softmax(block, dim=1))
    return logits


class TorchForward:
    """(N, C, h, w) float32 -> (N, K, h', w') float32 logits with a PyTorch model on a device and dtype."""

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype, fast: bool,
                 compile: bool) -> None:
        self.device, self.dtype = device, dtype
        self.memory_format = torch.channels_last if fast else torch.contiguous_format
        if fast:
            side = model.input_size_for(64)  # a small input the model accepts, to trace the data flow
            example = torch.randn(1, model.card.in_channels, side, side)
            model = optimize_for_cpu(model, example, dtype, compile)
        elif any(tensor.dtype != dtype or tensor.device != device for tensor in model.parameters()):
            # Converted as a copy: the caller's model, which Segmenter.model keeps (memory planning runs it on
            # float32 CPU tensors), stays in its own dtype and on its own device.
            model = copy.deepcopy(model).to(device=device, dtype=dtype)
        self.model = model.to(self.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self.dtype, memory_format=self.memory_format)
        return self.model(x).float().cpu()


class OnnxForward:
    """(N, C, h, w) float32 -> (N, K, h', w') float32 logits with onnxruntime."""

    def __init__(self, program: bytes) -> None:
        self.session = onnx_session(program)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"image": as_numpy(x)})[0])
