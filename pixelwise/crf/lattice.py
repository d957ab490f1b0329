"""The permutohedral lattice (Adams, Baek & Davis, "Fast High-Dimensional Filtering Using the Permutohedral
Lattice", Eurographics 2010), written with torch tensor operations.

A Gaussian filter in a d-dimensional feature space, ``out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j``, costs
O(P^2) for P points. The lattice approximates it in O(P (d+1)):

1. *embed*: each feature vector is lifted onto the plane ``x . 1 = 0`` of R^(d+1), where the permutohedral
   lattice tiles space with simplices; the enclosing simplex has d+1 vertices, and the point's barycentric
   coordinates in it are its splat weights;
2. *splat*: every point adds its value, times its weight, to its d+1 vertices;
3. *blur*: along each of the d+1 lattice directions, ``v <- v + (v[n1] + v[n2]) / 2``: a [1/2 1 1/2] kernel;
4. *slice*: every point reads back the weighted sum of its d+1 vertices, times ``alpha = 1 / (1 + 2^-d)``.

Only the vertices that some point touches exist, so memory is O(P (d+1)), never O(P^2). The geometry
(vertex of each point, weights, neighbours) is fixed per point set, so this module builds it once:
splat, slice and the d+1 blur steps become fixed sparse CSR matrices, and each filtering is d+3 sparse matrix
products. The arithmetic follows Krähenbühl's ``permutohedral.cpp`` (used by pydensecrf) operation for
operation in float32, so both place every point in the same simplex with the same weights.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

__all__ = ["PermutohedralLattice", "csr_matrix"]

# Vertex keys are packed into one int64 per vertex; this many bits are usable.
_CODE_BITS = 62
# Points per chunk of the embedding on CPU.
_CHUNK = 1 << 16


class PermutohedralLattice:
    """A permutohedral lattice over fixed points, ready to filter any values defined on them.

    Args:
        features: ``(P, d)`` feature vectors, already divided by their standard deviations, or
            ``(B, P, d)`` for B independent point sets (a batch of images): points of different sets never
            share a vertex, so one lattice filters the whole batch. The lattice's weights take the features'
            dtype and device; the simplex of each point is found in float32 whatever the dtype.

    The filter computed is ``alpha * S^T B_d ... B_1 B_0 S`` where S (vertices x points) splats,
    B_j blurs along lattice direction j, and ``alpha * S^T`` slices. It is linear in the values, and
    :meth:`filter` with ``transpose=True`` applies its exact transpose (the blur directions in reverse order),
    which autograd needs. Build cost O(P (d+1) log P); each filtering O(P (d+1) C) for C value channels.
    """

    def __init__(self, features: Tensor) -> None:
        if features.dim() == 2:
            features = features.unsqueeze(0)
        if features.dim() != 3 or features.shape[-1] < 1:
            raise ValueError(f"features must be (P, d) or (B, P, d), got shape {tuple(features.shape)}")
        if not features.is_floating_point():
            raise ValueError(f"features must be a floating-point tensor, got {features.dtype}")
        batch, points, d = features.shape
        self.batch_size = batch
        self.points_per_set = points
        self.num_points = n = batch * points
        self.dim = d
        self.dtype = features.dtype
        self.device = features.device
        # Slice scaling of the reference implementation ("write Andrew if you really wanna understand this").
        self.alpha = 1.0 / (1.0 + 2.0 ** (-d))

        # The geometry is computed in float32 whatever the dtype, as the reference does, so that float64
        # values (gradchecks) are filtered on exactly the lattice of their float32 counterparts.
        flat = features.reshape(n, d).float()
        layout = _KeyLayout(flat, batch)
        from pixelwise.crf import lattice_compiled  # here: numba takes half a second to import

        if self.device.type == "cpu" and lattice_compiled.available():
            self._build_compiled(flat, layout)
            return
        codes = torch.empty(n, d + 1, dtype=torch.long, device=self.device)
        weights = torch.empty(n, d + 1, dtype=self.dtype, device=self.device)
        # On CPU, chunks keep the many temporaries of the embedding small and cache-resident; on a GPU, fewer
        # and larger kernels are better.
        chunk = _CHUNK if self.device.type == "cpu" else max(n, 1)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            sets = torch.arange(start, stop, device=self.device) // points
            chunk_codes, chunk_weights = _embed(flat[start:stop], layout, sets)
            codes[start:stop] = chunk_codes.t()
            weights[start:stop] = chunk_weights.t()
        self._build(codes.view(-1), weights.view(-1), layout)

    # ------------------------------------------------------------------ construction
    def _build(self, codes: Tensor, weights: Tensor, layout: _KeyLayout) -> None:
        """Number the vertices; build the splat and slice matrices and the blur matrices.

        ``codes`` and ``weights`` hold one entry per (point p, remainder r), point-major (e = p (d+1) + r).
        Index arrays are int32 where they fit, gathers are index_select and scatters index_copy_: on CPU each
        is several times faster than its int64 / advanced-indexing counterpart."""
        n, d, dev = self.num_points, self.dim, self.device
        total = codes.numel()
        itype = torch.int32 if total < 2**31 else torch.long
        sorted_codes, order = _sort(codes, layout.bits)  # order: int64, as index_copy_ needs
        new_group = torch.empty(total, dtype=torch.bool, device=dev)
        new_group[0] = True
        torch.ne(sorted_codes[1:], sorted_codes[:-1], out=new_group[1:])
        group_start = new_group.nonzero().squeeze(1)
        m = self.num_vertices = group_start.numel()
        unique_codes = sorted_codes.index_select(0, group_start)
        del sorted_codes
        group = torch.cumsum(new_group, 0, dtype=itype)  # 1-based group of each sorted entry
        del new_group

        # Number vertices in the order the entries first touch them (as a hash table filled in pixel order
        # does), not in code order: the splat then sweeps the image coherently, which is ~1.5x faster. The sort
        # is stable, so a group's first entry is its smallest. Slot 0 of the per-group tables is unused.
        vertex_of_group = torch.zeros(m + 1, dtype=itype, device=dev)
        by_first_entry = torch.argsort(order.index_select(0, group_start))
        vertex_of_group[by_first_entry + 1] = torch.arange(m, dtype=itype, device=dev)
        vertex = vertex_of_group.index_select(0, group)

        # Slice (points x vertices): row p holds point p's d+1 vertices and barycentric weights (times alpha).
        offsets = torch.empty(total, dtype=itype, device=dev)
        offsets.index_copy_(0, order, vertex)
        crow = torch.arange(0, total + 1, d + 1, dtype=itype, device=dev)
        self._slice = csr_matrix(crow, offsets, weights * self.alpha, (n, m))
        del offsets

        # Splat (vertices x points), the slice transposed, directly in CSR: sorted entry i goes to row
        # vertex[i], after the entries of its group that precede it: position = i + (row start - group start).
        group_sizes = torch.diff(group_start, append=group_start.new_tensor([total])).to(itype)
        counts = torch.empty(m, dtype=itype, device=dev)
        counts[vertex_of_group[1:]] = group_sizes
        splat_crow = torch.zeros(m + 1, dtype=itype, device=dev)
        torch.cumsum(counts, 0, out=splat_crow[1:])
        shift = torch.zeros(m + 1, dtype=itype, device=dev)
        torch.sub(splat_crow.index_select(0, vertex_of_group[1:]), group_start.to(itype), out=shift[1:])
        position = torch.arange(total, device=dev)
        position += shift.index_select(0, group)
        del group, vertex
        columns = torch.empty(total, dtype=itype, device=dev)
        columns.index_copy_(0, position, torch.div(order.to(itype), d + 1, rounding_mode="floor"))
        values = torch.empty(total, dtype=self.dtype, device=dev)
        values.index_copy_(0, position, weights.index_select(0, order))
        self._splat = csr_matrix(splat_crow, columns, values, (m, n))
        del position, order, columns, values
        vertex_of_group = vertex_of_group[1:].long()

        # Blur: the neighbour along direction j has the key + (-1, ..., -1, d, -1, ...), d at j (all -1 for
        # j = d): a fixed key step, hence a fixed code step.
        self._blur = []
        for j in range(d + 1):
            step = [-1] * d
            if j < d:
                step[j] = d
            query = unique_codes + layout.step(step)
            found_at = _searchsorted(unique_codes, query).clamp_(max=m - 1)
            found = unique_codes[found_at] == query
            self._blur.append(_blur_matrix(vertex_of_group[found], vertex_of_group[found_at[found]], m,
                                           self.dtype))

    def _build_compiled(self, flat: Tensor, layout: _KeyLayout) -> None:
        """The same matrices from ``lattice_compiled``'s hash table: no sort, no binary search."""
        from pixelwise.crf import lattice_compiled

        d = self.dim
        vertices, weights, neighbours, _ = lattice_compiled.build_geometry(
            flat.contiguous().numpy(), self.points_per_set, np.array(_scale_factors(d), dtype=np.float32),
            np.array(layout.low, dtype=np.int64), np.array(layout.strides, dtype=np.int64))
        m = self.num_vertices = neighbours.shape[1]
        crow, columns, entries = lattice_compiled.splat_layout(vertices, m)
        weights = torch.from_numpy(weights).to(self.dtype).view(-1)
        n, total = self.num_points, weights.numel()
        self._slice = csr_matrix(torch.arange(0, total + 1, d + 1, dtype=torch.int32),
                                 torch.from_numpy(vertices).view(-1), weights * self.alpha, (n, m))
        self._splat = csr_matrix(torch.from_numpy(crow), torch.from_numpy(columns),
                                 weights.index_select(0, torch.from_numpy(entries)), (m, n))
        self._blur = []
        for along in torch.from_numpy(neighbours).long():
            found = (along >= 0).nonzero().squeeze(1)
            self._blur.append(_blur_matrix(found, along.index_select(0, found), m, self.dtype))

    # ------------------------------------------------------------------ filtering
    def splat(self, values: Tensor) -> Tensor:
        """``(P, C)`` point values -> ``(M, C)`` vertex values."""
        return self._splat @ values

    def blur(self, vertex_values: Tensor, transpose: bool = False) -> Tensor:
        """Blur ``(M, C)`` vertex values along each lattice direction (reversed order when ``transpose``)."""
        for b in reversed(self._blur) if transpose else self._blur:
            vertex_values = b @ vertex_values
        return vertex_values

    def slice(self, vertex_values: Tensor) -> Tensor:
        """``(M, C)`` vertex values -> ``(P, C)`` point values (includes the factor alpha)."""
        return self._slice @ vertex_values

    def filter(self, values: Tensor, transpose: bool = False) -> Tensor:
        """Approximate Gaussian filtering of ``(P, C)`` values (or ``(B, P, C)`` for a batched lattice).

        ``transpose=True`` applies the transposed linear map (used for gradients).
        """
        shape = values.shape
        values = values.reshape(self.num_points, -1)
        if values.dtype != self.dtype:
            raise ValueError(f"values dtype {values.dtype} differs from the lattice's {self.dtype}")
        out = self.slice(self.blur(self.splat(values.contiguous()), transpose))
        return out.reshape(shape)


