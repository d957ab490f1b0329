"""The deeplab-decoder topic: the decoder's low-level map has stride 4 on every backbone; the scores it reports."""

import math

import numpy as np
import pytest
from PIL import Image

from pixelwise.explain.base import figure_pixels, save_figure
from pixelwise.explain.deeplab_decoder import deeplab_decoder
from pixelwise.models import MODELS


@pytest.fixture(scope="module")
def explained():
    return deeplab_decoder(steps=1, image_size=32, eval_images=3, probe_size=(97, 130))


def test_the_low_level_feature_has_stride_4_for_every_backbone(explained):
    table = explained.numbers["low_level_features"]
    assert set(table) == set(MODELS["deeplabv3plus"].backbones)
    for backbone, strides in table.items():
        for output_stride in ("os8", "os16"):
            entry = strides[output_stride]
            # A stride-4 map of a 97 x 130 input has ceil(97 / 4) x ceil(130 / 4) pixels.
            assert entry["shape"] == [math.ceil(97 / 4), math.ceil(130 / 4)] == [25, 33], (backbone, output_stride)
            assert entry["declared_stride"] == 4
    assert table["mobilenet_v2"]["os16"]["channels"] == 24 and table["resnet50"]["os8"]["channels"] == 256


def test_the_scores_are_those_of_the_predictions(explained):
    masks = explained.extras["masks"].numpy()
    for name in ("deeplabv3", "deeplabv3plus"):
        pred = explained.extras["predictions"][name].numpy()
        ious = [((pred == c) & (masks == c)).sum() / ((pred == c) | (masks == c)).sum()
                for c in range(5) if ((pred == c) | (masks == c)).any()]
        scores = explained.numbers[name]
        assert scores["miou"] == pytest.approx(np.mean(ious))
        assert 0.0 <= scores["boundary_f_score"] <= 1.0 and 0.0 <= scores["error_share_near_boundaries"] <= 1.0


def test_figure_is_written_at_its_pixel_size(explained, tmp_path):
    figure = explained.figures["deeplab_decoder"]
    save_figure(figure, tmp_path / "deeplab_decoder.png")
    with Image.open(tmp_path / "deeplab_decoder.png") as image:
        assert image.size == figure_pixels(figure) == (1200, 630)
