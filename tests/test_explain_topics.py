"""The lecture topics convolutionalization ... aspp: each number against its analytic value, each figure's size."""

from __future__ import annotations

import itertools

import pytest
import torch
from PIL import Image

import pixelwise.explain
from pixelwise.explain.base import Explained, figure_pixels, save_figure
from pixelwise.nn.upsample import Upsample


def assert_figures_written(result: Explained, folder) -> None:
    """Every figure of ``result`` saves as a PNG of exactly ``figure_pixels`` pixels."""
    assert result.figures
    for stem, figure in result.figures.items():
        path = folder / f"{stem}.png"
        save_figure(figure, path)
        with Image.open(path) as image:
            assert image.size == figure_pixels(figure), stem


def test_topics_are_functions_even_after_their_module_is_imported():
    import pixelwise.explain.aspp  # noqa: F401  (binds the package attribute "aspp" to the module, then back)
    from pixelwise.explain.aspp import aspp

    assert pixelwise.explain.aspp is aspp
    assert callable(pixelwise.explain.upsampling)


def test_convolutionalization_sizes_and_logits(tmp_path, one_thread):
    from torchvision.models import vgg16

    from pixelwise.explain.convolutionalization import score_map_size
    from pixelwise.nn.convolutionalize import convolutionalize

    with torch.device("meta"):
        meta_model = convolutionalize(vgg16())
    for height, width in [(224, 224), (255, 255), (256, 257), (300, 700), (1000, 513)]:
        expected = ((height - 224) // 32 + 1, (width - 224) // 32 + 1)
        assert score_map_size(meta_model, height, width) == expected

    result = pixelwise.explain.convolutionalization(scene_size=(256, 320), sizes=((224, 224), (288, 480)))
    assert result.numbers["max_abs_logit_difference_at_224"] <= 1e-5 * max(result.numbers["max_abs_logit_at_224"], 1)
    assert result.numbers["scene_score_map"] == [2, 4]
    assert [row["score_map"] for row in result.numbers["score_map_sizes"]] == [[1, 1], [3, 9], [2, 4]]
    assert_figures_written(result, tmp_path)

    with pytest.raises(ValueError, match="smaller than the classifier's 224x224"):
        pixelwise.explain.convolutionalization(sizes=((100, 300),))


def brute_force_counts(kernel: int, stride: int, padding: int, output_padding: int, size: int) -> torch.Tensor:
    """Overlap counts of a 1-D transposed convolution, by enumerating every (input pixel, tap) pair."""
    length = (size - 1) * stride - 2 * padding + kernel + output_padding
    counts = torch.zeros(length)
    for pixel, tap in itertools.product(range(size), range(kernel)):
        position = pixel * stride + tap - padding
        if 0 <= position < length:
            counts[position] += 1
    return counts


def test_upsampling_overlap_counts_and_periodic_energy(tmp_path):
    size = 16
    result = pixelwise.explain.upsampling(size=size)
    counts = result.extras["overlap_counts"]
    for name, kernel in [("transposed 3x3", 3), ("transposed 4x4 (bilinear)", 4), ("transposed 2x2", 2)]:
        conv = Upsample(1, 1, 2, "transposed", kernel_size=kernel).conv
        row = brute_force_counts(kernel, 2, conv.padding[0], conv.output_padding[0], size)
        torch.testing.assert_close(counts[name], torch.outer(row, row), rtol=0, atol=1e-5)
        # Away from the border each output pixel gets ceil(k/s) or floor(k/s) taps per axis.
        interior = row[4:-4]
        assert set(interior.int().tolist()) == {-(-kernel // 2), kernel // 2}
    for name in ("nearest + conv", "bilinear + conv"):
        # Interpolation first: every output pixel is read by the full 3x3 kernel; 2 or 3 taps at the border.
        row = torch.tensor([2.0] + [3.0] * (2 * size - 2) + [2.0])
        torch.testing.assert_close(counts[name], torch.outer(row, row), rtol=0, atol=1e-5)

    energies = result.numbers["upsamplers"]
    for name in ("transposed 4x4 (bilinear)", "nearest + conv", "bilinear + conv"):
        assert energies[name]["periodic_energy_constant"] <= 1e-6, name
        assert energies[name]["periodic_energy_smooth"] <= 1e-6, name
    assert energies["transposed 3x3"]["periodic_energy_constant"] > 1e-2
    assert energies["transposed 3x3"]["periodic_energy_smooth"] > 1e-4
    assert energies["transposed 3x3"]["overlap_counts_interior_period"] in ([[4, 2], [2, 1]], [[1, 2], [2, 4]])
    assert_figures_written(result, tmp_path)

    with pytest.raises(ValueError, match="at least 12x12"):
        pixelwise.explain.upsampling(size=8)


def test_periodic_energy_of_a_checkerboard_is_everything():
    from pixelwise.explain.upsampling import periodic_energy

    rows, cols = torch.meshgrid(torch.arange(20), torch.arange(20), indexing="ij")
    assert periodic_energy(((rows + cols) % 2).float() - 0.5) == pytest.approx(1.0)
    assert periodic_energy(torch.ones(20, 20)) == 0.0


def reachable_offsets(rates: tuple[int, ...]) -> set[int]:
    """Offsets a stack of 3x3 atrous convolutions reaches along one axis: sums of -r, 0 or +r per layer."""
    return {sum(step * rate for step, rate in zip(steps, rates, strict=True))
            for steps in itertools.product((-1, 0, 1), repeat=len(rates))}


def test_atrous_receptive_fields_sizes_and_holes(tmp_path):
    stacks = ((1, 1, 1), (2, 2, 2), (1, 2, 5), (3, 1), (4,))
    result = pixelwise.explain.atrous_receptive_fields(rate_stacks=stacks, size=25)
    for rates, entry in zip(stacks, result.numbers["stacks"], strict=True):
        side = 1 + 2 * sum(rates)
        assert entry["receptive_field"] == side
        assert entry["hole_fraction"] == pytest.approx(1 - (len(reachable_offsets(rates)) / side) ** 2)
    by_rates = {tuple(entry["rates"]): entry["hole_fraction"] for entry in result.numbers["stacks"]}
    assert by_rates[1, 1, 1] == 0 and by_rates[1, 2, 5] == 0
    assert by_rates[2, 2, 2] > 0
    assert_figures_written(result, tmp_path)

    with pytest.raises(ValueError, match="smaller than the largest receptive field, 17"):
        pixelwise.explain.atrous_receptive_fields(size=15)


def test_separable_convolution_counts(tmp_path, one_thread):
    channels, size = (3, 8, 24), 10
    result = pixelwise.explain.separable_convolution(channels=channels, size=size, repeats=1)
    for count, row in zip(channels, result.numbers["rows"], strict=True):
        assert row["standard_weights"] == 9 * count * count
        assert row["separable_weights"] == 9 * count + count * count
        assert row["standard_multiply_adds"] == 9 * count * count * size * size
        assert row["separable_multiply_adds"] == (9 * count + count * count) * size * size
        assert row["separable_seconds"] > 0 and row["standard_seconds"] > 0
    assert_figures_written(result, tmp_path)

    with pytest.raises(ValueError, match="channels must be positive"):
        pixelwise.explain.separable_convolution(channels=(0, 8))


def valid_fraction_by_counting(rate: int, size: int) -> float:
    """Mean share of a 3x3 filter's taps at ``rate`` inside a size x size map, counted position by position."""
    inside = sum(
        0 <= row + dy * rate < size and 0 <= col + dx * rate < size
        for row, col in itertools.product(range(size), repeat=2)
        for dy, dx in itertools.product((-1, 0, 1), repeat=2)
    )
    return inside / (9 * size * size)


def test_aspp_valid_weights_and_fields(tmp_path):
    rates = (1, 6, 12, 18, 24, 36, 48)
    result = pixelwise.explain.aspp(valid_rates=rates)
    valid = result.numbers["valid_weights"]
    for rate, fraction in zip(rates, valid["mean_fraction"], strict=True):
        assert fraction == pytest.approx(valid_fraction_by_counting(rate, 65), abs=1e-6), rate

    # At output stride 16 the 513 crop is a 33x33 map: rate 6 reaches rows 10..22, rate 18 (> 16) only the centre.
    branches = {entry["branch"]: entry["feature_rows"] for entry in result.numbers["output_strides"]["16"]["branches"]}
    assert branches == {"1x1": [16, 16], "3x3 rate 6": [10, 22], "3x3 rate 12": [4, 28], "3x3 rate 18": [16, 16],
                        "image pooling": [0, 32]}
    assert result.numbers["output_strides"]["8"]["feature_size"] == 65
    assert_figures_written(result, tmp_path)

    from pixelwise.explain.aspp import valid_weight_fraction

    with pytest.raises(ValueError, match="rate and size must be >= 1"):
        valid_weight_fraction(0)


def test_fcn_crop_offsets_equal_those_traced_through_the_network(tmp_path, one_thread):
    from pixelwise.explain.fcn_skips import crop_offsets, traced_offsets
    from pixelwise.models.fcn import FCN, OUTPUT_OFFSET, POOL3_OFFSET, POOL4_OFFSET

    offsets = traced_offsets(FCN(3, 8, width_divisor=64))
    # The docstring's table: pixel j of each map is centred on input coordinate offset + stride * j.
    expected = {"pool3": -95.5, "pool4": -91.5, "score_fr": 12.5, "upscore2": 4.5, "upscore_pool4": 0.5,
                "upscore_final": -3.0}
    assert offsets == pytest.approx(expected, abs=1e-6)
    assert crop_offsets(offsets) == pytest.approx({"pool4": POOL4_OFFSET, "pool3": POOL3_OFFSET,
                                                   "output": OUTPUT_OFFSET}, abs=1e-6)
    with pytest.raises(ValueError, match="tracing needs FCN-8s"):
        traced_offsets(FCN(3, 16, width_divisor=64))

    result = pixelwise.explain.fcn_skips(steps=2, image_size=32, width_divisor=64, batch_size=2, train_images=2)
    assert result.numbers["traced_crops"] == pytest.approx({"pool4": 6, "pool3": 12, "output": 3}, abs=1e-6)
    for split in ("train", "val"):
        assert set(result.numbers["scores"][split]) == {"FCN-32s", "FCN-16s", "FCN-8s"}
        for scores in result.numbers["scores"][split].values():
            assert 0 <= scores["mIoU"] <= 1 and 0 <= scores["boundary_f_score_2px"] <= 1
    # The upsamplers stay bilinear (the paper's fixed upscore layers) while the rest trains.
    model = result.extras["models"]["FCN-8s"]
    torch.testing.assert_close(model.upscore_final.conv.weight, FCN(5, 8, width_divisor=64).upscore_final.conv.weight)
    assert_figures_written(result, tmp_path)


def test_fcn_width_divisor_keeps_the_geometry():
    from pixelwise.models.fcn import FCN

    narrow = FCN(3, 8, width_divisor=16)
    assert narrow.backbone.channels == (4, 8, 16, 32, 32)
    assert narrow.classifier[0].out_channels == 256
    assert narrow(torch.rand(1, 3, 37, 50)).shape == (1, 3, 37, 50)
    with pytest.raises(ValueError, match="width_divisor must divide 64"):
        FCN(width_divisor=3)
    with pytest.raises(ValueError, match="pretrained_backbone needs the full VGG16 width"):
        FCN(width_divisor=2, pretrained_backbone=True)
