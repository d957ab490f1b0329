"""pixelwise: semantic segmentation, the classic family (FCN, U-Net, Hypercolumns, DeepLab).

The names below load on first use (``pixelwise.lazy``), so ``import pixelwise`` is instant.
"""

from __future__ import annotations

from pixelwise.lazy import attach

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = attach(__name__, {
    "MODELS": "pixelwise.models",
    "create_model": "pixelwise.models",
    "list_models": "pixelwise.models",
    "from_torchvision": "pixelwise.models.torchvision_compat",
    "convolutionalize": "pixelwise.nn.convolutionalize",
    "save_model": "pixelwise.checkpoint",
    "load_model": "pixelwise.checkpoint",
    "read_card": "pixelwise.checkpoint",
    "RunCard": "pixelwise.card",
    "Segmenter": "pixelwise.infer.segmenter",
})
