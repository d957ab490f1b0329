"""The overlap-tile topic: tiles stitched edge to edge equal one pass over the mirrored image (numpy's reflect)."""

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.explain.base import figure_pixels, save_figure
from pixelwise.explain.overlap_tile import overlap_tile


@pytest.fixture(scope="module")
def explained():
    return overlap_tile(image_size=(45, 70), tile=16)


def test_stitched_tiles_equal_one_pass_over_the_mirrored_image(explained):
    numbers, extras = explained.numbers, explained.extras
    model, image = extras["model"], extras["image"]
    margin = model.output_margin
    assert (numbers["margin"], numbers["size_multiple"]) == (20, 4) and numbers["tiles"] == [3, 5]
    assert numbers["input_tile"] == [16 + 2 * margin] * 2
    # Reference: mirror the image by hand (numpy), pad to the pooling grid, one forward pass, keep the image.
    padded = np.pad(image.numpy(), ((0, 0), (margin, margin + 3), (margin, margin + 2)), mode="reflect")
    with torch.no_grad():
        reference = model(torch.from_numpy(padded)[None])[0, :, :45, :70]
    torch.testing.assert_close(extras["stitched"], reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(extras["whole"], reference, atol=1e-5, rtol=1e-5)
    difference = numbers["max_abs_difference_stitched_vs_one_pass"]
    assert difference < 1e-5 and difference == float((extras["stitched"] - extras["whole"]).abs().max())


def test_a_tile_off_the_pooling_grid_is_refused():
    with pytest.raises(ValueError, match="tile must be a multiple of the model's size_multiple 4, got 10"):
        overlap_tile(tile=10)


def test_figure_is_written_at_its_pixel_size(explained, tmp_path):
    figure = explained.figures["overlap_tile"]
    save_figure(figure, tmp_path / "overlap_tile.png")
    with Image.open(tmp_path / "overlap_tile.png") as image:
        assert image.size == figure_pixels(figure) == (1500, 340)
