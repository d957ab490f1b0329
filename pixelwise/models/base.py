"""The model contract, in one place: what every registered model is, so that no caller asks for its class.

In eval mode ``model(x)`` with ``x`` (N, in_channels, H, W) returns logits (N, num_classes, H', W').
Most models are "same"-size: H' = H and W' = W for every H, W >= 1. A model may instead lose a margin
on every side (the U-Net paper's valid padding: 572 -> 388), and then says so through the contract:

- ``output_margin``: the pixels lost on each side (0 for same-size models). Output pixel ``j`` lies on
  input pixel ``j + output_margin``.
- ``size_multiple``: output tiles that start at multiples of it stitch together exactly, as one pass over
  the whole image would give (1 for same-size models).
- ``input_size_for(n)``: the input side whose output covers ``n`` pixels with the model's pooling grid
  aligned (``n`` itself for same-size models).

Inference (overlap-tile, export checks, the fast path) and evaluation read these attributes and never
import a concrete model class.
"""

from __future__ import annotations

import torch
from torch import nn

from pixelwise.card import RunCard


class SegmentationModel(nn.Module):
    """Base of every registered model; the defaults describe a same-size model.

    ``card`` (a ``RunCard``) is set by ``create_model`` and ``load_model``.
    """

    output_margin: int = 0
    size_multiple: int = 1
    card: RunCard

    @property
    def pixelwise_config(self) -> dict:
        """The architecture as plain data, ``{"name", "num_classes", "options"}`` (``card`` holds the rest)."""
        return self.card.architecture()

    def input_size_for(self, output_size: int) -> int:
        """The input side whose output covers ``output_size`` pixels (aligned for exact stitching)."""
        return output_size + 2 * self.output_margin


class BackboneHead(SegmentationModel):
    """Backbone -> a head on its deepest map -> scores upsampled to the input size (torchvision's layout).

    Subclasses build ``backbone`` (``pixelwise.backbones``), ``classifier`` (the head, ending in class
    scores) and ``upsample`` (``pixelwise.nn.ScoreUpsample``).
    """

    backbone: nn.Module
    classifier: nn.Module
    upsample: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.classifier(self.backbone(x)[-1]), x.shape[-2:])
