"""The choices and defaults of inference, shared by ``Segmenter`` and the commands that build one.

Names and numbers only, no torch: the command line offers them without importing it.
"""

from __future__ import annotations

MODES = ("whole", "slide")
PRECISIONS = ("fp32", "bf16", "fp16")
BACKENDS = ("torch", "onnxruntime", "openvino")
EXPORT_FORMATS = ("onnx", "torchscript", "openvino")
DEFAULT_TILE = (512, 512)


def default_stride(tile: tuple[int, int]) -> tuple[int, int]:
    """Windows two thirds of a tile apart (MMSegmentation's 512/341): every pixel seen once or twice."""
    return (max(1, tile[0] * 2 // 3), max(1, tile[1] * 2 // 3))
