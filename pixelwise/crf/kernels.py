"""The pairwise kernels of the fully connected CRF (Krähenbühl & Koltun, NIPS 2011), normalised as pydensecrf
does, filtered with the permutohedral lattice or exactly.

A kernel is a Gaussian ``K[i, j] = exp(-|f_i - f_j|^2 / 2)`` over per-pixel features ``f``: positions divided
by ``sxy`` (the "smoothness" kernel) or positions and colours divided by ``sxy`` and ``srgb`` (the
"appearance", bilateral kernel). pydensecrf's default NORMALIZE_SYMMETRIC uses ``A = D^-1/2 K D^-1/2`` with
``D = diag(K 1)``; :class:`PairwiseKernels` applies every ``A_k`` of a CRF to the current marginals at once.
On the lattice path the splats of all kernels are one sparse product, and so are their slices.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .exact import gaussian_kernel_matrix
from .lattice import PermutohedralLattice, csr_matrix

__all__ = ["PairwiseKernels", "clear_cache", "pixel_features"]


def pixel_features(batch: int, height: int, width: int, sxy: float, image: Tensor | None = None,
                   srgb: float | None = None, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> Tensor:
    """Per-pixel features ``(B, H*W, d)`` in row-major pixel order: ``(x/sxy, y/sxy)`` (d = 2), or with an
    image ``(B, 3, H, W)``, ``(x/sxy, y/sxy, r/srgb, g/srgb, b/srgb)`` (d = 5), as pydensecrf's
    ``addPairwiseGaussian`` and ``addPairwiseBilateral`` build them (x is the column, y the row)."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=dtype, device=device),
                            torch.arange(width, dtype=dtype, device=device), indexing="ij")
    # Divide by a tensor: CUDA multiplies by the reciprocal of a Python number, which is off by an ulp now and
    # then, and a point moved by an ulp can change which lattice vertices exist (and so the result).
    positions = torch.stack([xs, ys], -1).reshape(1, height * width, 2) / torch.tensor(sxy, dtype=dtype,
                                                                                     device=device)
    positions = positions.expand(batch, -1, -1)
    if image is None:
        return positions.contiguous()
    colours = image.to(device=device, dtype=dtype).flatten(2).transpose(1, 2)
    return torch.cat([positions, colours / torch.tensor(srgb, dtype=dtype, device=device)], -1)


class _LatticeKernel(NamedTuple):
    """One Gaussian kernel on the lattice: ``A = diag(norm) slice blur splat diag(norm)``."""

    splat: Tensor  # (M, P) CSR: barycentric weights
    blur: list[Tensor]  # d+1 (M, M) CSR
    slice: Tensor  # (P, M) CSR: alpha * barycentric weights, d+1 entries per row
    norm: Tensor  # (P,): (K 1)^-1/2
    row_sum_max: float  # max_i (A 1)_i


def _lattice_kernel(features: Tensor) -> _LatticeKernel:
    lattice = PermutohedralLattice(features)
    ones = torch.ones(lattice.num_points, 1, dtype=lattice.dtype, device=lattice.device)
    norm = torch.rsqrt(lattice.filter(ones).squeeze(1) + 1e-20)
    row_sums = norm * lattice.filter(norm.unsqueeze(1)).squeeze(1)
    return _LatticeKernel(lattice._splat, lattice._blur, lattice._slice, norm, float(row_sums.max()))


# Kernels that do not depend on the image (the smoothness kernel depends only on the image size and sxy) are
# kept for reuse across calls: on CPU only, where their build costs as much as two mean-field iterations.
_CACHE: OrderedDict[tuple, _LatticeKernel] = OrderedDict()
_CACHE_SIZE = 4


def clear_cache() -> None:
    """Forget the cached image-independent kernels."""
    _CACHE.clear()


def _kernel(features: Tensor, key: tuple | None) -> _LatticeKernel:
    if key is None or features.device.type != "cpu":
        return _lattice_kernel(features)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    # Built as ordinary tensors even under torch.inference_mode: inference tensors cannot be read outside it,
    # and the cache outlives the call (a Segmenter's CRF first, a plain dense_crf call later).
    with torch.inference_mode(False):
        kernel = _CACHE[key] = _lattice_kernel(features.clone())
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return kernel


