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

import torch
from torch import Tensor

__all__ = ["PermutohedralLattice", "csr_matrix"]

# Vertex keys are packed into one int64 per vertex; this many bits are usable.
_CODE_BITS = 62


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
        self.num_points = batch * points
        self.dim = d
        self.dtype = features.dtype
        self.device = features.device
        # Slice scaling of the reference implementation ("write Andrew if you really wanna understand this").
        self.alpha = 1.0 / (1.0 + 2.0 ** (-d))

        # The geometry is computed in float32 whatever the dtype, as the reference does, so that float64
        # values (gradchecks) are filtered on exactly the lattice of their float32 counterparts.
        rem0, rank, weights = _embed(features.reshape(-1, d).float())
        weights = weights.to(self.dtype)
        set_index = torch.arange(batch, device=self.device).repeat_interleave(points)
        codes, encode = _vertex_codes(rem0, rank, set_index)
        self._build(codes, weights, encode, d)

    # ------------------------------------------------------------------ construction
    def _build(self, codes: Tensor, weights: Tensor, encode, d: int) -> None:
        """Number the vertices, build the splat/slice matrices and the blur neighbour matrices."""
        n, dp1 = self.num_points, d + 1
        # Entries are (remainder r, point p) pairs in r-major order; along the points of one remainder the
        # vertex rarely changes (neighbouring pixels share simplices), so dedupe runs before sorting.
        flat_codes = codes.reshape(-1)
        flat_weights = weights.reshape(-1)
        total = flat_codes.numel()
        run_start = torch.ones(total, dtype=torch.bool, device=self.device)
        run_start[1:] = flat_codes[1:] != flat_codes[:-1]
        starts = run_start.nonzero().squeeze(1)
        lengths = torch.diff(starts, append=starts.new_tensor([total]))
        run_codes = flat_codes[starts]

        sorted_codes, order = torch.sort(run_codes)
        new_vertex = torch.ones_like(sorted_codes, dtype=torch.bool)
        new_vertex[1:] = sorted_codes[1:] != sorted_codes[:-1]
        vertex_of_sorted_run = new_vertex.cumsum(0) - 1
        unique_codes = sorted_codes[new_vertex]
        m = unique_codes.numel()
        self.num_vertices = m

        # Renumber vertices by the first point touching them (as a hash table filled in pixel order does):
        # rows of the splat matrix then follow the image and stay cache-friendly.
        first_point = torch.full((m,), total, dtype=torch.long, device=self.device)
        first_point.scatter_reduce_(0, vertex_of_sorted_run, starts[order] % n, reduce="amin")
        vertex_rank = torch.empty_like(first_point)
        vertex_rank[torch.argsort(first_point)] = torch.arange(m, device=self.device)
        run_vertex = torch.empty_like(starts)
        run_vertex[order] = vertex_rank[vertex_of_sorted_run]

        # Slice matrix (points x vertices): row p holds point p's d+1 vertices and barycentric weights.
        entry_vertex = torch.repeat_interleave(run_vertex, lengths, output_size=total)
        offsets = entry_vertex.view(dp1, n).t().contiguous()
        self.offsets = offsets
        self.weights = weights.t().contiguous()
        crow = torch.arange(0, total + 1, dp1, device=self.device)
        self._slice = csr_matrix(crow, offsets.view(-1), self.weights.view(-1) * self.alpha,
                                              (n, m))

        # Splat matrix (vertices x points) = the slice matrix transposed, built directly in CSR: group the runs
        # by their new vertex number and expand each run back into its entries.
        by_vertex = torch.argsort(run_vertex)
        run_len = lengths[by_vertex]
        run_first = starts[by_vertex]
        run_offset = torch.cumsum(run_len, 0) - run_len
        entries = torch.repeat_interleave(run_first - run_offset, run_len, output_size=total)
        entries += torch.arange(total, device=self.device)
        counts = torch.zeros(m, dtype=torch.long, device=self.device)
        counts.scatter_add_(0, run_vertex, lengths)
        splat_crow = torch.zeros(m + 1, dtype=torch.long, device=self.device)
        torch.cumsum(counts, 0, out=splat_crow[1:])
        self._splat = csr_matrix(splat_crow, entries % n, flat_weights[entries], (m, n))

        # Blur: neighbours along direction j differ by a fixed key offset, hence by a fixed code offset.
        sorted_to_new = vertex_rank
        self._blur = []
        for j in range(dp1):
            step = torch.full((d,), -1, dtype=torch.long)
            if j < d:
                step[j] = d
            query = unique_codes + encode(step)
            found_at = torch.searchsorted(unique_codes, query).clamp_(max=m - 1)
            found = unique_codes[found_at] == query
            a = sorted_to_new[found]
            b = sorted_to_new[found_at[found]]
            self._blur.append(_blur_matrix(a, b, m, self.dtype))

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

    def matrices(self, point_scale: Tensor | None = None, slice_scale: Tensor | None = None):
        """The (splat, blur list, slice) CSR matrices, with optional per-point scales folded in.

        ``point_scale`` (P,) multiplies the values before splatting, ``slice_scale`` (P,) the sliced result:
        folding them in saves two elementwise passes per filtering (used by the normalised CRF kernels).
        """
        splat, slice_ = self._splat, self._slice
        if point_scale is not None:
            splat = _scale_columns(splat, point_scale)
        if slice_scale is not None:
            slice_ = _scale_rows(slice_, slice_scale)
        return splat, list(self._blur), slice_


