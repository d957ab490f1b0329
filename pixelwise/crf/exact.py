"""Brute-force Gaussian filtering: the ground truth the permutohedral lattice approximates.

``out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j`` over all pairs, self included (the lattice includes it too).
O(P^2) time, O(P * block) memory: for small images (tests, gradchecks), never for real inference.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gaussian_filter_exact", "gaussian_kernel_matrix"]


def gaussian_kernel_matrix(features: Tensor) -> Tensor:
    """The dense kernel ``K[i, j] = exp(-|f_i - f_j|^2 / 2)`` of ``(P, d)`` features, or ``(B, P, P)`` for
    ``(B, P, d)``. Memory O(P^2)."""
    return torch.exp(-0.5 * _squared_distances(features, features))


def gaussian_filter_exact(features: Tensor, values: Tensor, block: int = 4096) -> Tensor:
    """Exact Gaussian filter of ``values`` (P, C) at points ``features`` (P, d); or batched (B, P, C) and
    (B, P, d), each set filtered on its own. Rows are processed ``block`` at a time to bound memory."""
    if features.dim() == 2:
        return gaussian_filter_exact(features.unsqueeze(0), values.unsqueeze(0), block).squeeze(0)
    out = torch.empty(values.shape, dtype=values.dtype, device=values.device)
    for start in range(0, features.shape[1], block):
        rows = features[:, start:start + block]
        weights = torch.exp(-0.5 * _squared_distances(rows, features))
        out[:, start:start + block] = weights @ values
    return out


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    # Differences, not |a|^2 + |b|^2 - 2ab: the latter cancels badly for features far from the origin.
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").square()