class PairwiseKernels:
    """Normalised Gaussian kernels ``A_k = D_k^-1/2 K_k D_k^-1/2`` over B images of P pixels each.

    Args:
        features: one ``(B, P, d_k)`` tensor per kernel (see :func:`pixel_features`); all on one device and
            of one floating dtype, which the filtering uses.
        exact: filter with dense ``P x P`` kernel matrices (ground truth, small images only) instead of the
            permutohedral lattice.
        cache_keys: optional, one per kernel: a hashable key that identifies the features completely (for
            kernels independent of the image), under which a CPU kernel is cached across calls.

    The lattices (or matrices) and normalisations are built here, once, and reused by every call. The splats
    of all kernels form one sparse matrix, their blur steps block-diagonal matrices, and their slices (with
    any fixed weights folded in) one more: a filtering is a handful of sparse products whatever K.
    """

    def __init__(self, features: Sequence[Tensor], exact: bool = False,
                 cache_keys: Sequence[tuple | None] | None = None) -> None:
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
            self.row_sum_max = [float(a.sum(-1).max()) for a in self._matrices]
            return

        keys = cache_keys or [None] * len(features)
        self._kernels = [_kernel(f, key) for f, key in zip(features, keys, strict=True)]
        self.num_vertices = [k.splat.shape[0] for k in self._kernels]
        self.row_sum_max = [k.row_sum_max for k in self._kernels]  # max_i (A_k 1)_i: bounds A_k q for q in [0, 1]
        self._splat = _stacked_splats(self._kernels)  # (sum M_k) x P, norms folded in
        self._blur = _block_diagonal_steps([k.blur for k in self._kernels])
        self._weighted: dict[tuple[float, ...], Tensor] = {}
        self._slice_each: Tensor | None = None
        self._transposed: tuple[Tensor, Tensor] | None = None
        self._vertex_buffers: tuple[Tensor, Tensor] | None = None

    # ------------------------------------------------------------------ public
    def filter(self, q: Tensor) -> Tensor:
        """Every kernel applied to ``q`` (B*P, C): returns ``(K, B*P, C)``. Differentiable with respect to q
        (on the lattice path through a custom autograd Function that applies the transposed filter)."""
        if self.exact:
            q = q.reshape(self.batch_size, self.points_per_image, -1)
            return torch.stack([(a @ q).reshape(self.num_points, -1) for a in self._matrices])
        return _LatticeFilter.apply(q, self)

    def weighted_sum(self, q: Tensor, weights: Sequence[float], minus: Tensor | None = None,
                     out: Tensor | None = None) -> Tensor:
        """``sum_k weights[k] A_k q - minus`` for ``q`` (B*P, C), with the weights folded into the slice: no
        per-kernel outputs are materialised. For inference (no autograd through the lattice). ``out`` may be
        ``q`` itself: q is read before out is written."""
        weights = tuple(float(w) for w in weights)
        if self.exact:
            result = torch.einsum("k,kpc->pc", torch.tensor(weights, dtype=q.dtype, device=q.device),
                                  self.filter(q))
            return result if minus is None else result - minus
        if weights not in self._weighted:
            self._weighted[weights] = _slices_side_by_side(
                self._kernels, [w * k.norm for w, k in zip(weights, self._kernels, strict=True)])
        slice_ = self._weighted[weights]
        if q.device.type != "cpu":
            result = slice_ @ self._blurred(self._splat @ q)
            return result if minus is None else result - minus
        # On CPU, products into preallocated buffers skip an allocation and a zero fill each.
        x, spare = self._buffers(q.shape[1])
        torch.mm(self._splat, q, out=x)
        for b in self._blur:
            torch.mm(b, x, out=spare)
            x, spare = spare, x
        result = torch.mm(slice_, x, out=out)
        # Not addmm(minus, ..., beta=-1): three times slower here than the product and a subtraction.
        return result if minus is None else result.sub_(minus)

    def _buffers(self, channels: int) -> tuple[Tensor, Tensor]:
        if self._vertex_buffers is None or self._vertex_buffers[0].shape[1] != channels:
            shape = (sum(self.num_vertices), channels)
            self._vertex_buffers = tuple(torch.empty(shape, dtype=self.dtype, device=self.device) for _ in "ab")
        return self._vertex_buffers

    # ------------------------------------------------------------------ lattice internals
    def _blurred(self, x: Tensor, transpose: bool = False) -> Tensor:
        for b in reversed(self._blur) if transpose else self._blur:
            x = b @ x
        return x

    def _apply(self, q: Tensor) -> Tensor:
        if self._slice_each is None:
            self._slice_each = _slices_stacked(self._kernels)
        out = self._slice_each @ self._blurred(self._splat @ q.contiguous())
        return out.view(self.num_kernels, self.num_points, -1)

    def _apply_transpose(self, grad: Tensor) -> Tensor:
        # (slice B splat)^T = splat^T B^T slice^T: slice^T is the splats block-diagonally, splat^T the slices
        # side by side, and B^T the blur steps in reverse order.
        if self._transposed is None:
            offsets = torch.cat([torch.full_like(k.splat.col_indices(), i * self.num_points)
                                 for i, k in enumerate(self._kernels)])
            splat_t = csr_matrix(self._splat.crow_indices(), self._splat.col_indices() + offsets,
                                 self._splat.values(), (sum(self.num_vertices), self.num_kernels * self.num_points))
            self._transposed = (splat_t, _slices_side_by_side(self._kernels, [k.norm for k in self._kernels]))
        splat_t, slice_t = self._transposed
        x = splat_t @ grad.reshape(self.num_kernels * self.num_points, -1).contiguous()
        return slice_t @ self._blurred(x, transpose=True)


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
def _stacked_splats(kernels: Sequence[_LatticeKernel]) -> Tensor:
    """``[S_1 diag(n_1); ...; S_K diag(n_K)]``: the splats one above the other, normalisations folded in."""
    crows, offset = [kernels[0].splat.crow_indices()[:1]], 0
    for k in kernels:
        crows.append(k.splat.crow_indices()[1:] + offset)
        offset += k.splat.values().numel()
    values = torch.empty(offset, dtype=kernels[0].norm.dtype, device=kernels[0].norm.device)
    start = 0
    for k in kernels:
        stop = start + k.splat.values().numel()
        torch.mul(k.splat.values(), k.norm.index_select(0, k.splat.col_indices()), out=values[start:stop])
        start = stop
    rows = sum(k.splat.shape[0] for k in kernels)
    return csr_matrix(torch.cat(crows), torch.cat([k.splat.col_indices() for k in kernels]), values,
                      (rows, kernels[0].splat.shape[1]))


