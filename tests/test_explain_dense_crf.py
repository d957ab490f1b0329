"""The dense-crf topic: the mean-field energy it reports against an exact O(N^2) numpy reference."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.crf import CRFSettings
from pixelwise.crf.dense_crf import mean_field_energy
from pixelwise.explain.base import figure_pixels, save_figure
from pixelwise.explain.dense_crf import dense_crf

CAMVID = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "camvid"


def numpy_energy(q: np.ndarray, probs: np.ndarray, image: np.ndarray, settings: CRFSettings) -> float:
    """pydensecrf's klDivergence written out with dense kernels: sum Q log Q + sum Q U - sum_k w_k Q . (A_k Q),
    A_k = D^-1/2 K_k D^-1/2 and K_k[i, j] = exp(-|f_i - f_j|^2 / 2), self term included."""
    classes, height, width = probs.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    positions = np.stack([xs.ravel(), ys.ravel()], 1)
    colours = image.reshape(3, -1).T.astype(np.float64)
    q_rows = q.reshape(classes, -1).T.astype(np.float64)
    unary = -np.log(np.clip(probs / probs.sum(0), 1e-5, 1.0)).reshape(classes, -1).T
    energy = (q_rows * np.log(np.maximum(q_rows, 1e-20))).sum() + (q_rows * unary).sum()
    kernels = [(positions / settings.gaussian_sxy, settings.gaussian_compat),
               (np.concatenate([positions / settings.bilateral_sxy, colours / settings.bilateral_srgb], 1),
                settings.bilateral_compat)]
    for features, weight in kernels:
        squared = ((features[:, None, :] - features[None, :, :]) ** 2).sum(-1)
        kernel = np.exp(-0.5 * squared)
        norm = 1 / np.sqrt(kernel.sum(1))
        normalised = norm[:, None] * kernel * norm[None, :]
        energy -= weight * (q_rows * (normalised @ q_rows)).sum()
    return float(energy)


def reference_energies(explained) -> list[float]:
    probs = explained.extras["probs"].numpy()
    image = explained.extras["image"].numpy()
    return [numpy_energy(q.numpy(), probs, image, CRFSettings()) for q in explained.extras["marginals"]]


@pytest.fixture(scope="module")
def exact():
    return dense_crf(steps=3, image_size=20, iterations=3, exact=True)


@pytest.fixture(scope="module")
def lattice():
    return dense_crf(steps=3, image_size=20, iterations=3)


def test_the_reported_energy_is_the_exact_reference(exact):
    energies = exact.numbers["energy_per_iteration"]
    assert len(energies) == 4
    np.testing.assert_allclose(energies, reference_energies(exact), rtol=1e-5)
    assert energies[-1] < energies[0], "mean field lowers its objective"


def test_the_lattice_energy_is_close_to_the_exact_one(lattice):
    # The permutohedral lattice approximates the Gaussian filter: the pairwise term within a few per cent.
    np.testing.assert_allclose(lattice.numbers["energy_per_iteration"], reference_energies(lattice), rtol=2e-2)


def test_mean_field_energy_refuses_marginals_of_another_shape():
    probs = torch.full((2, 4, 5), 0.5)
    image = torch.zeros(3, 4, 5, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"q must have the shape of probs \(2, 4, 5\), got \(2, 5, 4\)"):
        mean_field_energy(torch.full((2, 5, 4), 0.5), probs, image)


def test_the_three_colour_widths_and_the_scores_are_reported(lattice):
    widths = lattice.numbers["bilateral_srgb"]
    assert list(widths) == ["3", "13", "50"]
    # srgb 13 is the default: its result is the "after" of the figure.
    assert widths["13"]["miou"] == lattice.numbers["after"]["miou"]
    for entry in widths.values():
        assert 0.0 <= entry["changed_pixels"] <= 1.0


def test_a_data_set_other_than_camvid_is_refused():
    with pytest.raises(ValueError, match="dense-crf takes --data camvid:ROOT, got 'voc:/somewhere'"):
        dense_crf(data="voc:/somewhere", steps=1)


@pytest.mark.skipif(not (CAMVID / "val").is_dir(), reason=f"CamVid not found at {os.path.normpath(CAMVID)}")
def test_camvid_validation_image_at_a_quarter_size(tmp_path):
    explained = dense_crf(data=f"camvid:{CAMVID}", steps=1, iterations=1, train_images=8)
    assert explained.numbers["data"] == "camvid" and explained.numbers["image_size"] == [90, 120]
    assert explained.extras["probs"].shape == (11, 90, 120)


def test_figure_is_written_at_its_pixel_size(lattice, tmp_path):
    figure = lattice.figures["dense_crf"]
    save_figure(figure, tmp_path / "dense_crf.png")
    with Image.open(tmp_path / "dense_crf.png") as image:
        assert image.size == figure_pixels(figure) == (1200, 620)
