"""pydensecrf as a reference: the same CRF run by Krähenbühl's C++ (via PyPI's ``pydensecrf2``), and test
inputs built from label maps. Used by the tests and ``benchmarks/bench_crf.py``; pydensecrf is optional.

Install it with ``pip install pydensecrf2`` (it builds from source; needs a C++ compiler, and pulls Cython
0.29 and numpy as build dependencies by itself).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .settings import CRFSettings

__all__ = ["noisy_probabilities", "pydensecrf_available", "pydensecrf_dense_crf", "pydensecrf_filter"]


def pydensecrf_available() -> bool:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def pydensecrf_dense_crf(probs: np.ndarray, image: np.ndarray, *, iterations: int = CRFSettings.iterations,
                         gaussian_sxy: float = CRFSettings.gaussian_sxy,
                         gaussian_compat: float = CRFSettings.gaussian_compat,
                         bilateral_sxy: float = CRFSettings.bilateral_sxy,
                         bilateral_srgb: float = CRFSettings.bilateral_srgb,
                         bilateral_compat: float = CRFSettings.bilateral_compat) -> np.ndarray:
    """pydensecrf's mean field on ``probs`` (C, H, W) and ``image`` (H, W, 3) uint8: returns (C, H, W)."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    classes, height, width = probs.shape
    crf = dcrf.DenseCRF2D(width, height, classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=np.ascontiguousarray(image),
                             compat=bilateral_compat)
    return np.array(crf.inference(iterations)).reshape(classes, height, width)


def pydensecrf_filter(features: np.ndarray, values: np.ndarray, normalize: bool = True) -> np.ndarray:
    """pydensecrf's lattice filter of ``values`` (P, K) >= 0 at ``features`` (P, d), read back exactly.

    pydensecrf does not expose its filter, but one mean-field step does: with unaries ``U = -log Q0`` over
    K+1 labels and the label compatibility ``mu = diag(0, -1, ..., -1)``, the step gives
    ``log Q1_l = -U_l + (A Q0)_l - log Z`` for l >= 1 and ``log Q1_0 = -U_0 - log Z``, so
    ``(A Q0)_l = log(Q1_l / Q1_0) + U_l - U_0`` with no unknown left. Label 0 takes the remaining mass
    (``Q0_0 = 1 - sum_l Q0_l``; it is never filtered since row and column 0 of mu are 0), and the values are
    scaled so that the energies stay within a few units, where float32 logarithms are exact to ~1e-7.
    ``normalize`` selects NORMALIZE_SYMMETRIC (``D^-1/2 K D^-1/2``) or NO_NORMALIZATION (the raw lattice).
    """
    import pydensecrf.densecrf as dcrf

    feats = np.ascontiguousarray(np.asarray(features, dtype=np.float32).T)
    values = np.asarray(values, dtype=np.float64)
    points, k = values.shape
    mode = dcrf.NORMALIZE_SYMMETRIC if normalize else dcrf.NO_NORMALIZATION
    compat = -np.eye(k + 1, dtype=np.float32)
    compat[0, 0] = 0

    def step(scale: float) -> np.ndarray:
        q = values * scale
        q0 = np.concatenate([1 - q.sum(1, keepdims=True), q], 1).T
        unary = np.ascontiguousarray(-np.log(q0), dtype=np.float32)
        crf = dcrf.DenseCRF(points, k + 1)
        crf.setUnaryEnergy(unary)
        crf.addPairwiseEnergy(feats, compat=compat, kernel=dcrf.CONST_KERNEL, normalization=mode)
        q1 = np.array(crf.inference(1)).astype(np.float64)
        u = unary.astype(np.float64)
        return (np.log(q1[1:]) - np.log(q1[0]) + u[1:] - u[0]).T / scale

    total = values.sum(1).max()
    rough = np.abs(step(1e-3 / total)).max()
    return step(min(0.5 / total, 5.0 / max(rough, 1e-12)))


def noisy_probabilities(labels: np.ndarray, classes: int, seed: int = 0, noise: float = 1.0,
                        blur: int = 9) -> np.ndarray:
    """Softmax probabilities (C, H, W) float32 from a label map (H, W): one-hot logits (2 for the true
    class) plus Gaussian noise, box-blurred over ``blur`` pixels. Labels outside 0..C-1 (void) get noise only.
    A stand-in for a network's output: mostly right, wrong near edges and in patches."""
    rng = np.random.default_rng(seed)
    labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    valid = (labels >= 0) & (labels < classes)
    onehot = F.one_hot(labels.clamp(0, classes - 1), classes).permute(2, 0, 1).float() * valid
    logits = 2.0 * onehot + torch.from_numpy(rng.normal(0.0, noise, onehot.shape).astype(np.float32))
    logits = F.avg_pool2d(logits[None], blur, 1, blur // 2, count_include_pad=False)[0]
    return torch.softmax(3.0 * logits, 0).numpy()
