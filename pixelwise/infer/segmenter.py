"""``Segmenter``: images in, label maps or class probabilities out.

>>> segmenter = Segmenter("runs/camvid-unet", mode="slide", scales=(0.75, 1.0, 1.25), flip=True)
>>> labels = segmenter.predict("street.png")            # (H, W) int64
>>> probs = segmenter.predict_proba(["a.png", "b.png"])  # list of (C, H, W) float32

One pipeline for every model: read -> normalise (with the run's statistics) -> logits by one of
the modes -> test-time augmentation -> softmax -> optional dense CRF -> argmax.

- ``mode="whole"`` runs the whole image at once; ``"slide"`` runs overlapping windows (see ``sliding``).
  A valid-padding U-Net always runs overlap-tile (see ``overlap_tile``): one tile in whole mode,
  ``tile``-sized output tiles in slide mode.
- ``scales`` and ``flip`` average the softmax over rescaled and mirrored copies of the image,
  DeepLab v3's "+MS +Flip" evaluation.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pixelwise.checkpoint import load_model
from pixelwise.data.base import voc_palette
from pixelwise.infer.export import as_numpy, export_onnx, in_channels, onnx_session
from pixelwise.infer.fast import optimize_for_cpu
from pixelwise.infer.inputs import ImageLike, normalization, normalize_batch, to_channels, to_uint8
from pixelwise.infer.overlap_tile import overlap_tile_logits, valid_padding_depth
from pixelwise.infer.sliding import slide_logits
from pixelwise.models.unet import valid_input_size

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("whole", "slide")
BACKENDS = ("torch", "onnxruntime")


class Segmenter:
    """Semantic segmentation of images with a saved run (a directory) or a model from ``create_model``.

    ``device`` and ``precision`` ("fp32", "bf16", "fp16") apply to the torch backend; ``backend=
    "onnxruntime"`` exports the model to ONNX in memory and runs it on the CPU in fp32. ``fast=True``
    folds BatchNorm, uses channels-last memory and (``compile=True``) torch.compile. ``crf`` is None
    or the keyword arguments of ``pixelwise.crf.dense_crf``, applied to the probabilities.
    """

    def __init__(
        self,
        model_or_run_dir: nn.Module | str | os.PathLike,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        mode: str = "whole",
        tile: tuple[int, int] = (512, 512),
        stride: tuple[int, int] = (341, 341),
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        crf: dict[str, Any] | None = None,
        backend: str = "torch",
        fast: bool = False,
        compile: bool = False,
        batch_size: int = 4,
    ) -> None:
        for option, value, allowed in (("precision", precision, PRECISIONS), ("mode", mode, MODES),
                                       ("backend", backend, BACKENDS)):
            if value not in allowed:
                raise ValueError(f"{option} must be one of {', '.join(allowed)}; got {value!r}")
        if backend == "onnxruntime" and (precision != "fp32" or torch.device(device).type != "cpu"):
            raise ValueError("the onnxruntime backend runs in fp32 on the CPU")
        if not scales or any(scale <= 0 for scale in scales):
            raise ValueError(f"scales must be positive numbers, got {tuple(scales)}")
        if isinstance(model_or_run_dir, nn.Module):
            model = model_or_run_dir.eval()
        else:
            model = load_model(model_or_run_dir)
        config = getattr(model, "pixelwise_config", None)
        if config is None:
            raise ValueError("Segmenter needs a run directory or a model from pixelwise.create_model / load_model")
        self.config = config
        self.num_classes = int(config["num_classes"])
        self.class_names = config.get("class_names") or [f"class {index}" for index in range(self.num_classes)]
        self.palette = config.get("palette") or voc_palette(self.num_classes)
        self.in_channels = in_channels(model)
        self.mean, self.std = normalization(config.get("metadata") or {}, self.in_channels)
        self.mode, self.tile, self.stride = mode, tuple(tile), tuple(stride)
        self.scales, self.flip, self.crf = tuple(scales), flip, crf
        self.batch_size = batch_size
        if crf is not None:
            try:
                from pixelwise.crf import dense_crf
            except ImportError as error:
                raise ImportError("crf= needs pixelwise.crf.dense_crf, which this installation lacks") from error
            self.dense_crf = dense_crf
        self.valid_depth = valid_padding_depth(model)
        if self.valid_depth is not None and mode == "slide" and any(side % 2**self.valid_depth for side in self.tile):
            raise ValueError(f"overlap-tile output tiles must be multiples of {2**self.valid_depth}, got {self.tile}")
        if backend == "onnxruntime":
            self.forward = OnnxForward(export_onnx(model))
        else:
            self.forward = TorchForward(model, device, PRECISIONS[precision], fast, compile, self.valid_depth)

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
        pixels = [to_uint8(item) for item in images]
        results: list[np.ndarray | None] = [None] * len(pixels)
        # Batch images of the same size together, batch_size at a time.
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, item in enumerate(pixels):
            by_size.setdefault(item.shape[:2], []).append(index)
        with torch.inference_mode():
            for indices in by_size.values():
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start : start + self.batch_size]
                    scores = self.scores([pixels[i] for i in chunk], probabilities=not labels or self.crf is not None)
                    for i, score in zip(chunk, scores, strict=True):
                        if self.crf is not None:
                            score = self._apply_crf(score, pixels[i])
                        results[i] = score.argmax(0).numpy() if labels else score.numpy()
        return results if isinstance(image, list) else results[0]

    def scores(self, pixels: list[np.ndarray], probabilities: bool = True) -> torch.Tensor:
        """Same-size uint8 (H, W[, C]) images -> (N, K, H, W) class probabilities.

        With ``probabilities=False`` and a single view (no multi-scale, no flip) the logits are
        returned instead: their argmax is the same and the softmax pass is saved.
        """
        batch = normalize_batch([to_channels(p, self.in_channels) for p in pixels], self.mean, self.std)
        if self.scales == (1.0,) and not self.flip:
            logits = self.logits(batch)
            return softmax_(logits) if probabilities else logits
        return average_views(self.logits, batch, self.scales, self.flip)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Normalised (N, C, H, W) -> (N, K, H, W) float32 logits, by the configured mode."""
        if self.valid_depth is not None:
            unit = 2**self.valid_depth
            step = self.tile if self.mode == "slide" else tuple(-(-side // unit) * unit for side in batch.shape[-2:])
            return overlap_tile_logits(self.forward, batch, self.num_classes, step, self.valid_depth)
        if self.mode == "slide":
            return slide_logits(self.forward, batch, self.num_classes, self.tile, self.stride)
        return self.forward(batch)

    def _apply_crf(self, probs: torch.Tensor, pixels: np.ndarray) -> torch.Tensor:
        rgb = np.ascontiguousarray(to_channels(pixels, 3))
        return torch.as_tensor(np.asarray(self.dense_crf(probs, rgb, **self.crf)))


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

    def __init__(
        self, model: nn.Module, device: str | torch.device, dtype: torch.dtype, fast: bool, compile: bool,
        valid_depth: int | None,
    ) -> None:
        self.device, self.dtype = torch.device(device), dtype
        self.memory_format = torch.channels_last if fast else torch.contiguous_format
        if fast:
            side = 64 if valid_depth is None else valid_input_size(2**valid_depth, valid_depth)
            example = torch.randn(1, in_channels(model), side, side)
            model = optimize_for_cpu(model, example, dtype, compile)
        else:
            model = model.to(dtype=dtype)
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
