"""Backbones: image (N, C, H, W) -> a list of feature maps, shallow to deep.

Every backbone has ``channels`` and ``strides`` attributes describing the maps its forward returns.
"""

from pixelwise.backbones.vgg import VGG16

__all__ = ["VGG16"]
