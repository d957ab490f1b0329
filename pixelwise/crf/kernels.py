"""The pairwise kernels of the fully connected CRF (Krähenbühl & Koltun, NIPS 2011), normalised as pydensecrf
does, filtered with the permutohedral lattice or exactly.

A kernel is a Gaussian ``K[i, j] = exp(-|f_i - f_j|^2 / 2)`` over per-pixel features ``f``: positions divided
by ``sxy`` (the "smoothness" kernel) or positions and colours divided by ``sxy`` and ``srgb`` (the
"appearance", bilateral kernel). pydensecrf's default NORMALIZE_SYMMETRIC uses ``A = D^-1/2 K D^-1/2`` with
``D = diag(K 1)``; :class:`PairwiseKernels` applies every ``A_k`` of a CRF to the current marginals at once.
On the lattice path the splats of all kernels are one sparse product, and so are their slices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .exact import gaussian_kernel_matrix
from .lattice import PermutohedralLattice, csr_matrix

__all__ = ["PairwiseKernels", "pixel_features"]


def pixel_features(batch: int, height: int, width: int, sxy: float, image: Tensor | None = None,
                   srgb: float | None = None, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> Tensor:
    """Per-pixel features ``(B, H*W, d)`` in row-major pixel order: ``(x/sxy, y/sxy)`` (d = 2), or with an
    image ``(B, 3, H, W)``, ``(x/sxy, y/sxy, r/srgb, g/srgb, b/srgb)`` (d = 5), as pydensecrf's
    ``addPairwiseGaussian`` and ``addPairwiseBilateral`` build them (x is the column, y the row)."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=dtype, device=device),
                            torch.arange(width, dtype=dtype, device=device), indexing="ij")
    positions = torch.stack([xs, ys], -1).reshape(1, height * width, 2) / sxy
    positions = positions.expand(batch, -1, -1)
    if image is None:
        return positions.contiguous()
    colours = image.to(device=device, dtype=dtype).flatten(2).transpose(1, 2) / srgb
    return torch.cat([positions, colours], -1)


class PairwiseKernels:
    """Normalised Gaussian kernels ``A_k = D_k^-1/2 K_k D_k^-1/2`` over B images of P pixels each.

    Args:
        features: one ``(B, P, d_k)`` tensor per kernel (see :func:`pixel_features`); all on one device and
            of one floating dtype, which the filtering uses.
        exact: filter with dense ``P x P`` kernel matrices (ground truth, small images only) instead of the
            permutohedral lattice.

    The lattices (or matrices) and normalisations are built here, once, and reused by every call.
    """

    def __init__(self, features: Sequence[Tensor], exact: bool = False) -> None:
        if not features:
            raise ValueError("need at least one kernel")
        self.batch_size, self.points_per_image = features[0].shape[:2]
        self.num_points = self.batch_size * self.points_per_image
        self.num_kernels = len(features)
        self.exact = exact
        self.dtype = features[0].dtype
        self.device = features[0].device
        if exact:
            self._matrices = []
            for f in features:
                k = gaussian_kernel_matrix(f)
                norm = torch.rsqrt(k.sum(-1, keepdim=True) + 1e-20)
                self._matrices.append(norm * k * norm.transpose(1, 2))
            return

        ones = torch.ones(self.num_points, 1, dtype=self.dtype, device=self.device)
        splats, blurs, slices = [], [], []
        for f in features:
            lattice = PermutohedralLattice(f)
            norm = torch.rsqrt(lattice.filter(ones).squeeze(1) + 1e-20)
            splat, blur, slice_ = lattice.matrices(point_scale=norm, slice_scale=norm)
            splats.append(splat)
            blurs.append(blur)
            slices.append(slice_)
        self.num_vertices = [s.shape[0] for s in splats]
        self._slices = slices
        self._splat = _stack_rows(splats)                                   # (sum M_k) x P
        self._blur = _block_diagonal_steps(blurs)                           # each (sum M_k) x (sum M_k)
        self._slice_each = _stack_rows(_shift_columns(slices, self.num_vertices))  # (K P) x (sum M_k)
        self._transposed = None
        self._weighted = {}

    # ------------------------------------------------------------------ public
    def filter(self, q: Tensor) -> Tensor:
        """Every kernel applied to ``q`` (B*P, C): returns ``(K, B*P, C)``. Differentiable with respect to q
        (on the lattice path through a custom autograd Function that applies the transposed filter)."""
        if self.exact:
            q = q.reshape(self.batch_size, self.points_per_image, -1)
            return torch.stack([(a @ q).reshape(self.num_points, -1) for a in self._matrices])
        return _LatticeFilter.apply(q, self)

    def weighted_sum(self, q: Tensor, weights: Sequence[float]) -> Tensor:
        """``sum_k weights[k] A_k q`` for ``q`` (B*P, C), with the weights folded into the slice: no
        per-kernel outputs are materialised. For inference (no autograd through the lattice)."""
        weights = tuple(float(w) for w in weights)
        if self.exact:
            return torch.einsum("k,kpc->pc", torch.tensor(weights, dtype=q.dtype, device=q.device),
                                self.filter(q))
        if weights not in self._weighted:
            scaled = [_scale_values(s, w) for s, w in zip(self._slices, weights, strict=True)]
            self._weighted[weights] = _stack_columns_uniform(scaled, self.num_vertices)
        return self._weighted[weights] @ self._blurred(self._splat @ q)

    # ------------------------------------------------------------------ lattice internals
    def _blurred(self, x: Tensor, transpose: bool = False) -> Tensor:
        for b in reversed(self._blur) if transpose else self._blur:
            x = b @ x
        return x

    def _apply(self, q: Tensor) -> Tensor:
        out = self._slice_each @ self._blurred(self._splat @ q.contiguous())
        return out.view(self.num_kernels, self.num_points, -1)

    def _apply_transpose(self, grad: Tensor) -> Tensor:
        # (slice B splat)^T = splat^T B^T slice^T: splat^T has the layout of the slices side by side, slice^T
        # that of the splats block-diagonally; B^T is the blur steps in reverse order.
        if self._transposed is None:
            splats = self._split_splat()
            self._transposed = (_stack_rows(_shift_columns(splats, [self.num_points] * len(splats))),
                                _stack_columns_uniform(self._slices, self.num_vertices))
        splat_t, slice_t = self._transposed
        x = splat_t @ grad.reshape(self.num_kernels * self.num_points, -1).contiguous()
        return slice_t @ self._blurred(x, transpose=True)

    def _split_splat(self) -> list[Tensor]:
        """The per-kernel splat matrices (row blocks of the stacked splat)."""
        crow, col, val = self._splat.crow_indices(), self._splat.col_indices(), self._splat.values()
        parts, row = [], 0
        for m in self.num_vertices:
            lo, hi = int(crow[row]), int(crow[row + m])
            parts.append(csr_matrix(crow[row:row + m + 1] - lo, col[lo:hi], val[lo:hi],
                                  (m, self.num_points)))
            row += m
        return parts


