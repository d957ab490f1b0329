"""U-Net's size rules and Hypercolumn's boxes and linearity."""

import pytest
import torch
from torchvision.ops import roi_align

import pixelwise
from pixelwise.models.unet import valid_input_size, valid_output_size


def test_valid_unet_matches_the_paper_572_to_388():
    model = pixelwise.create_model("unet", 2, in_channels=1, padding="valid", base_channels=4).eval()
    assert valid_output_size(572) == 388 and valid_input_size(388) == 572
    with torch.inference_mode():
        assert model(torch.randn(1, 1, 572, 572)).shape == (1, 2, 388, 388)


@pytest.mark.parametrize("output", [1, 10, 100, 388])
def test_valid_input_size_covers_the_output_with_even_pooled_sizes(output):
    size = valid_input_size(output)
    assert valid_output_size(size) >= output
    side = size
    for _ in range(4):
        side -= 4
        assert side % 2 == 0, "every map before a pooling is even"
        side //= 2


def test_valid_unet_too_small_input_is_a_clear_error():
    model = pixelwise.create_model("unet", 2, padding="valid", base_channels=4)
    with pytest.raises(ValueError, match="too small for a valid-padding U-Net of depth 4: it needs at least"):
        model(torch.randn(1, 3, 100, 120))


def test_same_unet_level_sizes_follow_the_docstring_table():
    model = pixelwise.create_model("unet", 2, base_channels=4).eval()
    seen = []
    for block in model.encoder:
        block.register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape[-2:])))
    with torch.inference_mode():
        model(torch.randn(1, 3, 97, 101))
    assert seen == [(97, 101), (49, 51), (25, 26), (13, 13), (7, 7)]


def test_hypercolumn_boxes_give_one_mask_per_box_at_the_box_size():
    model = pixelwise.create_model("hypercolumn", 4).eval()
    boxes = [torch.tensor([[0, 0, 20, 30], [10.5, 5, 70, 60]]), torch.tensor([[3, 4, 64, 48]])]
    with torch.inference_mode():
        masks = model(torch.randn(2, 3, 64, 80), boxes=boxes)
    assert [[tuple(m.shape) for m in per_image] for per_image in masks] == [
        [(4, 30, 20), (4, 55, 60)],
        [(4, 44, 61)],
    ]
    with pytest.raises(ValueError, match="outside the 80x48 image"):
        model(torch.randn(1, 3, 48, 80), boxes=[torch.tensor([[0, 0, 90, 10]])])
    with pytest.raises(ValueError, match="one \\(K, 4\\) tensor per image"):
        model(torch.randn(2, 3, 48, 80), boxes=[torch.tensor([[0, 0, 9, 10]])])


def test_hypercolumn_equals_one_linear_classifier_on_the_stacked_features():
    """Classifying each tap and summing equals upsampling, concatenating and classifying once."""
    torch.manual_seed(0)
    model = pixelwise.create_model("hypercolumn", 3, grid_size=1).eval()
    image = torch.randn(1, 3, 64, 64)
    box = torch.tensor([[0.0, 8.0, 4.0, 60.0, 52.0]])
    with torch.inference_mode():
        ours = model.box_logits(model.tap_scores(image), box, (11, 14))
        _, pool2, _, pool4, pool5 = model.backbone(image)
        taps = [pool2, pool4, model.fc(pool5)]
        hypercolumns = torch.cat([
            roi_align(t, box, (11, 14), spatial_scale=1 / s, sampling_ratio=2, aligned=True)
            for t, s in zip(taps, model.tap_strides, strict=True)
        ], dim=1)
        weight = torch.cat([c.weight for c in model.classifiers], dim=1)
        bias = sum(c.bias for c in model.classifiers)
        reference = torch.nn.functional.conv2d(hypercolumns, weight, bias)
    assert hypercolumns.shape[1] == 128 + 512 + 4096
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_hypercolumn_grid_weights_are_a_partition_of_unity():
    model = pixelwise.create_model("hypercolumn", 2, grid_size=5)
    weights = model.grid_weights((23, 31), torch.zeros(1))
    assert weights.shape == (25, 23, 31)
    torch.testing.assert_close(weights.sum(0), torch.ones(23, 31))


def test_unet_dropout_acts_on_the_two_deepest_levels_in_training_only():
    torch.manual_seed(0)
    model = pixelwise.create_model("unet", 2, in_channels=1, base_channels=4, depth=3, dropout=0.5)
    seen = []
    model.dropout.register_forward_hook(lambda module, inputs, output: seen.append(tuple(inputs[0].shape)))
    x = torch.randn(2, 1, 32, 32)
    model.train()
    first, second = model(x), model(x)
    assert seen == [(2, 16, 8, 8), (2, 32, 4, 4)] * 2  # level 2 (skip) and level 3 (bottom)
    assert not torch.allclose(first, second)  # a fresh mask each pass
    model.eval()
    assert torch.equal(model(x), model(x))
    # Without dropout the same weights give the same network: eval mode ignores the option.
    plain = pixelwise.create_model("unet", 2, in_channels=1, base_channels=4, depth=3)
    plain.load_state_dict(model.state_dict())
    assert torch.equal(plain.eval()(x), model(x))
    with pytest.raises(ValueError, match="dropout must be in"):
        pixelwise.create_model("unet", 2, dropout=1.0)
