"""Hypercolumns (Hariharan, Arbeláez, Girshick & Malik, CVPR 2015).

The hypercolumn of a pixel is the stack of the activations above it at several depths of the network:
shallow layers localise, deep layers recognise. Here the taps are VGG16's pool2 (stride 4), pool4
(stride 16) and fc7 (stride 32), 128 + 512 + 4096 = 4736 numbers per pixel.

Two ideas of the paper, both used here:

- Classify per pixel with a linear classifier on the hypercolumn. Upsampling is linear, so
  "upsample every tap, concatenate, classify" equals "classify every tap, upsample the scores, sum"
  (section 3.3), and the second never materialises 4736 channels at full resolution.
- Location-specific classifiers. Inside a box, a ``grid_size x grid_size`` grid of classifiers each
  owns one cell; a pixel's score interpolates the scores of the nearby cells bilinearly (a pixel in
  the top-left of a person box can learn "head", one at the bottom "feet").

``forward(image)`` treats each whole image as one box and returns (N, C, H, W) logits.
``forward(image, boxes=[...])`` runs on each box (x1, y1, x2, y2 in pixels) as the paper does, with
features computed once per image and cut out per box by RoIAlign, and returns per-box masks.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn
from torchvision.ops import roi_align

from pixelwise.backbones import build_backbone
from pixelwise.backbones.pretrained import load_backbone_weights
from pixelwise.models.base import SegmentationModel
from pixelwise.nn.upsample import resize_to


class Hypercolumn(SegmentationModel):
    """VGG16 hypercolumns with a grid of location-specific per-pixel classifiers."""

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        grid_size: int = 5,
        dropout: float = 0.5,
        pretrained_backbone: bool | str | os.PathLike = False,
    ) -> None:
        super().__init__()
        if grid_size < 1:
            raise ValueError(f"grid_size must be >= 1, got {grid_size}")
        self.num_classes = num_classes
        self.grid_size = grid_size
        self.backbone = build_backbone("vgg16", in_channels)
        # fc6/fc7 convolutionalized; padding 3 keeps fc6 on pool5's grid for any input size.
        self.fc = nn.Sequential(
            nn.Conv2d(512, 4096, 7, padding=3),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(4096, 4096, 1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )
        self.tap_strides = (4, 16, 32)
        outputs = grid_size * grid_size * num_classes
        # One 1x1 classifier per tap; their upsampled sum is one linear classifier on the hypercolumn.
        self.classifiers = nn.ModuleList(nn.Conv2d(c, outputs, 1) for c in (128, 512, 4096))
        if pretrained_backbone:  # ImageNet VGG16, fc6/fc7 convolutionalized
            vgg = nn.ModuleDict({"features": self.backbone.features, "classifier": self.fc})
            load_backbone_weights(vgg, "vgg16", pretrained_backbone)

    def taps(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The tapped features pool2, pool4 and fc7: (N, 128 | 512 | 4096, h_t, w_t) at ``tap_strides``."""
        _, pool2, _, pool4, pool5 = self.backbone(image)
        return pool2, pool4, self.fc(pool5)

    def tap_scores(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Per-tap scores (N, G*G*C, h_t, w_t) at each tap's own stride."""
        return [classify(tap) for classify, tap in zip(self.classifiers, self.taps(image), strict=True)]

    def cell_logits(self, scores: list[torch.Tensor], rois: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Every grid cell's classifier over the whole of each box: (K, G*G, C, h, w) on an h x w grid over
        the boxes of ``rois`` (K, 5) = (index, x1, y1, x2, y2), before ``grid_weights`` picks by location."""
        summed = sum(
            roi_align(s, rois, output_size=size, spatial_scale=1.0 / stride, sampling_ratio=2, aligned=True)
            for s, stride in zip(scores, self.tap_strides, strict=True)
        )
        return summed.view(len(rois), self.grid_size * self.grid_size, self.num_classes, *size)

    def box_logits(self, scores: list[torch.Tensor], rois: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Logits (K, C, h, w) on an h x w grid over each box of ``rois`` (K, 5) = (index, x1, y1, x2, y2)."""
        cells = self.cell_logits(scores, rois, size)
        return torch.einsum("kgchw,ghw->kchw", cells, self.grid_weights(size, cells))

    def grid_weights(self, size: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        """(G*G, h, w): how much each grid cell's classifier counts at each pixel; sums to 1 per pixel."""
        g = self.grid_size
        cells = torch.eye(g * g, dtype=like.dtype, device=like.device).view(1, g * g, g, g)
        return resize_to(cells, size)[0]

    def forward(
        self, image: torch.Tensor, boxes: list[torch.Tensor] | None = None
    ) -> torch.Tensor | list[list[torch.Tensor]]:
        """image (N, C_in, H, W). Without boxes: logits (N, C, H, W). With ``boxes``, a list of N
        tensors (K_i, 4) of (x1, y1, x2, y2) pixel corners: for each image a list of K_i logit masks
        (C, ceil(y2 - y1), ceil(x2 - x1)) covering its boxes."""
        n, _, height, width = image.shape
        scores = self.tap_scores(image)
        if boxes is None:
            whole = torch.tensor([[0.0, 0.0, width, height]], dtype=image.dtype, device=image.device)
            rois = torch.cat([torch.arange(n, dtype=image.dtype, device=image.device)[:, None],
                              whole.expand(n, 4)], dim=1)
            # Classify on the stride-4 grid of the finest tap, then interpolate to full resolution.
            grid = (math.ceil(height / 4), math.ceil(width / 4))
            return resize_to(self.box_logits(scores, rois, grid), (height, width))
        if len(boxes) != n:
            raise ValueError(f"boxes must hold one (K, 4) tensor per image: got {len(boxes)} for {n} images")
        masks: list[list[torch.Tensor]] = []
        for index, image_boxes in enumerate(boxes):
            image_boxes = torch.as_tensor(image_boxes, dtype=image.dtype, device=image.device).reshape(-1, 4)
            per_image = []
            for box in image_boxes:
                x1, y1, x2, y2 = box.tolist()
                if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
                    raise ValueError(
                        f"box {box.tolist()} of image {index} is empty or outside the {width}x{height} image"
                    )
                size = (math.ceil(y2 - y1), math.ceil(x2 - x1))
                roi = torch.cat([box.new_tensor([index]), box])[None]
                per_image.append(self.box_logits(scores, roi, size)[0])
            masks.append(per_image)
        return masks
