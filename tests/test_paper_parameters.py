"""Parameter counts against the papers."""

import pytest
import torch

import pixelwise


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(name: str, num_classes: int, **options) -> torch.nn.Module:
    with torch.device("meta"):  # counting needs shapes, not weights
        return pixelwise.create_model(name, num_classes, **options)


def test_fcn8s_has_about_134m_parameters():
    # The released voc-fcn8s Caffe model: 134.5M parameters with 21 classes.
    assert count(meta_model("fcn8s", 21)) == pytest.approx(134.5e6, rel=0.005)


def test_unet_paper_configuration_has_31m_parameters():
    # Ronneberger et al.: 1 input channel, 2 classes, valid padding, 64..1024 channels: 31.03M.
    model = meta_model("unet", 2, in_channels=1, padding="valid", base_channels=64, depth=4)
    assert count(model) == pytest.approx(31.03e6, rel=0.001)


def test_fcn_score_layers_on_the_skips_start_at_zero():
    model = pixelwise.create_model("fcn8s", 21)
    for layer in (model.score_pool4, model.score_pool3):
        assert layer.weight.abs().sum() == 0 and layer.bias.abs().sum() == 0
