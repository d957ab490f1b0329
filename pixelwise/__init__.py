"""pixelwise: semantic segmentation, the classic family (FCN, U-Net, Hypercolumns, DeepLab)."""

from pixelwise.checkpoint import load_model, read_config, save_model
from pixelwise.infer import Segmenter
from pixelwise.models import MODELS, create_model, list_models
from pixelwise.models.torchvision_compat import from_torchvision
from pixelwise.nn.convolutionalize import convolutionalize

__version__ = "0.1.0"

__all__ = [
    "MODELS",
    "Segmenter",
    "convolutionalize",
    "create_model",
    "from_torchvision",
    "list_models",
    "load_model",
    "read_config",
    "save_model",
]
