"""Fully connected CRFs: the permutohedral lattice, mean-field inference (pydensecrf's semantics) and the
trainable CRF-as-RNN layer. See docs/crf.md."""

from .dense_crf import dense_crf
from .exact import gaussian_filter_exact
from .lattice import PermutohedralLattice

__all__ = ["PermutohedralLattice", "dense_crf", "gaussian_filter_exact"]
