"""Inference: the Segmenter (whole, slide, overlap-tile, test-time augmentation), the fast CPU path, export.

Loaded on first use (``pixelwise.lazy``): ``pixelwise.infer.options`` is importable without torch.
"""

from __future__ import annotations

from pixelwise.lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "ExportError": "pixelwise.infer.export",
    "export_onnx": "pixelwise.infer.export",
    "export_torchscript": "pixelwise.infer.export",
    "fold_batchnorm": "pixelwise.infer.fast",
    "optimize_for_cpu": "pixelwise.infer.fast",
    "Segmenter": "pixelwise.infer.segmenter",
})
