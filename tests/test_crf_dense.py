"""dense_crf: behaviour, input validation, agreement with the exact CRF and with pydensecrf on CamVid."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pixelwise.crf import dense_crf
from pixelwise.crf.reference import noisy_probabilities, pydensecrf_available, pydensecrf_dense_crf

CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def scene(height=32, width=40, classes=3, batch=None, seed=0):
    """Probabilities and a uint8 image of a few coloured rectangles, the probabilities noisy."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), dtype=np.int64)
    labels[height // 4: 3 * height // 4, width // 5: width // 2] = 1
    labels[height // 3:, 3 * width // 5:] = 2 % classes
    palette = rng.integers(0, 256, (classes, 3))
    image = np.clip(palette[labels] + rng.normal(0, 10, (height, width, 3)), 0, 255).astype(np.uint8)
    probs = noisy_probabilities(labels, classes, seed=seed, noise=1.5, blur=3)
    probs, image = torch.from_numpy(probs), torch.from_numpy(image).permute(2, 0, 1).contiguous()
    if batch:
        probs, image = probs.expand(batch, -1, -1, -1), image.expand(batch, -1, -1, -1)
    return probs, image, labels


def test_shapes_dtype_and_probabilities():
    probs, image, _ = scene()
    out = dense_crf(probs, image)
    assert out.shape == probs.shape and out.dtype == probs.dtype
    torch.testing.assert_close(out.sum(0), torch.ones(probs.shape[1:]))
    batched = dense_crf(probs.double()[None], image[None])
    assert batched.shape == (1, *probs.shape) and batched.dtype == torch.float64


def test_numpy_image_and_batch_equal_single_calls():
    probs, image, _ = scene()
    probs2, image2, _ = scene(seed=1)
    batch = dense_crf(torch.stack([probs, probs2]), torch.stack([image, image2]))
    torch.testing.assert_close(batch[0], dense_crf(probs, image.permute(1, 2, 0).numpy()), atol=1e-5, rtol=0)
    torch.testing.assert_close(batch[1], dense_crf(probs2, image2), atol=1e-5, rtol=0)


def test_crf_cleans_noisy_labels():
    probs, image, labels = scene(classes=3)
    before = (probs.argmax(0).numpy() == labels).mean()
    after = (dense_crf(probs, image, bilateral_sxy=20.0).argmax(0).numpy() == labels).mean()
    assert after > before


def test_zero_iterations_renormalises():
    probs, image, _ = scene()
    doubled = dense_crf(2 * probs, image, iterations=0)
    torch.testing.assert_close(doubled, probs.clamp(1e-5, 1) / probs.clamp(1e-5, 1).sum(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(dense_crf(2 * probs, image), dense_crf(probs, image), atol=1e-5, rtol=0)


def test_lattice_agrees_with_exact_crf():
    probs, image, _ = scene(24, 30)
    lattice = dense_crf(probs, image, bilateral_sxy=10.0)
    exact = dense_crf(probs, image, bilateral_sxy=10.0, exact=True)
    assert (lattice.argmax(0) == exact.argmax(0)).float().mean() > 0.97
    assert (lattice - exact).abs().mean() < 0.02


def test_matrix_compatibility_equals_potts():
    probs, image, _ = scene()
    potts = dense_crf(probs, image, gaussian_compat=3.0, bilateral_compat=10.0)
    classes = probs.shape[0]
    matrix = dense_crf(probs, image, gaussian_compat=-3.0 * torch.eye(classes),
                       bilateral_compat=10.0 * (1 - torch.eye(classes)))
    vector = dense_crf(probs, image, gaussian_compat=torch.full((classes,), -3.0), bilateral_compat=10.0)
    torch.testing.assert_close(matrix, potts, atol=1e-5, rtol=0)
    torch.testing.assert_close(vector, potts, atol=1e-5, rtol=0)


@pytest.mark.parametrize("change, match", [
    (lambda p, i: (p, i[:, :-1]), "image size"),
    (lambda p, i: (p, i.float()), "uint8"),
    (lambda p, i: (p, i[:2]), "3 colour channels"),
    (lambda p, i: (p, i.permute(1, 2, 0).numpy()[..., :2]), "image"),
    (lambda p, i: (p - 0.5, i), "non-negative"),
    (lambda p, i: (p.masked_fill(p > 0.9, float("nan")), i), "NaN"),
    (lambda p, i: (p[:1], i), "at least 2 classes"),
    (lambda p, i: (p[0], i), "probs must be"),
    (lambda p, i: (p[None].expand(2, -1, -1, -1), torch.stack([i, i, i])), "batch size"),
])
def test_bad_input_raises_value_error(change, match):
    probs, image, _ = scene()
    probs, image = change(probs, image)
    with pytest.raises(ValueError, match=match):
        dense_crf(probs, image)


def test_bad_parameters_raise_value_error():
    probs, image, _ = scene()
    with pytest.raises(ValueError, match="bilateral_srgb"):
        dense_crf(probs, image, bilateral_srgb=0)
    with pytest.raises(ValueError, match="gaussian_compat"):
        dense_crf(probs, image, gaussian_compat=torch.ones(2, 3))
    with pytest.raises(ValueError, match="iterations"):
        dense_crf(probs, image, iterations=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    probs, image, _ = scene(batch=2)
    cpu = dense_crf(probs, image)
    gpu = dense_crf(probs.cuda(), image.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)


def camvid_val(count):
    if not pydensecrf_available():
        pytest.skip("pydensecrf not installed (pip install pydensecrf2)")
    if not (CAMVID / "val").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID}")
    from PIL import Image

    names = sorted(p.name for p in (CAMVID / "val").glob("*.png"))[:count]
    for name in names:
        image = np.array(Image.open(CAMVID / "val" / name).convert("RGB"))
        labels = np.array(Image.open(CAMVID / "valannot" / name))
        yield name, image, labels


def test_agrees_with_pydensecrf_on_camvid():
    for name, image, labels in camvid_val(3):
        probs = noisy_probabilities(labels, 11)
        theirs = pydensecrf_dense_crf(probs, image)
        ours = dense_crf(torch.from_numpy(probs), image).numpy()
        agreement = (ours.argmax(0) == theirs.argmax(0)).mean()
        difference = np.abs(ours - theirs).mean()
        print(f"{name}: argmax agreement {agreement:.6f}, mean |p - p_ref| {difference:.2e}")
        assert agreement >= 0.99
        assert difference < 1e-4
