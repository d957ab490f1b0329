"""The unet-sizes topic: the recorded sizes against the paper's Figure 1, valid_output_size and the docstring table."""

import re

import pytest
import torch
from PIL import Image

import pixelwise.models.unet as unet_module
from pixelwise.explain.base import figure_pixels, save_figure
from pixelwise.explain.unet_sizes import unet_sizes
from pixelwise.models.unet import UNet, level_sizes, valid_output_size


@pytest.fixture(scope="module")
def explained():
    return unet_sizes()


def docstring_table() -> list[list[tuple[int, int]]]:
    """The rows of the level table in ``pixelwise/models/unet.py``'s docstring, as (rows, columns) pairs."""
    rows = []
    for line in unet_module.__doc__.splitlines():
        if re.match(r"^\d\s{2,}\d", line):
            sizes = re.findall(r"(\d+) x (\d+)", line)
            rows.append([(int(h), int(w)) for h, w in sizes])
    return rows


def test_valid_padding_sizes_are_the_papers_figure_and_valid_output_size(explained):
    case = explained.numbers["cases"]["valid 572x572"]
    # Ronneberger et al. 2015, Figure 1: the second convolution's output at each level, the up-convolutions'
    # outputs and the decoder's, 572 in, 388 out.
    assert [h for h, _ in case["encoder"]] == [568, 280, 136, 64, 28]
    assert [h for h, _ in case["upsampled"]] == [392, 200, 104, 56]
    assert [h for h, _ in case["decoder"]] == [388, 196, 100, 52]
    assert case["output"] == [[388, 388]] and case["valid_output_size"] == [valid_output_size(572)] * 2
    assert explained.numbers["valid_margin"] == (572 - 388) // 2


def test_same_padding_sizes_are_the_docstring_table(explained):
    table = docstring_table()
    assert len(table) == 4, "the docstring's level table (97 x 101, depth 4) was not found"
    case = explained.numbers["cases"]["same 97x101"]
    for level, (encoder, pooled, upsampled, cropped) in enumerate(table):
        assert tuple(case["encoder"][level]) == encoder
        assert tuple(case["pooled"][level]) == pooled
        assert tuple(case["upsampled"][level]) == upsampled
        assert tuple(case["joined"][level]) == cropped == tuple(case["decoder"][level])
    assert case["output"] == [[97, 101]]


def test_a_1x1_input_goes_down_and_back(explained):
    case = explained.numbers["cases"]["same 1x1"]
    assert case["encoder"] == [[1, 1]] * 5 and case["upsampled"] == [[2, 2]] * 4 and case["output"] == [[1, 1]]


def test_level_sizes_matches_a_real_forward_pass_and_refuses_a_too_small_valid_input():
    torch.manual_seed(0)
    model = UNet(2, base_channels=2, depth=2).eval()
    sizes = level_sizes(model, 11, 6)
    assert sizes["output"] == [tuple(model(torch.zeros(1, 3, 11, 6)).shape[-2:])] == [(11, 6)]
    assert sizes["encoder"] == [(11, 6), (6, 3), (3, 2)]  # ceil-mode pooling
    assert not model.encoder[0]._forward_hooks, "the hooks are removed"
    with torch.device("meta"):
        valid = UNet(2, padding="valid")
    with pytest.raises(ValueError, match="too small for a valid-padding U-Net of depth 4"):
        level_sizes(valid, 100, 100)


def test_figure_is_written_at_its_pixel_size(explained, tmp_path):
    figure = explained.figures["unet_sizes"]
    save_figure(figure, tmp_path / "unet_sizes.png")
    with Image.open(tmp_path / "unet_sizes.png") as image:
        assert image.size == figure_pixels(figure) == (1500, 460)