# ---------------------------------------------------------------------- geometry
def _float32(x: float) -> float:
    return float(torch.tensor(x, dtype=torch.float32))


def _scale_factors(d: int) -> list[float]:
    """The diagonal of E's scaling (p.5 in the paper), for a filter of standard deviation 1 (p.6), rounded to
    float32 exactly as the reference computes them."""
    inv_std_dev = _float32(math.sqrt(2.0 / 3.0) * (d + 1))
    return [_float32(1.0 / math.sqrt((i + 2) * (i + 1)) * inv_std_dev) for i in range(d)]


# Coordinates are kept as rows of (d+1, P) tensors and looped over in Python: d is small, and torch's CPU
# kernels are far faster on long contiguous rows than on reductions over a short last dimension.
def _embed(features: Tensor, layout: _KeyLayout, sets: Tensor) -> tuple[Tensor, Tensor]:
    """Find each point's enclosing simplex: the codes (d+1, P) of its d+1 vertices and their barycentric
    weights (d+1, P).

    Mirrors the float32 arithmetic of Krähenbühl's permutohedral.cpp (elevation, rounding with ties to even,
    ranking with the earlier coordinate first on ties, barycentric weights), so that a point on a simplex
    boundary is put on the same side. Works on float buffers with ``out=``: torch's comparisons into bool
    tensors and its broadcasts are several times slower on CPU.
    """
    p, d = features.shape
    dev = features.device
    scale = _scale_factors(d)
    down = _float32(1.0 / (d + 1))
    f = features.t()
    tmp = torch.empty(p, device=dev)

    # Elevate onto the plane x . 1 = 0 of R^(d+1) (E in the paper): y_j = sum_{k>=j} c_k - j c_{j-1}.
    elevated = torch.empty(d + 1, p, device=dev)
    running = torch.zeros(p, device=dev)
    cf = torch.empty(p, device=dev)
    for j in range(d, 0, -1):
        torch.mul(f[j - 1], scale[j - 1], out=cf)
        torch.mul(cf, j, out=tmp)
        torch.sub(running, tmp, out=elevated[j])
        running += cf
    elevated[0] = running

    # The nearest remainder-0 lattice point (coordinates multiples of d+1)...
    rounded = torch.mul(elevated, down)
    rounded.round_()
    rem0 = rounded * (d + 1)
    coordinate_sum = rounded.sum(0)
    diff = elevated - rem0
    # ... and the simplex around the point: the rank of each coordinate of the difference (descending).
    # rank[j] counts the earlier coordinates not smaller than coordinate j, and the later ones larger.
    rank = torch.arange(d + 1, dtype=torch.float32, device=dev).unsqueeze(1).repeat(1, p)
    for i in range(d):
        for j in range(i + 1, d + 1):
            torch.lt(diff[i], diff[j], out=tmp)
            rank[i] += tmp
            rank[j] -= tmp
    # Points off the plane (coordinate_sum != 0) are brought back by wrapping the ranks.
    rank += coordinate_sum
    wrap = torch.empty_like(rank)
    torch.lt(rank, 0, out=wrap)
    torch.gt(rank, d, out=diff)
    wrap -= diff
    wrap *= d + 1
    rank += wrap
    rem0 += wrap

    # Barycentric coordinates (p.10 in the paper): with v_k the value of the coordinate of rank k,
    # b_p = v_(d-p) - v_(d-p+1) for p >= 1 and b_0 = v_d + (1 - v_0).
    v = torch.sub(elevated, rem0, out=elevated)
    v *= down
    by_rank = torch.zeros(d + 1, p, device=dev)
    for k in range(d + 1):
        for i in range(d + 1):
            torch.eq(rank[i], k, out=tmp)
            by_rank[k].addcmul_(tmp, v[i])
    weights = torch.empty(d + 1, p, device=dev)
    for q in range(1, d + 1):
        torch.sub(by_rank[d - q], by_rank[d - q + 1], out=weights[q])
    torch.sub(1, by_rank[0], out=tmp)
    torch.add(by_rank[d], tmp, out=weights[0])
    return layout.codes(rem0, rank, sets), weights


