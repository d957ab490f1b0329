"""Segmentation losses over logits (N, C, H, W) and targets (N, H, W) with an ignore label.

- ``cross_entropy``: per-pixel softmax cross-entropy, optionally class-weighted (SegNet's median-frequency
  balancing: weight_c = median(freq) / freq_c, from ``pixelwise.data.median_frequency_weights``).
- ``focal_loss``: Lin et al. 2017, ``-(1 - p_t) ** gamma * log p_t``; gamma = 0 is cross-entropy.
- ``dice_loss``: 1 - mean over classes of the soft Dice coefficient (Milletari et al., V-Net 2016).
- ``lovasz_softmax``: Berman et al. 2018, the Lovász extension of the Jaccard loss: a convex surrogate
  that optimises IoU directly.
- ``ohem_cross_entropy``: online hard example mining: cross-entropy over the pixels whose true-class
  probability is below a threshold, and at least the ``min_kept`` hardest ones.

Auxiliary heads: a model that wants deep supervision sets ``self.aux_outputs`` (a list of logits, any
resolution) in ``forward`` while training; ``SegmentationLoss`` adds ``aux_weights[i]`` times the same loss
on each (upsampled bilinearly to the target's size). Models without the attribute are unaffected.

Every loss is computed in float32 (autocast may hand in bf16/fp16 logits) and returns a scalar; a batch
with no labelled pixel gives a zero that still carries the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.data.base import IGNORE_INDEX
from pixelwise.nn.skip import center_crop
from pixelwise.train.config import LossConfig

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross-entropy over labelled pixels; with ``weight`` (C,), the weighted mean (as torch's)."""
    if not (target != ignore_index).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, weight=weight, ignore_index=ignore_index)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               weight: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Focal loss, averaged like ``cross_entropy`` (weighted by ``weight[target]`` when given)."""
    valid = target != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    log_probs = F.log_softmax(logits.float(), dim=1)
    safe_target = torch.where(valid, target, 0)
    log_pt = log_probs.gather(1, safe_target.unsqueeze(1)).squeeze(1)[valid]
    # (1 - p_t) ** gamma shrinks the loss of pixels the model already gets right.
    losses = -((1 - log_pt.exp()) ** gamma) * log_pt
    pixel_weight = torch.ones_like(losses) if weight is None else weight.float()[safe_target[valid]]
    return (pixel_weight * losses).sum() / pixel_weight.sum()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX,
              smooth: float = 1.0) -> torch.Tensor:
    """1 - mean_c (2 sum(p_c y_c) + smooth) / (sum(p_c) + sum(y_c) + smooth), over labelled pixels.

    Sums run over the whole batch; ``smooth`` keeps a class absent from both target and prediction at a
    Dice of 1 (no penalty) and the gradient finite.
    """
    valid = target != ignore_index
    probs = F.softmax(logits.float(), dim=1) * valid.unsqueeze(1)
    one_hot = F.one_hot(torch.where(valid, target, 0), logits.shape[1]).permute(0, 3, 1, 2) * valid.unsqueeze(1)
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    total = probs.sum(dims) + one_hot.sum(dims)
    return 1 - ((2 * intersection + smooth) / (total + smooth)).mean()


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Lovász-softmax over the batch's labelled pixels, averaged over the classes present in the target."""
    valid = target != ignore_index
    probs = F.softmax(logits.float(), dim=1).permute(0, 2, 3, 1)[valid]  # (P, C)
    labels = target[valid]
    present = labels.unique()
    if present.numel() == 0:
        return logits.sum() * 0.0
    losses = []
    for cls in present:
        foreground = (labels == cls).float()
        errors = (foreground - probs[:, cls]).abs()
        losses.append(lovasz_extension(errors, foreground))
    return torch.stack(losses).mean()


def lovasz_extension(errors: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    """The Lovász extension of the Jaccard loss at pixel ``errors`` (P,) in [0, 1], for a 0/1 ``foreground``.

    Sorting the errors in decreasing order, the extension is sum_i e_(i) * (J(S_i) - J(S_(i-1))), where
    S_i is the set of the i largest errors and J(S) = |S| / |foreground ∪ S| is the Jaccard loss of
    mispredicting exactly S.
    """
    errors_sorted, order = errors.sort(descending=True)
    fg_sorted = foreground[order]
    # |foreground ∪ S_i| = |foreground| + (background pixels among the first i); |S_i| = i.
    union = fg_sorted.sum() + (1 - fg_sorted).cumsum(0)
    jaccard = torch.arange(1, len(errors) + 1, device=errors.device, dtype=errors.dtype) / union
    increments = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return (errors_sorted * increments).sum()


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.7,
                       min_kept: int = 100_000, weight: torch.Tensor | None = None,
                       ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy over the hard pixels: true-class probability < ``threshold``, else the ``min_kept`` lowest."""
    valid = target != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    logits = logits.float()
    safe_target = torch.where(valid, target, 0)
    pixel_losses = F.cross_entropy(logits, safe_target, reduction="none")[valid]
    with torch.no_grad():
        true_prob = F.softmax(logits, dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)[valid]
        kept = true_prob < threshold
        wanted = min(min_kept, true_prob.numel())
        if int(kept.sum()) < wanted:
            # Too few pixels under the threshold: take the `wanted` hardest (lowest probability) instead.
            kept = torch.zeros_like(kept)
            kept[true_prob.topk(wanted, largest=False).indices] = True
    pixel_weight = torch.ones_like(pixel_losses) if weight is None else weight.float()[safe_target[valid]]
    pixel_weight = pixel_weight * kept
    return (pixel_weight * pixel_losses).sum() / pixel_weight.sum().clamp(min=1e-12)


def crop_target_to(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The target (N, H, W) centre-cropped to the logits' size (a valid-padding U-Net outputs less)."""
    if target.shape[-2:] == logits.shape[-2:]:
        return target
    return center_crop(target, logits.shape[-2:])


class SegmentationLoss(nn.Module):
    """The configured loss of the main logits plus weighted auxiliary-head losses.

    ``forward(logits, target, aux_outputs=())``: logits (N, C, h, w), target (N, H, W) int64; the target is
    centre-cropped to (h, w) when the model's output is smaller (valid padding), auxiliary logits are
    resized to the target's size.
    """

    def __init__(self, config: LossConfig, class_weights: torch.Tensor | None = None,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.config = config
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", class_weights, persistent=False)

    def single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        config, weight, ignore = self.config, self.class_weights, self.ignore_index
        if config.name == "cross_entropy":
            return cross_entropy(logits, target, weight, ignore)
        if config.name == "focal":
            return focal_loss(logits, target, config.focal_gamma, weight, ignore)
        if config.name == "dice":
            return dice_loss(logits, target, ignore)
        if config.name == "lovasz":
            return lovasz_softmax(logits, target, ignore)
        if config.name == "ohem":
            return ohem_cross_entropy(logits, target, config.ohem_threshold, config.ohem_min_kept, weight, ignore)
        raise ValueError(f"unknown loss {config.name!r}")

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                aux_outputs: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        target = crop_target_to(logits, target)
        loss = self.single(logits, target)
        for weight, aux in zip(self.config.aux_weights, aux_outputs, strict=False):
            aux = F.interpolate(aux.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
            loss = loss + weight * self.single(aux, target)
        return loss