class _LatticeFilter(torch.autograd.Function):
    """q -> (A_1 q, ..., A_K q). The map is linear, so its backward is the transposed filter applied to the
    incoming gradient: no graph is kept through the lattice."""

    @staticmethod
    def forward(ctx, q: Tensor, kernels: PairwiseKernels) -> Tensor:
        ctx.kernels = kernels
        return kernels._apply(q)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        return ctx.kernels._apply_transpose(grad), None


# ---------------------------------------------------------------------- CSR assembly
def _stack_rows(mats: Sequence[Tensor]) -> Tensor:
    """Matrices with equal column counts, one above the other."""
    crows, offset = [mats[0].crow_indices()[:1]], 0
    for m in mats:
        crows.append(m.crow_indices()[1:] + offset)
        offset += m.values().numel()
    rows = sum(m.shape[0] for m in mats)
    return csr_matrix(torch.cat(crows), torch.cat([m.col_indices() for m in mats]),
                torch.cat([m.values() for m in mats]), (rows, mats[0].shape[1]))


def _shift_columns(mats: Sequence[Tensor], widths: Sequence[int]) -> list[Tensor]:
    """Give matrix k the columns after those of matrices 0..k-1 (for block-diagonal stacking)."""
    out, offset, total = [], 0, sum(widths)
    for m, w in zip(mats, widths, strict=True):
        out.append(csr_matrix(m.crow_indices(), m.col_indices() + offset, m.values(), (m.shape[0], total)))
        offset += w
    return out


def _stack_columns_uniform(mats: Sequence[Tensor], widths: Sequence[int]) -> Tensor:
    """Matrices with equal row counts and a fixed number of entries per row, side by side."""
    rows = mats[0].shape[0]
    cols, vals, offset = [], [], 0
    for m, w in zip(mats, widths, strict=True):
        cols.append(m.col_indices().view(rows, -1) + offset)
        vals.append(m.values().view(rows, -1))
        offset += w
    col, val = torch.cat(cols, 1), torch.cat(vals, 1)
    crow = torch.arange(0, col.numel() + 1, col.shape[1], device=col.device)
    return csr_matrix(crow, col.reshape(-1), val.reshape(-1), (rows, offset))


def _scale_values(m: Tensor, scale: float) -> Tensor:
    return csr_matrix(m.crow_indices(), m.col_indices(), m.values() * scale, tuple(m.shape))


def _identity(n: int, like: Tensor) -> Tensor:
    idx = torch.arange(n + 1, device=like.device)
    return csr_matrix(idx, idx[:-1], torch.ones(n, dtype=like.dtype, device=like.device), (n, n))


def _block_diagonal_steps(blurs: Sequence[Sequence[Tensor]]) -> list[Tensor]:
    """Blur step j of every kernel as one block-diagonal matrix; a kernel with fewer directions (lower d)
    contributes the identity to the extra steps."""
    sizes = [b[0].shape[0] for b in blurs]
    steps = []
    for j in range(max(len(b) for b in blurs)):
        blocks = [b[j] if j < len(b) else _identity(n, b[0].values()) for b, n in zip(blurs, sizes, strict=True)]
        steps.append(_stack_rows(_shift_columns(blocks, sizes)))
    return steps
