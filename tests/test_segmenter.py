"""Segmenter: inputs, normalisation, whole / slide / overlap-tile, test-time augmentation, fast path, CRF hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from pixelwise import create_model, save_model
from pixelwise.data.base import DataError
from pixelwise.data.transforms import Normalization
from pixelwise.infer import Segmenter, fold_batchnorm
from pixelwise.infer.overlap_tile import mirror_indices
from pixelwise.infer.sliding import slide_logits, window_starts

MEAN, STD = [0.2, 0.5, 0.7], [0.3, 0.2, 0.1]


def randomize_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters (fresh ones are the identity)."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.2)
            module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(channels, generator=generator) * 0.5 + 1)
            module.bias.data.copy_(torch.randn(channels, generator=generator) * 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return randomize_batchnorm(create_model("unet", 4, base_channels=4, depth=2, batch_norm=True))


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)


def reference_probs(model, pixels: np.ndarray, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> torch.Tensor:
    """softmax(model((x / 255 - mean) / std)) written out by hand: (K, H, W)."""
    x = torch.from_numpy(pixels).permute(2, 0, 1).float()[None] / 255
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(x).softmax(1)[0]


def test_whole_mode_matches_hand_written_normalisation(unet, image, tmp_path):
    save_model(unet, tmp_path, normalization=Normalization(MEAN, STD))
    probs = Segmenter(tmp_path).predict_proba(image)
    assert probs.shape == (4, 37, 53) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, reference_probs(unet, image, MEAN, STD).numpy(), atol=1e-5)
    # A card without its own normalisation has ImageNet statistics.
    np.testing.assert_allclose(Segmenter(unet).predict_proba(image), reference_probs(unet, image).numpy(), atol=1e-5)


def test_every_input_kind_gives_the_same_answer(unet, image, tmp_path):
    segmenter = Segmenter(unet)
    expected = segmenter.predict_proba(image)
    path = tmp_path / "image.png"
    Image.fromarray(image).save(path)
    tensor_uint8 = torch.from_numpy(image).permute(2, 0, 1)
    inputs = [str(path), path, Image.open(path), image, tensor_uint8, tensor_uint8.float() / 255]
    for item in inputs:
        np.testing.assert_allclose(segmenter.predict_proba(item), expected, atol=1e-5, err_msg=type(item).__name__)
    # A list is batched and answered in order, images of different sizes included.
    small = image[:20, :30]
    batch = segmenter.predict([image, small, image])
    assert [b.shape for b in batch] == [(37, 53), (20, 30), (37, 53)]
    np.testing.assert_array_equal(batch[1], segmenter.predict(small))
    np.testing.assert_array_equal(batch[0], expected.argmax(0))
    # Grayscale is repeated to the three channels the model reads.
    gray = image[..., 0]
    np.testing.assert_allclose(segmenter.predict_proba(gray), segmenter.predict_proba(np.stack([gray] * 3, -1)))


def test_unreadable_file_and_bad_options_are_named(unet, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        Segmenter(unet).predict(broken)
    with pytest.raises(ValueError, match="mode"):
        Segmenter(unet, mode="tiles")
    with pytest.raises(ValueError, match="precision"):
        Segmenter(unet, precision="int8")
    with pytest.raises(ValueError, match="array"):
        Segmenter(unet).predict(np.zeros((4, 4, 5), np.uint8))


def test_window_starts_follow_mmsegmentation():
    assert window_starts(1000, 512, 341) == [0, 341, 488]
    assert window_starts(512, 512, 341) == [0]
    assert window_starts(300, 512, 341) == [0]
    for size, tile, stride in [(1000, 512, 341), (777, 100, 33), (101, 10, 10)]:
        starts = window_starts(size, tile, stride)
        assert all(0 <= s and s + tile <= size for s in starts)  # never past the image
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + tile] = True
        assert covered.all()


def brute_force_slide(model, images: torch.Tensor, tile: int, stride: int) -> np.ndarray:
    """Sum of window logits / window count per pixel, with explicit loops over a count array."""
    _, _, height, width = images.shape
    total = np.zeros((images.shape[0], 4, height, width))
    count = np.zeros((height, width))
    y = 0
    while True:
        top = min(y, height - tile)
        x = 0
        while True:
            left = min(x, width - tile)
            with torch.no_grad():
                out = model(images[..., top : top + tile, left : left + tile]).numpy()
            total[..., top : top + tile, left : left + tile] += out
            count[top : top + tile, left : left + tile] += 1
            if left + tile >= width:
                break
            x += stride
        if top + tile >= height:
            break
        y += stride
    return total / count


def test_slide_averages_overlapping_windows(unet):
    images = torch.randn(2, 3, 45, 61)
    with torch.no_grad():
        ours = slide_logits(unet, images, 4, (24, 24), (16, 16))
    np.testing.assert_allclose(ours.numpy(), brute_force_slide(unet, images, 24, 16), atol=1e-5)


def test_slide_pads_only_an_image_smaller_than_the_tile(unet):
    images = torch.randn(1, 3, 20, 50)
    with torch.no_grad():
        ours = slide_logits(unet, images, 4, (32, 32), (16, 16))
        # Height is padded to the tile (zeros after normalisation), width is windowed.
        padded = F.pad(images, (0, 0, 0, 12))
        reference = brute_force_slide(unet, padded, 32, 16)[..., :20, :]
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-5)


def test_segmenter_slide_mode_uses_the_windows(unet, image):
    sliding = Segmenter(unet, mode="slide", tile=(24, 24), stride=(16, 16)).predict_proba(image)
    whole = Segmenter(unet).predict_proba(image)
    assert sliding.shape == whole.shape
    assert not np.allclose(sliding, whole, atol=1e-4)  # a CNN with context sees windows differently
    np.testing.assert_allclose(sliding.sum(0), 1, atol=1e-5)


def test_mirror_indices_match_numpy_reflect():
    for size, before, after in [(5, 2, 3), (5, 11, 17), (1, 3, 2), (2, 5, 5)]:
        expected = np.pad(np.arange(size), (before, after), mode="reflect") if size > 1 else np.zeros(
            size + before + after, int)
        np.testing.assert_array_equal(mirror_indices(size, before, after).numpy(), expected)


@pytest.fixture(scope="module")
def valid_unet():
    torch.manual_seed(0)
    return create_model("unet", 3, base_channels=4, depth=2, padding="valid").eval()


def test_overlap_tile_equals_the_whole_mirrored_image(valid_unet):
    pixels = np.random.default_rng(1).integers(0, 256, (45, 38, 3), dtype=np.uint8)
    # The model contract: depth 2 loses 20 pixels on each side; output tiles of 8 need inputs of 48.
    margin = valid_unet.output_margin
    assert (margin, valid_unet.size_multiple, valid_unet.input_size_for(8)) == (20, 4, 48)
    assert valid_unet(torch.zeros(1, 3, 48, 48)).shape[-1] == 48 - 2 * margin
    # Reference: mirror the whole image by hand (numpy), run the model once, keep the image's pixels.
    padded = np.pad(pixels, ((margin, margin + 3), (margin, margin + 2), (0, 0)), mode="reflect")
    expected = reference_probs(valid_unet, padded)[:, :45, :38].numpy()
    whole = Segmenter(valid_unet).predict_proba(pixels)
    stitched = Segmenter(valid_unet, mode="slide", tile=(8, 16)).predict_proba(pixels)
    np.testing.assert_allclose(whole, expected, atol=1e-5)
    np.testing.assert_allclose(stitched, expected, atol=1e-5)
    with pytest.raises(ValueError, match="multiples of 4"):
        Segmenter(valid_unet, mode="slide", tile=(10, 10))
    # Overlap-tile stitches output tiles edge to edge: a window stride means nothing to it.
    with pytest.raises(ValueError, match="stride applies to sliding windows; this model loses a 20-pixel margin"):
        Segmenter(valid_unet, mode="slide", tile=(8, 8), stride=(4, 4))


def test_flip_and_multiscale_average_the_softmax(unet, image):
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    views = []
    with torch.no_grad():
        for scale in (0.5, 1.5):
            size = (round(37 * scale), round(53 * scale))
            scaled = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            for flip in (False, True):
                logits = unet(scaled.flip(-1) if flip else scaled)
                logits = logits.flip(-1) if flip else logits
                views.append(F.interpolate(logits, size=(37, 53), mode="bilinear", align_corners=False).softmax(1))
    expected = torch.stack(views).mean(0)[0].numpy()
    ours = Segmenter(unet, scales=(0.5, 1.5), flip=True).predict_proba(image)
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    np.testing.assert_array_equal(Segmenter(unet, scales=(0.5, 1.5), flip=True).predict(image), expected.argmax(0))


def test_fold_batchnorm_keeps_the_output(unet):
    import copy

    model = copy.deepcopy(unet)
    x = torch.randn(2, 3, 40, 44)
    with torch.no_grad():
        expected = model(x)
    assert fold_batchnorm(model, torch.randn(1, 3, 32, 32)) == 10  # 2 per DoubleConv, 5 DoubleConvs
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


def test_fold_batchnorm_refuses_a_conv_that_feeds_more_than_its_batchnorm():
    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # y is needed un-normalised too: folding would be wrong

    model = randomize_batchnorm(Shared())
    with pytest.raises(RuntimeError, match="feeds more"):
        fold_batchnorm(model, torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("precision, agreement", [("fp32", 0.9999), ("bf16", 0.99)])
def test_fast_path_agrees_with_eager(unet, precision, agreement):
    pixels = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    eager = Segmenter(unet).predict_proba(pixels)
    fast = Segmenter(unet, fast=True, precision=precision).predict_proba(pixels)
    assert (fast.argmax(0) == eager.argmax(0)).mean() >= agreement
    np.testing.assert_allclose(fast, eager, atol=1e-4 if precision == "fp32" else 0.05)


def test_crf_true_applies_the_runs_own_settings(unet, image, tmp_path):
    from pixelwise.crf import CRFSettings, dense_crf

    settings = CRFSettings(iterations=2, bilateral_srgb=5.0)
    save_model(unet, tmp_path, crf=settings)
    probs = Segmenter(unet).predict_proba(image)
    expected = dense_crf(torch.from_numpy(probs), image, iterations=2, bilateral_srgb=5.0).numpy()
    np.testing.assert_allclose(Segmenter(tmp_path, crf=True).predict_proba(image), expected, atol=1e-5)
    np.testing.assert_array_equal(Segmenter(tmp_path, crf=True).predict(image), expected.argmax(0))
    with pytest.raises(ValueError, match=r"crf: unknown key\(s\) \['bilateral_std'\]"):
        Segmenter(unet, crf={"bilateral_std": 3})


def test_real_dense_crf_refines_the_probabilities(unet, image):
    from pixelwise import crf

    options = {"iterations": 2}
    probs = Segmenter(unet).predict_proba(image)
    expected = crf.dense_crf(torch.from_numpy(probs), image, **options)
    refined = Segmenter(unet, crf=options).predict_proba(image)
    np.testing.assert_allclose(refined, expected.numpy(), atol=1e-5)
    assert not np.allclose(refined, probs, atol=1e-3)
