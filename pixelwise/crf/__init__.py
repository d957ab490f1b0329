"""Fully connected CRFs: the permutohedral lattice, mean-field inference with pydensecrf's semantics, and the
trainable CRF-as-RNN layer. See docs/crf.md."""

from .crfasrnn import CRFasRNN
from .dense_crf import dense_crf
from .exact import gaussian_filter_exact
from .kernels import clear_cache
from .lattice import PermutohedralLattice

__all__ = ["CRFasRNN", "PermutohedralLattice", "clear_cache", "dense_crf", "gaussian_filter_exact"]
