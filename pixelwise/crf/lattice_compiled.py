"""The permutohedral lattice's geometry with a compiled hash table (numba), as Krähenbühl's C++ builds it.

``pixelwise.crf.lattice`` finds the vertices with tensor operations: a sort of every (point, vertex) key, then
binary searches for the blur neighbours. That build costs more than the filtering it prepares. Here one
compiled pass embeds each point (the same float32 arithmetic, operation for operation, as the tensor path and
``permutohedral.cpp``), inserts its d+1 vertex keys into an open-addressing hash table in point order, and a
second pass looks up each vertex's neighbours: O(P (d+1)) with no sort. Vertices are numbered in the order the
points first touch them, as in the tensor path, so both give the same sparse matrices bit for bit.

Optional: ``pip install "pixelwise[fast-crf]"``. Without numba, and on CUDA, the tensor path runs.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # the tensor path in lattice.py stands in
    numba = None

EMPTY = -1  # a free slot of the hash table


def available() -> bool:
    return numba is not None


def build_geometry(features: np.ndarray, points_per_set: int, scale: np.ndarray, low: np.ndarray,
                   strides: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each point's d+1 vertices and barycentric weights, and each vertex's neighbour along every direction.

    ``features`` (P, d) float32; ``scale`` the elevation's d scale factors (float32); ``low`` and ``strides``
    pack a vertex key and its point set into one int64 code (``_KeyLayout``). Returns ``vertices`` (P, d+1)
    int32, ``weights`` (P, d+1) float32, ``neighbours`` (d+1, M) int32 (the vertex one step along the
    direction, -1 where none exists) and ``codes`` (M,) int64.
    """
    vertex_codes, weights = _embed(features, points_per_set, scale, low, strides)
    vertices, codes = _number_vertices(vertex_codes.reshape(-1))
    d = features.shape[1]
    steps = np.array([_key_step(j, d, strides) for j in range(d + 1)], dtype=np.int64)
    return vertices.reshape(vertex_codes.shape), weights, _neighbours(codes, steps), codes


def _key_step(direction: int, d: int, strides: np.ndarray) -> int:
    """The code step to the neighbour along ``direction``: key + (-1, ..., d at ``direction``, ..., -1)."""
    return int(sum((d if i == direction else -1) * int(strides[i]) for i in range(d)))