class _KeyLayout:
    """Packs a vertex key (its first d coordinates; the last is minus their sum) and its point set into one
    non-negative int64, linearly, so that a fixed step between keys is a fixed step between codes.

    The key ranges are bounded from the features' ranges (the elevation is linear), with room for rounding,
    the simplex's own vertices and their blur neighbours, so the codes are computed chunk by chunk."""

    def __init__(self, features: Tensor, sets: int) -> None:
        d = features.shape[1]
        scale = _scale_factors(d)
        low_f, high_f = (bound.tolist() for bound in torch.aminmax(features, dim=0))
        if not all(math.isfinite(b) for b in low_f + high_f):
            raise ValueError("features must be finite")
        lo = [a * s for a, s in zip(low_f, scale, strict=True)]
        hi = [b * s for b, s in zip(high_f, scale, strict=True)]
        pad = 4 * (d + 1)
        self.low, extent = [], []
        for j in range(d):  # y_j = sum_{k>=j} c_k - j c_{j-1}, with c = scale * f in [lo, hi]
            e_lo, e_hi = sum(lo[j:]), sum(hi[j:])
            if j > 0:
                e_lo, e_hi = e_lo - j * hi[j - 1], e_hi - j * lo[j - 1]
            self.low.append(math.floor(e_lo) - pad)
            extent.append(math.ceil(e_hi) + pad - self.low[-1] + 1)
        self.strides = [1]
        for e in extent:
            self.strides.append(self.strides[-1] * e)
        self.bits = math.log2(self.strides[-1] * sets)
        if self.bits > _CODE_BITS:
            raise ValueError(
                f"the features span too large a range for the lattice's {_CODE_BITS}-bit vertex keys "
                f"({self.bits:.0f} bits needed); use larger standard deviations or fewer images per batch")

    def codes(self, rem0: Tensor, rank: Tensor, sets: Tensor) -> Tensor:
        """The codes (d+1, P) of the d+1 vertices of each point's simplex, from its remainder-0 point and ranks
        (float32, d+1 rows each): vertex r's key is rem0 plus ``canonical[r]`` permuted by rank, where
        ``canonical[r][k] = r - (d+1) [k > d - r]``. Computed in float64 (exact below 2^53, and fast) when the
        codes fit, else in int64."""
        d = rem0.shape[0] - 1
        dtype = torch.float64 if self.bits <= 52 else torch.long
        base = sets.to(dtype) * self.strides[d]
        for i in range(d):
            base += (rem0[i].to(dtype) - self.low[i]) * self.strides[i]
        codes = torch.empty(d + 1, rem0.shape[1], dtype=dtype, device=rem0.device)
        step = torch.empty(rem0.shape[1], dtype=dtype, device=rem0.device)
        for r in range(d + 1):
            torch.add(base, r * sum(self.strides[:d]), out=codes[r])
            for i in range(d):
                if r > 0:  # rank <= d: no coordinate is above d - 0
                    torch.gt(rank[i], d - r, out=step)
                    codes[r].sub_(step, alpha=(d + 1) * self.strides[i])
        return codes.long()

    def step(self, key_step: list[int]) -> int:
        return sum(k * s for k, s in zip(key_step, self.strides, strict=False))


