"""data.in_memory: batches cut from decoded images on the device match the per-image geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixelwise.data.base import IGNORE_INDEX
from pixelwise.data.in_memory import InMemoryBatches
from pixelwise.data.synthetic import SyntheticShapes
from pixelwise.data.transforms import Normalization
from pixelwise.train import config_from_dict, train
from pixelwise.train.sampling import SampleStream

IDENTITY = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def batches(dataset, **options) -> InMemoryBatches:
    settings = {"crop_size": None, "scale_range": None, "hflip": False, "vflip": False, "normalization": IDENTITY}
    return InMemoryBatches(dataset, SampleStream(len(dataset), seed=0), torch.device("cpu"), 2,
                           **{**settings, **options})


@pytest.fixture(scope="module")
def dataset():
    return SyntheticShapes("train", num_images=4, image_size=(24, 32), seed=3)


def originals(dataset, indices):
    images = torch.stack([dataset.load(i)[0].as_subclass(torch.Tensor) for i in indices]).float() / 255
    masks = torch.stack([dataset.load(i)[1].as_subclass(torch.Tensor) for i in indices])
    return images, masks


def test_no_augmentation_gives_the_images_themselves(dataset):
    images, masks = batches(dataset).batch([2, 0], [11, 12])
    want_images, want_masks = originals(dataset, [2, 0])
    torch.testing.assert_close(images, want_images, atol=1e-6, rtol=0)
    assert torch.equal(masks, want_masks)


def test_flips_and_normalisation(dataset):
    source = batches(dataset, hflip=True, vflip=True, normalization=Normalization((0.5, 0.4, 0.3), (0.2, 0.25, 0.5)))
    seed = next(s for s in range(100) if (np.random.default_rng(s).random(5)[3:] < 0.5).all())  # both flips
    images, masks = source.batch([1], [seed])
    want_images, want_masks = originals(dataset, [1])
    want_images = (want_images - torch.tensor([0.5, 0.4, 0.3])[:, None, None]) / torch.tensor([0.2, 0.25, 0.5])[
        :, None, None]
    torch.testing.assert_close(images, want_images.flip(-1, -2), atol=1e-5, rtol=0)
    assert torch.equal(masks, want_masks.flip(-1, -2))


def test_scale_two_is_bilinear_and_nearest_upsampling(dataset):
    images, masks = batches(dataset, scale_range=(2.0, 2.0), crop_size=(48, 64)).batch([3], [5])
    want_images, want_masks = originals(dataset, [3])
    torch.testing.assert_close(images, F.interpolate(want_images, scale_factor=2, mode="bilinear"), atol=1e-5, rtol=0)
    assert torch.equal(masks, F.interpolate(want_masks[:, None].float(), scale_factor=2).squeeze(1).long())


def test_crop_of_a_larger_image_is_a_window_and_padding_is_ignored(dataset):
    images, masks = batches(dataset, crop_size=(8, 8)).batch([0, 1], [1, 2])
    want_images, want_masks = originals(dataset, [0, 1])
    for b in range(2):  # each crop is some 8x8 window of its image, at whole-pixel offsets
        found = any(torch.equal(masks[b], want_masks[b, y:y + 8, x:x + 8])
                    and torch.allclose(images[b], want_images[b, :, y:y + 8, x:x + 8], atol=1e-6)
                    for y in range(17) for x in range(25))
        assert found
    images, masks = batches(dataset, scale_range=(0.5, 0.5), crop_size=(24, 32)).batch([0], [7])
    assert (masks == IGNORE_INDEX).float().mean().item() == pytest.approx(0.75, abs=0.05)
    assert images[0][:, masks[0] == IGNORE_INDEX].abs().max() == 0  # black padding


def test_training_with_in_memory_batches(tmp_path):
    raw = {
        "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}},
        "data": {"name": "synthetic", "options": {"num_images": 8, "image_size": [32, 32]}, "in_memory": True,
                 "crop_size": [24, 24], "scale_range": [0.75, 1.25]},
        "train": {"steps": 3, "batch_size": 2, "progress": False, "log_every": 1},
        "eval": {"every": 3, "plot_images": 0}}
    result = train(config_from_dict(raw, "test"), tmp_path / "run")
    assert result.steps == 3 and 0.0 <= result.scores["miou"] <= 1.0
    with pytest.raises(ValueError, match="data.rotation"):
        train(config_from_dict({**raw, "data": {**raw["data"], "rotation": 10.0}}, "test"), tmp_path / "bad")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_match_cpu(dataset):
    options = {"crop_size": (20, 28), "scale_range": (0.6, 1.7), "hflip": True, "vflip": True}
    on_cpu = batches(dataset, **options).batch([0, 1, 2, 3], [4, 5, 6, 7])
    source = InMemoryBatches(dataset, SampleStream(4, 0), torch.device("cuda"), 4, normalization=IDENTITY, **options)
    on_gpu = source.batch([0, 1, 2, 3], [4, 5, 6, 7])
    torch.testing.assert_close(on_gpu[0].cpu(), on_cpu[0], atol=1e-4, rtol=0)
    assert (on_gpu[1].cpu() == on_cpu[1]).float().mean() > 0.999  # nearest picks may differ on exact ties