if numba is not None:
    # One thread: numba's parallel loops start a second OpenMP pool beside torch's, whose spinning workers
    # then slow every torch operation of the process (measured: 0.3 ms -> 50 ms for one blur matrix).
    @numba.njit(cache=True)
    def _embed(features, points_per_set, scale, low, strides):  # pragma: no cover (compiled)
        p, d = features.shape
        down = np.float32(1.0 / (d + 1))
        codes = np.empty((p, d + 1), dtype=np.int64)
        weights = np.empty((p, d + 1), dtype=np.float32)
        elevated = np.empty(d + 1, dtype=np.float32)  # scratch, reused for every point
        rem0 = np.empty(d + 1, dtype=np.float32)
        rank = np.empty(d + 1, dtype=np.float32)
        by_rank = np.empty(d + 1, dtype=np.float32)
        for point in range(p):
            _embed_point(features, point, points_per_set, scale, low, strides, down, elevated, rem0, rank,
                         by_rank, codes, weights)
        return codes, weights

    @numba.njit(cache=True, inline="always")
    def _embed_point(features, point, points_per_set, scale, low, strides, down, elevated, rem0, rank, by_rank,
                     codes, weights):  # pragma: no cover (compiled)
        d = features.shape[1]
        f32 = np.float32
        running = f32(0.0)
        for j in range(d, 0, -1):
            cf = features[point, j - 1] * scale[j - 1]
            elevated[j] = running - cf * f32(j)
            running += cf
        elevated[0] = running
        coordinate_sum = f32(0.0)
        for i in range(d + 1):
            rounded = np.rint(elevated[i] * down)  # ties to even, as torch.round
            rem0[i] = rounded * f32(d + 1)
            coordinate_sum += rounded
            rank[i] = f32(i)
        for i in range(d):
            for j in range(i + 1, d + 1):
                if elevated[i] - rem0[i] < elevated[j] - rem0[j]:
                    rank[i] += f32(1.0)
                    rank[j] -= f32(1.0)
        for i in range(d + 1):
            rank[i] += coordinate_sum
            wrap = f32(0.0)
            if rank[i] < 0:
                wrap = f32(d + 1)
            elif rank[i] > d:
                wrap = -f32(d + 1)
            rank[i] += wrap
            rem0[i] += wrap
        for i in range(d + 1):
            by_rank[int(rank[i])] = (elevated[i] - rem0[i]) * down
        for q in range(1, d + 1):
            weights[point, q] = by_rank[d - q] - by_rank[d - q + 1]
        weights[point, 0] = by_rank[d] + (f32(1.0) - by_rank[0])
        base = np.int64(point // points_per_set) * strides[d]
        for i in range(d):
            base += (np.int64(rem0[i]) - low[i]) * strides[i]
        for r in range(d + 1):
            code = base
            for i in range(d):
                code += r * strides[i]
                if r > 0 and rank[i] > d - r:
                    code -= (d + 1) * strides[i]
            codes[point, r] = code

    @numba.njit(cache=True)
    def _hash(code, mask):  # pragma: no cover (compiled)
        # splitmix64's finaliser: the codes are linear in the key, so neighbours must not share buckets.
        z = np.uint64(code) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return np.int64((z ^ (z >> np.uint64(31))) & np.uint64(mask))

    @numba.njit(cache=True)
    def _number_vertices(entry_codes):  # pragma: no cover (compiled)
        size = 1
        while size < 2 * entry_codes.size:
            size *= 2
        mask = size - 1
        slots = np.full(size, EMPTY, dtype=np.int64)
        slot_vertex = np.empty(size, dtype=np.int32)
        vertices = np.empty(entry_codes.size, dtype=np.int32)
        codes = np.empty(entry_codes.size, dtype=np.int64)
        count = 0
        for entry in range(entry_codes.size):
            code = entry_codes[entry]
            slot = _hash(code, mask)
            while slots[slot] != EMPTY and slots[slot] != code:
                slot = (slot + 1) & mask
            if slots[slot] == EMPTY:
                slots[slot] = code
                slot_vertex[slot] = count
                codes[count] = code
                count += 1
            vertices[entry] = slot_vertex[slot]
        return vertices, codes[:count].copy()

    @numba.njit(cache=True)
    def _neighbours(codes, steps):  # pragma: no cover (compiled)
        m = codes.size
        size = 1
        while size < 2 * m:
            size *= 2
        mask = size - 1
        slots = np.full(size, EMPTY, dtype=np.int64)
        slot_vertex = np.empty(size, dtype=np.int32)
        for vertex in range(m):
            slot = _hash(codes[vertex], mask)
            while slots[slot] != EMPTY:
                slot = (slot + 1) & mask
            slots[slot] = codes[vertex]
            slot_vertex[slot] = vertex
        neighbours = np.full((steps.size, m), -1, dtype=np.int32)
        for direction in range(steps.size):
            for vertex in range(m):
                query = codes[vertex] + steps[direction]
                slot = _hash(query, mask)
                while slots[slot] != EMPTY:
                    if slots[slot] == query:
                        neighbours[direction, vertex] = slot_vertex[slot]
                        break
                    slot = (slot + 1) & mask
        return neighbours

    @numba.njit(cache=True)
    def splat_layout(vertices, m):  # pragma: no cover (compiled)
        """The splat matrix's CSR layout, the slice's transposed: row starts (M+1,), then for each entry in row
        order its point and its position in ``vertices`` (P, d+1); entries of a row in increasing point order."""
        p, width = vertices.shape
        crow = np.zeros(m + 1, dtype=np.int32)
        for point in range(p):
            for r in range(width):
                crow[vertices[point, r] + 1] += 1
        for row in range(m):
            crow[row + 1] += crow[row]
        fill = crow[:-1].copy()
        columns = np.empty(p * width, dtype=np.int32)
        entries = np.empty(p * width, dtype=np.int64)
        for point in range(p):
            for r in range(width):
                row = vertices[point, r]
                columns[fill[row]] = point
                entries[fill[row]] = point * width + r
                fill[row] += 1
        return crow, columns, entries

