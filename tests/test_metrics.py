"""ConfusionMatrix against torchmetrics, with ignore pixels and absent classes, plus exact hand cases."""

import math

import pytest
import torch
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassJaccardIndex,
)

from pixelwise.metrics import ConfusionMatrix

NUM_CLASSES = 6


def random_batches(seed: int, absent_class: int | None = None):
    """Three (N, H, W) batches of different sizes with ignore pixels; ``absent_class`` never appears."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for shape in [(2, 7, 9), (1, 13, 5), (3, 4, 4)]:
        target = torch.randint(0, NUM_CLASSES, shape, generator=generator)
        # Make predictions right most of the time so the scores are far from chance and from 1.
        pred = torch.where(torch.rand(shape, generator=generator) < 0.6, target,
                           torch.randint(0, NUM_CLASSES, shape, generator=generator))
        target[torch.rand(shape, generator=generator) < 0.15] = 255
        if absent_class is not None:
            target[target == absent_class] = 0
            pred[pred == absent_class] = 1
        batches.append((pred, target))
    return batches


def test_matrix_and_scores_match_torchmetrics():
    batches = random_batches(0)
    ours = ConfusionMatrix(NUM_CLASSES)
    reference = {
        "matrix": MulticlassConfusionMatrix(NUM_CLASSES, ignore_index=255),
        "iou": MulticlassJaccardIndex(NUM_CLASSES, average="none", ignore_index=255),
        "pixel_accuracy": MulticlassAccuracy(NUM_CLASSES, average="micro", ignore_index=255),
        "class_accuracy": MulticlassAccuracy(NUM_CLASSES, average="none", ignore_index=255),
        "dice": MulticlassF1Score(NUM_CLASSES, average="none", ignore_index=255),
    }
    for pred, target in batches:
        ours.update(pred, target)
        for metric in reference.values():
            metric.update(pred, target)
    expected = {name: metric.compute() for name, metric in reference.items()}
    scores = ours.compute()

    assert torch.equal(ours.matrix, expected["matrix"].long())
    assert scores["iou"] == pytest.approx(expected["iou"].tolist(), abs=1e-6)
    assert scores["miou"] == pytest.approx(expected["iou"].mean().item(), abs=1e-6)
    assert scores["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"].item(), abs=1e-6)
    assert scores["class_accuracy"] == pytest.approx(expected["class_accuracy"].tolist(), abs=1e-6)
    assert scores["mean_accuracy"] == pytest.approx(expected["class_accuracy"].mean().item(), abs=1e-6)
    assert scores["dice"] == pytest.approx(expected["dice"].tolist(), abs=1e-6)
    assert scores["mdice"] == pytest.approx(expected["dice"].mean().item(), abs=1e-6)
    # Frequency-weighted IoU by its definition from the torchmetrics matrix.
    target_pixels = expected["matrix"].sum(dim=1).double()
    fwiou = (target_pixels / target_pixels.sum() * expected["iou"].double()).sum().item()
    assert scores["fwiou"] == pytest.approx(fwiou, abs=1e-6)


def test_absent_class_is_nan_and_left_out_of_means():
    absent = 3
    ours = ConfusionMatrix(NUM_CLASSES)
    reference = MulticlassJaccardIndex(NUM_CLASSES, average="none", ignore_index=255)
    for pred, target in random_batches(1, absent_class=absent):
        ours.update(pred, target)
        reference.update(pred, target)
    scores = ours.compute()
    expected_iou = reference.compute()
    present = [c for c in range(NUM_CLASSES) if c != absent]
    assert math.isnan(scores["iou"][absent]) and math.isnan(scores["dice"][absent])
    assert math.isnan(scores["class_accuracy"][absent])
    assert [scores["iou"][c] for c in present] == pytest.approx(expected_iou[present].tolist(), abs=1e-6)
    assert scores["miou"] == pytest.approx(expected_iou[present].mean().item(), abs=1e-6)


def test_accumulates_over_split_not_per_image():
    # Image A: 1 pixel of class 1, predicted wrong. Image B: 99 pixels of class 1, all right.
    # Over the split IoU(1) = 99 / 100; a per-image average would give (0 + 1) / 2.
    metric = ConfusionMatrix(2)
    metric.update(torch.tensor([[0]]), torch.tensor([[1]]))
    metric.update(torch.ones(9, 11, dtype=torch.long), torch.ones(9, 11, dtype=torch.long))
    scores = metric.compute()
    assert scores["iou"][1] == pytest.approx(99 / 100)
    assert scores["iou"][0] == 0.0  # predicted once, never in the target: counted, IoU 0
    assert math.isnan(scores["class_accuracy"][0])
    assert scores["miou"] == pytest.approx(99 / 200)
    assert scores["pixel_accuracy"] == pytest.approx(99 / 100)
    assert scores["mean_accuracy"] == pytest.approx(99 / 100)
    assert scores["fwiou"] == pytest.approx(99 / 100)
    assert scores["dice"][1] == pytest.approx(2 * 99 / (100 + 99))


def test_hand_case_exact_matrix():
    pred = torch.tensor([[0, 1, 2], [2, 2, 1]])
    target = torch.tensor([[0, 1, 1], [255, 2, 0]])
    metric = ConfusionMatrix(3)
    metric.update(pred, target)
    assert torch.equal(metric.matrix, torch.tensor([[1, 1, 0], [0, 1, 1], [0, 0, 1]]))
    assert metric.compute()["iou"] == pytest.approx([1 / 2, 1 / 3, 1 / 2])


def test_merge_reset_and_device_follow():
    a, b = ConfusionMatrix(NUM_CLASSES), ConfusionMatrix(NUM_CLASSES)
    whole = ConfusionMatrix(NUM_CLASSES)
    batches = random_batches(2)
    for index, (pred, target) in enumerate(batches):
        (a if index % 2 else b).update(pred, target)
        whole.update(pred, target)
    assert torch.equal(a.merge(b).matrix, whole.matrix)
    assert torch.equal(ConfusionMatrix(NUM_CLASSES).merge(whole.matrix).matrix, whole.matrix)
    whole.reset()
    assert whole.matrix.sum() == 0 and whole.matrix.dtype == torch.int64
    assert math.isnan(whole.compute()["miou"])


def test_bad_input_raises_clear_errors():
    metric = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="does not match target shape"):
        metric.update(torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target values \[3, 7\]"):
        metric.update(torch.zeros(1, 3, dtype=torch.long), torch.tensor([[3, 7, 255]]))
    with pytest.raises(ValueError, match="prediction values"):
        metric.update(torch.tensor([[5]]), torch.tensor([[0]]))
    with pytest.raises(ValueError, match="argmax"):
        metric.update(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="cannot merge"):
        metric.merge(ConfusionMatrix(4))
    assert metric.matrix.sum() == 0  # a rejected batch leaves the matrix untouched
