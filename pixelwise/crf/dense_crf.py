"""Mean-field inference in the fully connected CRF (Krähenbühl & Koltun, "Efficient Inference in Fully
Connected CRFs with Gaussian Edge Potentials", NIPS 2011), with pydensecrf's semantics.

Energy of a labelling: ``sum_i U_i(l_i) + sum_{i,j} mu(l_i, l_j) sum_k w_k A_k[i, j]`` with unaries
``U = -log(clip(p, 1e-5))``, a smoothness kernel over positions and an appearance (bilateral) kernel over
positions and colours, each normalised symmetrically (see :mod:`.kernels`). Mean field starts from
``Q = softmax(-U)`` and repeats ``Q <- softmax(-U - sum_k mu_k (A_k Q))``; with the Potts model
``mu_k = -w_k I`` that is ``softmax(-U + sum_k w_k A_k Q)``. Like pydensecrf's code (and unlike the sum over
j != i in the paper), ``A_k Q`` includes each pixel's own term.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import Tensor

from .kernels import PairwiseKernels, pixel_features
from .settings import CRFSettings

__all__ = ["dense_crf", "mean_field_energy", "refine"]

_CLIP = 1e-5


def dense_crf(probs: Tensor, image: Tensor | np.ndarray, *, iterations: int = CRFSettings.iterations,
              gaussian_sxy: float = CRFSettings.gaussian_sxy,
              gaussian_compat: float | Tensor = CRFSettings.gaussian_compat,
              bilateral_sxy: float = CRFSettings.bilateral_sxy, bilateral_srgb: float = CRFSettings.bilateral_srgb,
              bilateral_compat: float | Tensor = CRFSettings.bilateral_compat, exact: bool = False) -> Tensor:
    """Refine per-pixel class probabilities with a fully connected CRF (mean-field inference).

    The defaults are ``CRFSettings``' (pydensecrf's).

    Args:
        probs: softmax probabilities ``(C, H, W)`` or ``(N, C, H, W)``, C >= 2. Pixels whose probabilities
            do not sum to 1 are renormalised.
        image: the RGB image as a uint8 tensor ``(3, H, W)`` or ``(N, 3, H, W)``, or a uint8 numpy array
            ``(H, W, 3)`` or ``(N, H, W, 3)``.
        iterations: mean-field iterations (0 returns the clipped, renormalised input).
        gaussian_sxy: standard deviation, in pixels, of the smoothness kernel.
        gaussian_compat: its compatibility, as in pydensecrf: a number w is the Potts model (energy
            ``-w`` times the filtered marginal of the same label: neighbours attract); a ``(C,)`` vector or
            ``(C, C)`` matrix ``mu`` adds ``mu @ filtered Q`` to the energy (the matrix is symmetrised), so
            Potts of weight w is ``mu = -w I``. 0 switches the kernel off.
        bilateral_sxy: positional standard deviation, in pixels, of the appearance kernel.
        bilateral_srgb: its colour standard deviation, in 0..255 intensity units.
        bilateral_compat: its compatibility, like ``gaussian_compat``.
        exact: filter with dense O((HW)^2) kernel matrices instead of the permutohedral lattice (ground
            truth; small images only).

    Returns:
        Refined probabilities, the shape and dtype of ``probs``, on its device. Computed in float32 (float64
        for float64 input).
    """
    single = probs.dim() == 3
    if not isinstance(iterations, numbers.Integral) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
    unary, features, compats, keys = _terms(probs, image, gaussian_sxy, gaussian_compat, bilateral_sxy,
                                            bilateral_srgb, bilateral_compat)
    batch, classes, height, width = (1, *probs.shape) if single else probs.shape

    # -log(1e-5) < 11.6 bounds the unaries, so the first softmax needs no shift.
    q = _softmax_rows(-unary, (-11.6, 0.0))
    if features and iterations:
        kernels = PairwiseKernels(features, exact=exact, cache_keys=keys)
        potts = all(isinstance(mu, float) for mu in compats)
        if potts:
            # Energies lie between -U - sum_{w<0} |w| A1 and sum_{w>0} w A1 (A q <= A 1 for 0 <= q <= 1).
            reach = [w * r for w, r in zip(compats, kernels.row_sum_max, strict=True)]
            low, high = -11.6 + sum(min(x, 0.0) for x in reach), sum(max(x, 0.0) for x in reach)
            # Shifting every energy by the upper bound (softmax ignores it) keeps exp from overflowing;
            # folded into the unaries once, it costs no pass per iteration.
            shifted = unary + high
        for _ in range(iterations):
            if potts:
                # q is read by the splat before the slice overwrites it with the new energies.
                energy = kernels.weighted_sum(q, compats, minus=shifted, out=q)
                q = _softmax_rows(energy, (low - high, 0.0))
            else:
                filtered = kernels.filter(q)
                energy = -unary
                for mu, f in zip(compats, filtered, strict=True):
                    energy = energy + (f * mu if isinstance(mu, float) else -(f @ mu))
                q = _softmax_rows(energy)

    out = q.view(batch, height, width, classes).permute(0, 3, 1, 2).to(probs.dtype).contiguous()
    return out[0] if single else out


def mean_field_energy(q: Tensor, probs: Tensor, image: Tensor | np.ndarray, *,
                      gaussian_sxy: float = CRFSettings.gaussian_sxy,
                      gaussian_compat: float | Tensor = CRFSettings.gaussian_compat,
                      bilateral_sxy: float = CRFSettings.bilateral_sxy,
                      bilateral_srgb: float = CRFSettings.bilateral_srgb,
                      bilateral_compat: float | Tensor = CRFSettings.bilateral_compat, exact: bool = False) -> float:
    """The mean-field objective of marginals ``q`` in the CRF of ``probs`` and ``image`` (``dense_crf``'s
    arguments and keywords), summed over the batch: pydensecrf's ``klDivergence``, KL(Q || P) - log Z,

    ``sum_i sum_l q_il log q_il + sum_i sum_l q_il U_il + sum_k sum_i q_i . (mu_k A_k q)_i``

    (Potts of weight w: ``mu_k = -w I``). Mean field (parallel updates) usually lowers it at every iteration,
    though it need not. ``exact`` filters with
    dense kernel matrices instead of the lattice."""
    unary, features, compats, _ = _terms(probs, image, gaussian_sxy, gaussian_compat, bilateral_sxy,
                                         bilateral_srgb, bilateral_compat)
    if q.shape != probs.shape:
        raise ValueError(f"q must have the shape of probs {tuple(probs.shape)}, got {tuple(q.shape)}")
    classes = unary.shape[1]
    q_rows = (q.unsqueeze(0) if q.dim() == 3 else q).to(unary.dtype).permute(0, 2, 3, 1).reshape(-1, classes)
    energy = (q_rows * q_rows.clamp_min(1e-20).log()).sum() + (q_rows * unary).sum()
    if features:
        filtered = PairwiseKernels(features, exact=exact).filter(q_rows)
        for mu, f in zip(compats, filtered, strict=True):
            energy = energy + (q_rows * (-mu * f if isinstance(mu, float) else f @ mu)).sum()
    return float(energy)


def _terms(probs: Tensor, image: Tensor | np.ndarray, gaussian_sxy: float, gaussian_compat: float | Tensor,
           bilateral_sxy: float, bilateral_srgb: float, bilateral_compat: float | Tensor
           ) -> tuple[Tensor, list[Tensor], list[float | Tensor], list[tuple | None]]:
    """Checked inputs -> the unaries ``(N*H*W, C)``, one feature tensor and compatibility per kernel that is on,
    and the kernels' cache keys (the smoothness kernel depends only on the size)."""
    probs4 = _check_probs(probs)
    batch, classes, height, width = probs4.shape
    images = image_tensor(image, batch, height, width, probs.device)
    for name, value in (("gaussian_sxy", gaussian_sxy), ("bilateral_sxy", bilateral_sxy),
                        ("bilateral_srgb", bilateral_srgb)):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")

    dtype = torch.float64 if probs.dtype == torch.float64 else torch.float32
    p = probs4.to(dtype)
    total = p.sum(1, keepdim=True)
    if not float(total.min()) > 0:
        raise ValueError("probs must have a positive sum over the classes at every pixel")
    p = (p / total).clamp_(_CLIP, 1.0).log_().neg_()
    unary = p.permute(0, 2, 3, 1).reshape(-1, classes)

    features, compats, keys = [], [], []
    mu = _compatibility("gaussian_compat", gaussian_compat, classes, dtype, probs.device)
    if mu is not None:
        features.append(pixel_features(batch, height, width, gaussian_sxy, dtype=dtype, device=probs.device))
        compats.append(mu)
        keys.append(("smoothness", batch, height, width, float(gaussian_sxy), dtype))
    mu = _compatibility("bilateral_compat", bilateral_compat, classes, dtype, probs.device)
    if mu is not None:
        features.append(pixel_features(batch, height, width, bilateral_sxy, images, bilateral_srgb, dtype=dtype,
                                       device=probs.device))
        compats.append(mu)
        keys.append(None)
    return unary, features, compats, keys


