"""CRF as RNN (Zheng et al., "Conditional Random Fields as Recurrent Neural Networks", ICCV 2015): mean-field
inference of the fully connected CRF unrolled into differentiable layers, trained with the network under it.

One iteration, on logits ``z`` (the negated unaries) and the current marginals ``Q = softmax(z_t)``:

1. message passing: ``F_k = A_k Q`` for the smoothness and appearance kernels (normalised Gaussian filters,
   see :mod:`.kernels`; on the permutohedral lattice, or exactly);
2. weighting: ``m = sum_k w_k * F_k`` with learnable per-class weights ``w_k`` (C,);
3. compatibility transform: ``p = m mu^T`` with a learnable ``mu`` (C, C), initialised to the Potts model
   ``1 - I`` (a cost for neighbours taking different labels);
4. ``z_{t+1} = z - p``; the next iteration takes ``Q = softmax(z_{t+1})``.

With Potts ``mu`` and scalar weights this is exactly :func:`.dense_crf`'s update. Gradients reach the logits,
the weights and ``mu`` through every iteration; through the lattice they flow by a custom autograd Function
whose backward applies the transposed filter (the filter is linear), so no graph is kept inside it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .dense_crf import image_tensor
from .kernels import PairwiseKernels, pixel_features
from .settings import CRFSettings

__all__ = ["CRFasRNN", "mean_field"]


def mean_field(logits: Tensor, kernels: PairwiseKernels, kernel_weights: Tensor, compatibility: Tensor,
               iterations: int) -> Tensor:
    """Unrolled mean field on ``logits`` (P, C) with ``kernel_weights`` (K, C) and ``compatibility`` (C, C):
    returns the refined logits (P, C). Differentiable in all three tensors."""
    z = logits
    for _ in range(iterations):
        filtered = kernels.filter(torch.softmax(z, 1))  # (K, P, C)
        message = (filtered * kernel_weights.unsqueeze(1)).sum(0)
        z = logits - message @ compatibility.t()
    return z


class CRFasRNN(nn.Module):
    """A trainable fully connected CRF layer: ``forward(logits, image) -> refined logits``.

    Args:
        num_classes: C.
        iterations: mean-field iterations unrolled in the forward pass (Zheng et al. train with 5).
        gaussian_sxy: standard deviation (pixels) of the smoothness kernel (fixed).
        bilateral_sxy: positional standard deviation (pixels) of the appearance kernel (fixed).
        bilateral_srgb: colour standard deviation (0..255) of the appearance kernel (fixed).
        gaussian_weight: initial weight of the smoothness kernel, for every class (learned).
        bilateral_weight: initial weight of the appearance kernel, for every class (learned).
        exact: filter with dense kernel matrices instead of the lattice (tiny images only; for tests).

    Parameters: ``kernel_weights`` (2, C), rows smoothness and appearance; ``compatibility`` (C, C),
    initialised to ``1 - I``.
    """

    def __init__(self, num_classes: int, iterations: int = CRFSettings.iterations, *,
                 gaussian_sxy: float = CRFSettings.gaussian_sxy, bilateral_sxy: float = CRFSettings.bilateral_sxy,
                 bilateral_srgb: float = CRFSettings.bilateral_srgb,
                 gaussian_weight: float = CRFSettings.gaussian_compat,
                 bilateral_weight: float = CRFSettings.bilateral_compat, exact: bool = False) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {iterations}")
        self.num_classes = num_classes
        self.iterations = iterations
        self.gaussian_sxy = gaussian_sxy
        self.bilateral_sxy = bilateral_sxy
        self.bilateral_srgb = bilateral_srgb
        self.exact = exact
        self.kernel_weights = nn.Parameter(
            torch.tensor([[gaussian_weight], [bilateral_weight]]).repeat(1, num_classes))
        self.compatibility = nn.Parameter(1 - torch.eye(num_classes))

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, iterations={self.iterations}, gaussian_sxy={self.gaussian_sxy}, "
                f"bilateral_sxy={self.bilateral_sxy}, bilateral_srgb={self.bilateral_srgb}, exact={self.exact}")

    def forward(self, logits: Tensor, image: Tensor) -> Tensor:
        """``logits`` (N, C, H, W) (negated unaries, e.g. a segmentation network's output) and the uint8
        ``image`` (N, 3, H, W) -> refined logits (N, C, H, W)."""
        if logits.dim() != 4 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must be (N, {self.num_classes}, H, W), got shape {tuple(logits.shape)}")
        batch, classes, height, width = logits.shape
        images = image_tensor(image, batch, height, width, logits.device)
        dtype = logits.dtype
        features = [
            pixel_features(batch, height, width, self.gaussian_sxy, dtype=dtype, device=logits.device),
            pixel_features(batch, height, width, self.bilateral_sxy, images, self.bilateral_srgb, dtype=dtype,
                           device=logits.device),
        ]
        smoothness_key = ("smoothness", batch, height, width, float(self.gaussian_sxy), dtype)
        kernels = PairwiseKernels(features, exact=self.exact, cache_keys=[smoothness_key, None])
        z = logits.permute(0, 2, 3, 1).reshape(-1, classes)
        z = mean_field(z, kernels, self.kernel_weights.to(dtype), self.compatibility.to(dtype), self.iterations)
        return z.view(batch, height, width, classes).permute(0, 3, 1, 2)