def _sort(codes: Tensor, bits: float) -> tuple[Tensor, Tensor]:
    """Stable sort of non-negative int64 codes: (sorted codes, order). On CPU the entry index is packed into
    the low bits and numpy's sort (vectorised with AVX-512 where available) sorts values only: several times
    faster than torch.sort with indices."""
    index_bits = max(1, (codes.numel() - 1).bit_length())
    if codes.is_cuda or math.ceil(bits) + index_bits > 63:
        return torch.sort(codes, stable=True)
    packed = torch.arange(codes.numel(), device=codes.device)
    packed |= codes << index_bits
    packed = torch.from_numpy(np.sort(packed.numpy()))
    return packed >> index_bits, packed & ((1 << index_bits) - 1)


def _searchsorted(sorted_values: Tensor, query: Tensor) -> Tensor:
    if sorted_values.is_cuda:
        return torch.searchsorted(sorted_values, query)
    return torch.from_numpy(np.searchsorted(sorted_values.numpy(), query.numpy()))


def _blur_matrix(a: Tensor, b: Tensor, m: int, dtype: torch.dtype) -> Tensor:
    """B = I + (N + N^T) / 2 for the neighbour pairs (a -> b) along one lattice direction, as CSR with three
    entries per row (previous neighbour, self, next neighbour); a missing neighbour is a zero entry, which
    keeps the layout fixed and needs no sorting."""
    rows = torch.arange(m, device=a.device)
    following = rows.clone()
    following[a] = b
    preceding = rows.clone()
    preceding[b] = a
    half_next = torch.zeros(m, dtype=dtype, device=a.device)
    half_next[a] = 0.5
    half_prev = torch.zeros(m, dtype=dtype, device=a.device)
    half_prev[b] = 0.5
    cols = torch.stack([preceding, rows, following], 1).view(-1)
    values = torch.stack([half_prev, torch.ones_like(half_prev), half_next], 1).view(-1)
    crow = torch.arange(0, 3 * m + 1, 3, device=a.device)
    return csr_matrix(crow, cols, values, (m, m))


def csr_matrix(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """A sparse CSR tensor from its three arrays (torch's CSR support works, but warns that it is beta).

    Indices are stored as int32 where they fit: MKL and cuSPARSE take them as they are, while int64 indices
    are converted on every product."""
    if max(values.numel(), *shape) < 2**31:
        crow, col = crow.int(), col.int()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=shape, check_invariants=False)