def refine(probs: Tensor, images: Tensor, settings: CRFSettings) -> Tensor:
    """The dense CRF as the last step of inference and evaluation: one batch, one set of settings.

    ``probs`` (N, K, H, W) class probabilities; ``images`` the uint8 pixels the model saw, (N, 3, H, W) RGB or
    (N, 1, H, W) grey (repeated to RGB: the appearance kernel compares colours). Returns (N, K, H, W).
    """
    if images.dim() == 4 and images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return dense_crf(probs, images, **settings.as_keywords())


def _softmax_rows(x: Tensor, bounds: tuple[float, float] | None = None) -> Tensor:
    """Softmax over the last dimension of a ``(P, C)`` tensor, in place.

    On CPU torch's softmax over a short last dimension (C = 11) is an order of magnitude slower than the
    elementwise exponential, and so is the row maximum it subtracts. When every value is known to lie within
    ``bounds`` less than 80 apart, no pixel can overflow or underflow to all zeros after a shift by the upper
    bound: then exp, and divide by the row sums, which a matrix-vector product computes fast."""
    if x.is_cuda or bounds is None or not bounds[1] - bounds[0] < 80:
        return torch.softmax(x, 1)
    if bounds[1] > 0:
        x.sub_(bounds[1])
    x.exp_()
    return x.div_(x @ torch.ones(x.shape[1], 1, dtype=x.dtype, device=x.device))