def _slices_side_by_side(kernels: Sequence[_LatticeKernel], row_scales: Sequence[Tensor]) -> Tensor:
    """``[diag(s_1) T_1, ..., diag(s_K) T_K]`` (P x sum M_k) for slices T_k with d_k+1 entries per row."""
    points = kernels[0].slice.shape[0]
    widths = [k.slice.values().numel() // points for k in kernels]
    index_type = torch.int32 if points * sum(widths) < 2**31 else torch.long
    cols = torch.empty(points, sum(widths), dtype=index_type, device=kernels[0].norm.device)
    values = torch.empty(points, sum(widths), dtype=kernels[0].norm.dtype, device=kernels[0].norm.device)
    start, offset = 0, 0
    for k, width, scale in zip(kernels, widths, row_scales, strict=True):
        torch.add(k.slice.col_indices().view(points, width), offset, out=cols[:, start:start + width])
        torch.mul(k.slice.values().view(points, width), scale.unsqueeze(1), out=values[:, start:start + width])
        start += width
        offset += k.slice.shape[1]
    crow = torch.arange(0, cols.numel() + 1, cols.shape[1], dtype=index_type, device=cols.device)
    return csr_matrix(crow, cols.view(-1), values.view(-1), (points, offset))


def _slices_stacked(kernels: Sequence[_LatticeKernel]) -> Tensor:
    """``[diag(n_1) T_1, 0, ...; 0, diag(n_2) T_2, ...]`` (K P x sum M_k): each kernel's normalised slice in
    its own rows and columns, so one product gives every kernel's output."""
    crows, cols, values, nnz, offset = [], [], [], 0, 0
    for k in kernels:
        crow = k.slice.crow_indices()
        crows.append((crow if not crows else crow[1:]) + nnz)
        cols.append(k.slice.col_indices() + offset)
        points = k.slice.shape[0]
        values.append((k.slice.values().view(points, -1) * k.norm.unsqueeze(1)).view(-1))
        nnz += k.slice.values().numel()
        offset += k.slice.shape[1]
    rows = sum(k.slice.shape[0] for k in kernels)
    return csr_matrix(torch.cat(crows), torch.cat(cols), torch.cat(values), (rows, offset))


def _stack_rows(mats: Sequence[Tensor]) -> Tensor:
    """Matrices with equal column counts, one above the other."""
    crows, offset = [mats[0].crow_indices()[:1]], 0
    for m in mats:
        crows.append(m.crow_indices()[1:] + offset)
        offset += m.values().numel()
    rows = sum(m.shape[0] for m in mats)
    return csr_matrix(torch.cat(crows), torch.cat([m.col_indices() for m in mats]),
                      torch.cat([m.values() for m in mats]), (rows, mats[0].shape[1]))


def _identity(n: int, like: Tensor) -> Tensor:
    idx = torch.arange(n + 1, device=like.device)
    return csr_matrix(idx, idx[:-1], torch.ones(n, dtype=like.dtype, device=like.device), (n, n))


def _block_diagonal_steps(blurs: Sequence[Sequence[Tensor]]) -> list[Tensor]:
    """Blur step j of every kernel as one block-diagonal matrix; a kernel with fewer directions (lower d)
    contributes the identity to the extra steps."""
    if len(blurs) == 1:
        return list(blurs[0])
    sizes = [b[0].shape[0] for b in blurs]
    total = sum(sizes)
    steps = []
    for j in range(max(len(b) for b in blurs)):
        blocks, offset = [], 0
        for b, n in zip(blurs, sizes, strict=True):
            block = b[j] if j < len(b) else _identity(n, b[0].values())
            blocks.append(csr_matrix(block.crow_indices(), block.col_indices() + offset, block.values(),
                                     (n, total)))
            offset += n
        steps.append(_stack_rows(blocks))
    return steps
