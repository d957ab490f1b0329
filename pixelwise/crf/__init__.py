"""Fully connected CRFs: the permutohedral lattice, mean-field inference with pydensecrf's semantics, and the
trainable CRF-as-RNN layer. See docs/crf.md.

``CRFSettings`` holds the one set of defaults; ``refine`` is the post-processing step that ``Segmenter`` and
``pixelwise eval`` both run. ``pixelwise.crf.reference`` runs the same CRF through pydensecrf (optional).
"""

from .crfasrnn import CRFasRNN
from .dense_crf import dense_crf, refine
from .exact import gaussian_filter_exact
from .kernels import clear_cache
from .lattice import PermutohedralLattice
from .settings import DEEPLAB_VOC, CRFSettings

__all__ = [
    "DEEPLAB_VOC",
    "CRFSettings",
    "CRFasRNN",
    "PermutohedralLattice",
    "clear_cache",
    "dense_crf",
    "gaussian_filter_exact",
    "refine",
]
