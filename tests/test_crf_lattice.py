"""The permutohedral lattice against brute-force filtering and against pydensecrf's own lattice."""

import numpy as np
import pytest
import torch

from pixelwise.crf import PermutohedralLattice, gaussian_filter_exact, lattice_compiled
from pixelwise.crf.kernels import PairwiseKernels, pixel_features
from pixelwise.crf.reference import pydensecrf_available, pydensecrf_filter

needs_pydensecrf = pytest.mark.skipif(not pydensecrf_available(),
                                      reason="pydensecrf not installed (pip install pydensecrf2)")


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def blocky_image(size: int = 40, seed: int = 0) -> torch.Tensor:
    """(1, 3, size, size) uint8: coloured blocks with noise, so the bilateral kernel has edges to respect."""
    rng = np.random.default_rng(seed)
    blocks = np.kron(rng.integers(0, 256, (4, 4, 3)), np.ones((size // 4, size // 4, 1)))
    image = np.clip(blocks + rng.normal(0, 8, blocks.shape), 0, 255).astype(np.uint8)
    return torch.from_numpy(image).permute(2, 0, 1)[None]


def kernel_features(kind: str, size: int = 40) -> torch.Tensor:
    if kind == "gaussian":
        return pixel_features(1, size, size, 3.0)
    return pixel_features(1, size, size, 8.0, blocky_image(size), 13.0)


@pytest.mark.parametrize("kind", ["gaussian", "bilateral"])
def test_normalised_filter_close_to_exact(kind):
    features = kernel_features(kind).double()
    values = torch.rand(features.shape[1], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = PairwiseKernels([features], exact=True).filter(values)[0]
    approx = PairwiseKernels([features]).filter(values)[0]
    error = approx - exact
    # The lattice is an approximation: a few percent of the output's range at worst.
    assert error.abs().max() < 0.1
    assert error.pow(2).mean().sqrt() < 0.03


def test_exact_filter_matches_definition():
    features = torch.randn(50, 3, dtype=torch.float64)
    values = torch.randn(50, 2, dtype=torch.float64)
    kernel = torch.exp(-0.5 * ((features[:, None] - features[None]) ** 2).sum(-1))
    torch.testing.assert_close(gaussian_filter_exact(features, values, block=16), kernel @ values)


def test_transpose_is_the_adjoint():
    lattice = PermutohedralLattice(kernel_features("bilateral", 24)[0].double())
    x = torch.randn(24 * 24, 3, dtype=torch.float64)
    y = torch.randn(24 * 24, 3, dtype=torch.float64)
    forward = (y * lattice.filter(x)).sum()
    backward = (x * lattice.filter(y, transpose=True)).sum()
    torch.testing.assert_close(forward, backward)


def test_batched_lattice_filters_each_set_on_its_own():
    features = torch.randn(3, 200, 4) * 2
    values = torch.randn(3, 200, 2)
    batched = PermutohedralLattice(features).filter(values)
    for b in range(3):
        alone = PermutohedralLattice(features[b]).filter(values[b])
        torch.testing.assert_close(batched[b], alone, rtol=1e-5, atol=1e-5)


def test_memory_is_linear_in_points():
    lattice = PermutohedralLattice(torch.randn(5000, 5) * 3)
    assert lattice.num_vertices <= 6 * 5000
    assert lattice._splat.values().numel() == 6 * 5000


@needs_pydensecrf
@pytest.mark.parametrize("kind", ["gaussian", "bilateral"])
def test_raw_lattice_matches_pydensecrf(kind):
    """Same embedding, rounding and blur as Krähenbühl's code: equal up to float32 rounding."""
    features = kernel_features(kind)[0]
    values = torch.rand(features.shape[0], 4, generator=torch.Generator().manual_seed(1))
    ours = PermutohedralLattice(features).filter(values).double().numpy()
    theirs = pydensecrf_filter(features.numpy(), values.numpy(), normalize=False)
    assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max()


@needs_pydensecrf
@pytest.mark.parametrize("kind", ["gaussian", "bilateral"])
def test_filter_error_no_larger_than_pydensecrf(kind):
    """On 40x40 images, error against the exact normalised filter: ours <= pydensecrf's."""
    features = kernel_features(kind)
    values = torch.rand(features.shape[1], 3, generator=torch.Generator().manual_seed(2))
    exact = PairwiseKernels([features.double()], exact=True).filter(values.double())[0].numpy()
    ours = PairwiseKernels([features]).filter(values)[0].double().numpy()
    theirs = pydensecrf_filter(features[0].numpy(), values.numpy(), normalize=True)
    for reduce in (lambda e: np.abs(e).max(), lambda e: np.sqrt((e ** 2).mean())):
        ours_error, their_error = reduce(ours - exact), reduce(theirs - exact)
        assert ours_error <= their_error * (1 + 1e-4) + 1e-6, (ours_error, their_error)


@pytest.mark.skipif(not lattice_compiled.available(), reason='numba not installed (pip install "pixelwise[fast-crf]")')
@pytest.mark.parametrize("features", [kernel_features("gaussian", 60), kernel_features("bilateral", 60),
                                      torch.randn(2, 3000, 4) * 3], ids=["gaussian", "bilateral", "batch of 2"])
def test_compiled_build_gives_the_tensor_paths_matrices_bit_for_bit(features, monkeypatch):
    """The hash-table build (numba) and the sort-based build (torch) are two routes to one lattice."""
    compiled = PermutohedralLattice(features)
    monkeypatch.setattr(lattice_compiled, "available", lambda: False)
    tensor = PermutohedralLattice(features)
    assert compiled.num_vertices == tensor.num_vertices
    for ours, theirs in [(compiled._splat, tensor._splat), (compiled._slice, tensor._slice),
                         *zip(compiled._blur, tensor._blur, strict=True)]:
        assert torch.equal(ours.crow_indices(), theirs.crow_indices())
        assert torch.equal(ours.col_indices(), theirs.col_indices())
        assert torch.equal(ours.values(), theirs.values())