# ---------------------------------------------------------------------- geometry
# Coordinates are kept as rows of (d+1, P) tensors and looped over in Python: d is small, and torch's CPU
# kernels are far faster on long contiguous rows than on reductions over a short last dimension.
def _embed(features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Find each point's enclosing simplex.

    Returns ``rem0`` (d+1, P) int64, the remainder-0 vertex of the simplex; ``rank`` (d+1, P) int64, the
    permutation that orders the simplex's vertices; and the barycentric ``weights`` (d+1, P) of vertices
    r = 0..d. Mirrors the float32 arithmetic of Krähenbühl's permutohedral.cpp step by step (elevation,
    rounding with ties to even, ranking with index tie-break, barycentric weights), so a point exactly on a
    simplex boundary is put on the same side.
    """
    p, d = features.shape
    dt, dev = features.dtype, features.device
    inv_std_dev = float(torch.tensor(math.sqrt(2.0 / 3.0) * (d + 1), dtype=torch.float32))
    scale = [float(torch.tensor(1.0 / math.sqrt((i + 2) * (i + 1)) * inv_std_dev, dtype=dt)) for i in range(d)]
    down = float(torch.tensor(1.0 / (d + 1), dtype=torch.float32))
    f = features.t()

    # Elevate onto the plane x . 1 = 0 of R^(d+1) (E in the paper): y_j = sum_{k>=j} c_k - j c_{j-1}.
    elevated = torch.empty(d + 1, p, dtype=dt, device=dev)
    running = torch.zeros(p, dtype=dt, device=dev)
    for j in range(d, 0, -1):
        cf = f[j - 1] * scale[j - 1]
        torch.sub(running, cf * j, out=elevated[j])
        running = running + cf
    elevated[0] = running

    # Nearest remainder-0 lattice point (coordinates multiples of d+1)...
    rounded = torch.round(elevated * down)
    rem0 = rounded * (d + 1)
    coordinate_sum = rounded.sum(0).long()
    diff = elevated - rem0
    # ... then the simplex containing the point: the rank of each coordinate of the difference (descending,
    # the earlier coordinate first on ties).
    rank = torch.zeros(d + 1, p, dtype=torch.long, device=dev)
    for i in range(d):
        for j in range(i + 1, d + 1):
            smaller = diff[i] < diff[j]
            rank[i] += smaller
            rank[j] += ~smaller
    # Points off the plane (coordinate_sum != 0) are brought back by wrapping the ranks.
    rank += coordinate_sum
    wrap = (rank < 0).long() - (rank > d).long()
    rank += wrap * (d + 1)
    rem0 += wrap.to(dt) * (d + 1)

    # Barycentric coordinates (p.10 in the paper).
    v = (elevated - rem0) * down
    bary = torch.zeros(d + 2, p, dtype=dt, device=dev)
    bary.scatter_add_(0, d - rank, v)
    bary.scatter_add_(0, d - rank + 1, -v)
    bary[0] = bary[0] + (1 + bary[d + 1])
    return rem0.long(), rank, bary[: d + 1]


def _vertex_codes(rem0: Tensor, rank: Tensor, set_index: Tensor):
    """Pack the key of every vertex of every simplex (and its point set) into one int64, linearly, so that a
    fixed step between keys is a fixed step between codes. Returns the codes (d+1, P), vertex r of point p at
    [r, p], and the encoder of a key step.

    Vertex r's key is ``rem0 + canonical[r]`` permuted by rank, with ``canonical[r][k] = r - (d+1) [k > d - r]``
    (only the first d coordinates: the last one is minus their sum)."""
    d = rem0.shape[0] - 1
    # Keys lie within d+1 of rem0, their neighbours within d more: pad the ranges so nothing wraps.
    low = rem0[:d].amin(1) - 2 * (d + 1)
    high = rem0[:d].amax(1) + 2 * (d + 1)
    extent = (high - low + 1).tolist()
    sets = int(set_index[-1]) + 1
    bits = sum(math.log2(e) for e in extent) + math.log2(sets)
    if bits > _CODE_BITS:
        raise ValueError(
            f"the features span too large a range for the lattice's {_CODE_BITS}-bit vertex keys "
            f"({bits:.0f} bits needed); use larger standard deviations or fewer images per batch")
    strides = [1]
    for e in extent:
        strides.append(strides[-1] * e)

    base = set_index * strides[d]
    for i in range(d):
        base = base + (rem0[i] - int(low[i])) * strides[i]
    codes = torch.empty(d + 1, rem0.shape[1], dtype=torch.long, device=rem0.device)
    for r in range(d + 1):
        code = base + r * sum(strides[:d])
        for i in range(d):
            code -= (rank[i] > d - r).long() * ((d + 1) * strides[i])
        codes[r] = code

    def encode(step: Tensor) -> int:
        return sum(int(s) * strides[i] for i, s in enumerate(step))

    return codes, encode


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


def _scale_columns(csr: Tensor, scale: Tensor) -> Tensor:
    return csr_matrix(csr.crow_indices(), csr.col_indices(),
                                   csr.values() * scale[csr.col_indices()], tuple(csr.shape))


def _scale_rows(csr: Tensor, scale: Tensor) -> Tensor:
    crow = csr.crow_indices()
    row = torch.repeat_interleave(scale, torch.diff(crow), output_size=csr.values().numel())
    return csr_matrix(crow, csr.col_indices(), csr.values() * row, tuple(csr.shape))


def csr_matrix(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """A sparse CSR tensor from its three arrays (torch's CSR support works, but warns that it is beta)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=shape, check_invariants=False)
