"""Each loss against an independent computation: plain formulas, brute-force set functions, hand cases."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from pixelwise.train.config import LossConfig
from pixelwise.train.losses import (
    SegmentationLoss,
    cross_entropy,
    dice_loss,
    focal_loss,
    lovasz_extension,
    lovasz_softmax,
    ohem_cross_entropy,
)


def batch(seed: int = 0, classes: int = 4, ignore_share: float = 0.2):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, classes, 5, 6, generator=generator)
    target = torch.randint(0, classes, (2, 5, 6), generator=generator)
    target[torch.rand(target.shape, generator=generator) < ignore_share] = 255
    return logits, target


def test_cross_entropy_weighted_matches_per_pixel_formula():
    logits, target = batch()
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0])
    total, norm = 0.0, 0.0
    for n, i, j in itertools.product(range(2), range(5), range(6)):
        label = int(target[n, i, j])
        if label == 255:
            continue
        p = torch.softmax(logits[n, :, i, j].double(), 0)[label].item()
        total += -weight[label].item() * math.log(p)
        norm += weight[label].item()
    assert cross_entropy(logits, target, weight).item() == pytest.approx(total / norm, rel=1e-5)


def test_focal_with_gamma_zero_is_cross_entropy_and_down_weights_easy_pixels():
    logits, target = batch(1)
    weight = torch.tensor([1.0, 0.2, 4.0, 1.5])
    assert focal_loss(logits, target, 0.0).item() == pytest.approx(
        F.cross_entropy(logits, target, ignore_index=255).item(), rel=1e-6)
    assert focal_loss(logits, target, 0.0, weight).item() == pytest.approx(
        F.cross_entropy(logits, target, weight=weight, ignore_index=255).item(), rel=1e-6)
    # One pixel by hand: p_t = softmax([2, 0])[0], loss = -(1 - p_t)^2 log p_t.
    p_t = math.exp(2) / (math.exp(2) + 1)
    single = focal_loss(torch.tensor([[[[2.0]], [[0.0]]]]), torch.tensor([[[0]]]), 2.0)
    assert single.item() == pytest.approx(-((1 - p_t) ** 2) * math.log(p_t), rel=1e-5)


def test_dice_matches_direct_formula():
    logits, target = batch(2)
    probs = torch.softmax(logits, 1)
    valid = target != 255
    coefficients = []
    for c in range(4):
        p = probs[:, c][valid]
        y = (target[valid] == c).float()
        coefficients.append((2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1))
    assert dice_loss(logits, target).item() == pytest.approx(1 - torch.stack(coefficients).mean().item(), rel=1e-6)


def jaccard_loss_of_set(mispredicted: set[int], foreground: set[int]) -> float:
    """Jaccard loss when exactly ``mispredicted`` pixels are wrong: |M| / |foreground ∪ M|."""
    return len(mispredicted) / len(foreground | mispredicted)


def lovasz_by_integral(errors: list[float], foreground: set[int]) -> float:
    """Lovász extension as the integral over t in [0, 1] of the set function at {i: e_i > t} (exact)."""
    levels = sorted({0.0, *errors, 1.0})
    total = 0.0
    for low, high in itertools.pairwise(levels):
        above = {i for i, e in enumerate(errors) if e > low}
        total += (high - low) * jaccard_loss_of_set(above, foreground)
    return total


def test_lovasz_extension_equals_brute_force_and_the_set_function_on_corners():
    errors = [0.9, 0.1, 0.55, 0.3, 0.7]
    foreground = {0, 2, 3}
    fg = torch.tensor([1.0 if i in foreground else 0.0 for i in range(5)], dtype=torch.float64)
    value = lovasz_extension(torch.tensor(errors, dtype=torch.float64), fg).item()
    assert value == pytest.approx(lovasz_by_integral(errors, foreground), abs=1e-12)
    # On 0/1 error vectors the extension is the Jaccard loss of the mispredicted set itself.
    for mask in itertools.product([0.0, 1.0], repeat=5):
        wrong = {i for i, bit in enumerate(mask) if bit}
        corner = lovasz_extension(torch.tensor(mask, dtype=torch.float64), fg).item()
        assert corner == pytest.approx(jaccard_loss_of_set(wrong, foreground), abs=1e-12)


def test_lovasz_softmax_averages_present_classes():
    logits, target = batch(3, classes=3)
    target[target == 2] = 0  # class 2 absent: not averaged in
    probs = torch.softmax(logits.double(), 1)
    valid = target != 255
    per_class = []
    for c in (0, 1):
        fg = {i for i, label in enumerate(target[valid].tolist()) if label == c}
        errors = [abs((1.0 if i in fg else 0.0) - p) for i, p in enumerate(probs[:, c][valid].tolist())]
        per_class.append(lovasz_by_integral(errors, fg))
    assert lovasz_softmax(logits, target).item() == pytest.approx(sum(per_class) / 2, rel=1e-5)


def test_ohem_keeps_the_hardest_pixels():
    logits, target = batch(4, ignore_share=0.0)
    pixel_losses = F.cross_entropy(logits, target, reduction="none").flatten()
    # Hardest = lowest true-class probability = highest cross-entropy.
    hardest = pixel_losses.sort(descending=True).values
    assert ohem_cross_entropy(logits, target, threshold=0.0, min_kept=7).item() == pytest.approx(
        hardest[:7].mean().item(), rel=1e-6)
    # With a threshold, every pixel under it is kept (more than min_kept here).
    true_prob = torch.exp(-pixel_losses)
    under = pixel_losses[true_prob < 0.5]
    assert len(under) > 3
    assert ohem_cross_entropy(logits, target, threshold=0.5, min_kept=3).item() == pytest.approx(
        under.mean().item(), rel=1e-6)


def test_losses_ignore_pixels_and_survive_an_all_ignored_batch():
    logits, target = batch(5)
    # Garbage logits under the ignored pixels only must not change any loss.
    changed = torch.where((target == 255).unsqueeze(1), torch.full_like(logits, 50.0), logits)
    for name in ("cross_entropy", "focal", "dice", "lovasz", "ohem"):
        loss = SegmentationLoss(LossConfig(name=name, ohem_min_kept=5))
        assert loss(changed, target).item() == pytest.approx(loss(logits, target).item(), rel=1e-5), name
        empty = logits.clone().requires_grad_()
        value = loss(empty, torch.full_like(target, 255))
        value.backward()
        assert value.item() == 0.0 and torch.isfinite(empty.grad).all(), name


def test_aux_outputs_add_weighted_losses_at_target_resolution():
    logits, target = batch(6)
    aux = torch.randn(2, 4, 3, 3)
    loss = SegmentationLoss(LossConfig(aux_weights=[0.4]))
    upsampled = F.interpolate(aux, size=(5, 6), mode="bilinear", align_corners=False)
    expected = F.cross_entropy(logits, target, ignore_index=255) + 0.4 * F.cross_entropy(
        upsampled, target, ignore_index=255)
    assert loss(logits, target, [aux]).item() == pytest.approx(expected.item(), rel=1e-6)


def test_smaller_logits_score_the_centre_of_the_target():
    logits, target = batch(7)
    loss = SegmentationLoss(LossConfig())
    inner = logits[:, :, 1:4, 1:5]
    assert loss(inner, target).item() == pytest.approx(
        F.cross_entropy(inner, target[:, 1:4, 1:5], ignore_index=255).item(), rel=1e-6)