def _check_probs(probs: Tensor) -> Tensor:
    if not isinstance(probs, Tensor):
        raise ValueError(f"probs must be a torch.Tensor, got {type(probs).__name__}")
    if probs.dim() not in (3, 4):
        raise ValueError(f"probs must be (C, H, W) or (N, C, H, W), got shape {tuple(probs.shape)}")
    if not probs.is_floating_point():
        raise ValueError(f"probs must be floating point, got {probs.dtype}")
    probs4 = probs.unsqueeze(0) if probs.dim() == 3 else probs
    if probs4.shape[1] < 2:
        raise ValueError(f"probs must have at least 2 classes (C >= 2), got C = {probs4.shape[1]}")
    smallest = float(probs4.min())  # NaN if any is NaN
    if math.isnan(smallest):
        raise ValueError("probs contains NaN")
    if smallest < 0:
        raise ValueError("probs must be non-negative")
    return probs4


def image_tensor(image: Tensor | np.ndarray, batch: int, height: int, width: int,
                 device: torch.device) -> Tensor:
    """Validate an RGB image and return it as a uint8 ``(N, 3, H, W)`` tensor on ``device``.

    Accepts a uint8 tensor ``(3, H, W)`` / ``(N, 3, H, W)`` or a uint8 numpy array ``(H, W, 3)`` /
    ``(N, H, W, 3)``; a single image is broadcast over the batch."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image must be uint8, got numpy {image.dtype}")
        if image.ndim not in (3, 4) or image.shape[-1] != 3:
            raise ValueError(f"image as a numpy array must be (H, W, 3) or (N, H, W, 3), got {image.shape}")
        image = torch.tensor(image).movedim(-1, -3)  # a copy: the array may be read-only
    elif isinstance(image, Tensor):
        if image.dtype != torch.uint8:
            raise ValueError(f"image must be a uint8 tensor, got {image.dtype}")
        if image.dim() not in (3, 4) or image.shape[-3] != 3:
            raise ValueError(f"image must be (3, H, W) or (N, 3, H, W) with 3 colour channels, "
                             f"got shape {tuple(image.shape)}")
    else:
        raise ValueError(f"image must be a uint8 torch.Tensor or numpy array, got {type(image).__name__}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if tuple(image.shape[-2:]) != (height, width):
        raise ValueError(f"image size {tuple(image.shape[-2:])} does not match the probabilities' "
                         f"{(height, width)}")
    if image.shape[0] not in (1, batch):
        raise ValueError(f"image batch size {image.shape[0]} does not match the probabilities' {batch}")
    return image.to(device).expand(batch, -1, -1, -1)


def _compatibility(name: str, compat, classes: int, dtype: torch.dtype, device) -> float | Tensor | None:
    """pydensecrf's label compatibility: a Potts weight (float), else a symmetric (C, C) matrix mu;
    None when the kernel is off."""
    if isinstance(compat, Tensor | np.ndarray) and compat.ndim == 0:
        compat = float(compat)
    if isinstance(compat, numbers.Real):
        return float(compat) if compat != 0 else None
    mu = torch.as_tensor(compat, dtype=dtype, device=device)
    if mu.shape == (classes,):
        return torch.diag(mu)
    if mu.shape == (classes, classes):
        return 0.5 * (mu + mu.t())
    raise ValueError(f"{name} must be a number, a ({classes},) vector or a ({classes}, {classes}) "
                     f"matrix, got shape {tuple(mu.shape)}")
