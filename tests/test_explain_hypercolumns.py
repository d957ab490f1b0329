"""The hypercolumns topic: the feature dimension per tap and in total, the boxes, the per-box masks."""

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.explain.base import figure_pixels, save_figure
from pixelwise.explain.hypercolumns import box_targets, class_boxes, hypercolumns


@pytest.fixture(scope="module")
def explained():
    return hypercolumns(steps=2, train_images=4, grid_size=3)


def test_the_hypercolumn_is_the_sum_of_the_taps_channels(explained):
    dims = explained.numbers["feature_dimension"]
    # VGG16: pool2 has 128 channels, pool4 512, fc7 4096 (Hariharan et al. 2015: 4736 per pixel).
    assert dims == {"pool2": 128, "pool4": 512, "fc7": 4096, "total": 4736}
    taps = explained.extras["taps"]
    assert dims["total"] == sum(tap.shape[1] for tap in taps)
    model = explained.extras["model"]
    assert dims["total"] == sum(classifier.in_channels for classifier in model.classifiers)
    assert explained.numbers["tap_strides"] == {"pool2": 4, "pool4": 16, "fc7": 32}
    assert [64 // tap.shape[-1] for tap in taps] == [4, 16, 32]


def test_two_boxes_each_with_a_mask_of_its_size(explained):
    boxes = explained.numbers["boxes"]
    assert len(boxes) == 2
    for entry, logits in zip(boxes, explained.extras["masks_per_box"], strict=True):
        x1, y1, x2, y2 = entry["box_xyxy"]
        assert logits.shape == (5, y2 - y1, x2 - x1)
        assert 0.0 <= entry["mask_iou"] <= 1.0


def test_class_boxes_and_box_targets_against_numpy():
    mask = torch.zeros(20, 30, dtype=torch.long)
    mask[3:9, 4:15] = 2
    mask[12:18, 20:27] = 1
    mask[5, 16] = 2  # a second piece of class 2 widens its box
    assert class_boxes(mask) == [(1, (20, 12, 27, 18)), (2, (4, 3, 17, 9))]
    # At its own size a box's targets are its pixels: the object's label where it is, 0 elsewhere.
    target = box_targets(mask, 2, (4, 3, 17, 9), (6, 13))
    np.testing.assert_array_equal(target.numpy(), np.where(mask[3:9, 4:17].numpy() == 2, 2, 0))
    # Halving the grid reads every other pixel, at the centre of each 2x2 bin.
    target = box_targets(mask, 1, (20, 12, 28, 18), (3, 4))
    np.testing.assert_array_equal(target.numpy(), np.where(mask[13:18:2, 21:28:2].numpy() == 1, 1, 0))


def test_figures_are_written_at_their_pixel_size(explained, tmp_path):
    expected = {"hypercolumn_boxes": (900, 330), "location_classifiers": (900, 460)}
    for name, figure in explained.figures.items():
        save_figure(figure, tmp_path / f"{name}.png")
        with Image.open(tmp_path / f"{name}.png") as image:
            assert image.size == figure_pixels(figure) == expected[name]
