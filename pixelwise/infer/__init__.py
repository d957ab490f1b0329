"""Inference: the Segmenter (whole, slide, overlap-tile, test-time augmentation), the fast CPU path, export."""

from pixelwise.infer.export import ExportError, export_onnx, export_torchscript
from pixelwise.infer.fast import fold_batchnorm, optimize_for_cpu
from pixelwise.infer.segmenter import Segmenter

__all__ = ["ExportError", "Segmenter", "export_onnx", "export_torchscript", "fold_batchnorm", "optimize_for_cpu"]
