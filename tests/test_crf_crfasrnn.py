"""CRF-as-RNN: gradients (gradcheck on the exact and lattice paths), equivalence with dense_crf, training."""

import numpy as np
import pytest
import torch
from torch import nn

from pixelwise.crf import CRFasRNN, dense_crf
from pixelwise.crf.crfasrnn import mean_field
from pixelwise.crf.kernels import PairwiseKernels, pixel_features

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def tiny_kernels(exact, size=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=generator)
    features = [pixel_features(1, size, size, 2.0, dtype=torch.float64),
                pixel_features(1, size, size, 3.0, image, 40.0, dtype=torch.float64)]
    return PairwiseKernels(features, exact=exact)


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "lattice"])
def test_gradcheck_through_every_iteration(exact):
    kernels = tiny_kernels(exact)
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(25, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    weights = (torch.rand(2, 3, dtype=torch.float64, generator=generator) + 0.5).requires_grad_()
    compatibility = torch.randn(3, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z, w, mu: mean_field(z, kernels, w, mu, 3),
                                    (logits, weights, compatibility))


def test_lattice_filter_backward_is_transposed_filter():
    kernels = tiny_kernels(exact=False, size=6)
    q = torch.rand(36, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kernels.filter, (q,))


def test_potts_initialisation_matches_dense_crf():
    """With Potts compatibility and per-class weights equal, one refined softmax = dense_crf's output."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 4, 12, 16, generator=generator)
    image = torch.randint(0, 256, (1, 3, 12, 16), dtype=torch.uint8, generator=generator)
    crf = CRFasRNN(4, iterations=3, bilateral_sxy=10.0)
    with torch.no_grad():
        ours = torch.softmax(crf(logits, image), 1)
    probs = torch.softmax(logits, 1)
    reference = dense_crf(probs, image, iterations=3, bilateral_sxy=10.0)
    # dense_crf clips probabilities at 1e-5 for its unaries; the logits here are far from that.
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)


def random_shapes(count, size=32, classes=3, seed=0):
    """Images of coloured rectangles and discs on a background, with noise; masks give each shape's class."""
    rng = np.random.default_rng(seed)
    palette = np.array([[40, 40, 40], [200, 60, 50], [60, 90, 210]])
    images, masks = [], []
    yy, xx = np.mgrid[:size, :size]
    for _ in range(count):
        mask = np.zeros((size, size), dtype=np.int64)
        for _ in range(3):
            label = rng.integers(1, classes)
            cy, cx, r = rng.integers(6, size - 6, 2).tolist() + [int(rng.integers(4, 9))]
            if rng.random() < 0.5:
                mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = label
            else:
                mask[max(cy - r, 0):cy + r, max(cx - r, 0):cx + r] = label
        image = palette[mask] + rng.normal(0, 25, (size, size, 3))
        images.append(np.clip(image, 0, 255).astype(np.uint8).transpose(2, 0, 1))
        masks.append(mask)
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))


def test_trains_after_a_tiny_network():
    torch.manual_seed(0)
    images, masks = random_shapes(6)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))
    crf = CRFasRNN(3, iterations=3, bilateral_sxy=6.0, bilateral_srgb=30.0, gaussian_weight=1.0,
                   bilateral_weight=1.0)
    optimizer = torch.optim.Adam([*net.parameters(), *crf.parameters()], lr=0.02)
    x = images.float() / 255
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(crf(net(x), images), masks)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
    assert crf.compatibility.grad is not None and torch.isfinite(crf.compatibility.grad).all()
    assert not torch.equal(crf.compatibility.detach(), 1 - torch.eye(3))
    assert not torch.equal(crf.kernel_weights.detach(), torch.ones(2, 3))


def test_bad_input():
    crf = CRFasRNN(3, iterations=1)
    logits = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="logits"):
        crf(torch.randn(1, 4, 8, 8), torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        crf(logits, torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="image size"):
        crf(logits, torch.zeros(1, 3, 8, 9, dtype=torch.uint8))
    with pytest.raises(ValueError, match="num_classes"):
        CRFasRNN(1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_forward_and_backward_match_cpu():
    images, _ = random_shapes(2, size=24)
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 24, 24, requires_grad=True)
    crf = CRFasRNN(3, iterations=2, bilateral_sxy=6.0)
    out = crf(logits, images)
    out.square().mean().backward()
    grad, weight_grad = logits.grad.clone(), crf.kernel_weights.grad.clone()
    crf_gpu = CRFasRNN(3, iterations=2, bilateral_sxy=6.0).cuda()
    logits_gpu = logits.detach().cuda().requires_grad_()
    out_gpu = crf_gpu(logits_gpu, images.cuda())
    out_gpu.square().mean().backward()
    torch.testing.assert_close(out_gpu.cpu(), out.detach(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits_gpu.grad.cpu(), grad, atol=1e-5, rtol=1e-3)
    torch.testing.assert_close(crf_gpu.kernel_weights.grad.cpu(), weight_grad, atol=1e-5, rtol=1e-3)
