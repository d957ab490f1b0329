"""Joint transforms: image and mask move together, masks stay nearest, padding/fill is ignore."""

import pytest
import torch
from torch.nn.functional import max_pool2d
from torchvision import tv_tensors

from pixelwise.data.transforms import IMAGENET_MEAN, IMAGENET_STD, GridElastic, build_transforms

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)
LABELS = (0, 3, 7)


def blocky_pair(height: int = 64, width: int = 60):
    """A mask of large label blocks and an image whose red channel encodes the label (label * 30)."""
    rows = torch.arange(height).view(-1, 1) // 16
    cols = torch.arange(width).view(1, -1) // 20
    mask = torch.tensor(LABELS)[(rows + cols) % 3]
    image = torch.stack([mask * 30, torch.full_like(mask, 100), torch.full_like(mask, 200)]).to(torch.uint8)
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


def red_channel(image: torch.Tensor) -> torch.Tensor:
    return (image * STD + MEAN)[0] * 255


def test_eval_is_exactly_dtype_and_normalisation():
    image, mask = blocky_pair()
    out_image, out_mask = build_transforms(False)(image, mask)
    expected = (image.float() / 255 - MEAN) / STD
    assert out_image.dtype == torch.float32 and out_mask.dtype == torch.int64
    assert torch.allclose(out_image, expected, atol=1e-6)
    assert torch.equal(out_mask, mask)
    assert type(out_image) is torch.Tensor and type(out_mask) is torch.Tensor


def test_crop_pads_image_with_zero_and_mask_with_ignore():
    image, mask = blocky_pair(10, 12)
    transform = build_transforms(True, crop_size=16, scale_range=None, hflip=False, ignore_index=250)
    out_image, out_mask = transform(image, mask)
    assert out_image.shape == (3, 16, 16) and out_mask.shape == (16, 16)
    padded = out_mask == 250
    assert padded.sum() == 16 * 16 - 10 * 12
    assert torch.allclose(out_image[:, padded], (-MEAN / STD).view(3, 1).expand(3, int(padded.sum())))
    assert sorted(out_mask[~padded].tolist()) == sorted(mask.flatten().tolist())


@pytest.mark.parametrize(
    "options",
    [
        {"crop_size": 32, "scale_range": (0.5, 2.0)},
        {"rotation": 30.0, "scale_range": None},
        {"elastic": True, "scale_range": None},
        # ElasticTransform blurs its displacement field with a 8 * sigma + 1 kernel: sides must exceed 4 sigma.
        {"elastic": (80.0, 5.0), "rotation": 10.0, "crop_size": (24, 36)},
        {"elastic_grid": (3, 6.0), "crop_size": 40, "scale_range": None},
    ],
)
def test_geometry_moves_image_and_mask_together(options):
    torch.manual_seed(0)
    image, mask = blocky_pair()
    transform = build_transforms(True, **options)
    for _ in range(5):
        out_image, out_mask = transform(image, mask)
        # Nearest for masks: no label is blended into a new value.
        assert set(out_mask.unique().tolist()) <= {*LABELS, 255}
        # The image was resampled bilinearly, so compare away from label borders, where a 5x5
        # neighbourhood holds one label (a mask moved apart from its image would agree on about a third).
        labels = out_mask.float()[None, None]
        uniform = (max_pool2d(labels, 5, 1, 2) == -max_pool2d(-labels, 5, 1, 2))[0, 0] & (out_mask != 255)
        agree = (red_channel(out_image)[uniform] - out_mask[uniform] * 30).abs() < 8
        assert uniform.sum() > 200 and agree.float().mean() > 0.95


def test_grid_elastic_moves_its_control_points_by_std_pixels_and_smoothly_between():
    torch.manual_seed(6)
    transform = GridElastic(points=3, std=4.0)
    fields = []
    for _ in range(400):
        grid = transform.make_params([tv_tensors.Image(torch.zeros(1, 33, 65))])["displacement"][0]  # (H, W, 2)
        fields.append(grid * torch.tensor([65 / 2, 33 / 2]))  # back to pixels
    fields = torch.stack(fields)
    corners = fields[:, [0, 0, -1, -1], [0, -1, 0, -1]]  # control points sit on the corners (align_corners)
    assert corners.std().item() == pytest.approx(4.0, rel=0.1)
    # Neighbouring pixels move almost alike: no pixel-scale noise that would fray the membranes.
    assert (fields[:, :, 1:] - fields[:, :, :-1]).abs().max() < 1.5
    with pytest.raises(ValueError, match="points >= 2"):
        GridElastic(points=1)


def test_rotation_fills_ignore_and_black():
    torch.manual_seed(1)
    image, mask = blocky_pair()
    out_image, out_mask = build_transforms(True, rotation=45.0, scale_range=None, hflip=False)(image, mask)
    filled = out_mask == 255
    assert filled.sum() > 100
    # Black where the mask is ignore, up to the one-pixel bilinear seam along the rotated border.
    assert (red_channel(out_image)[filled] < 1).float().mean() > 0.9


def test_hflip_is_exact_and_seeded_runs_repeat():
    image, mask = blocky_pair()
    transform = build_transforms(True, scale_range=None, hflip=True)
    outputs = []
    for _ in range(8):
        out_image, out_mask = transform(image, mask)
        flipped = torch.equal(out_mask, mask.flip(-1))
        assert flipped or torch.equal(out_mask, mask)
        assert torch.allclose(red_channel(out_image), (mask.flip(-1) if flipped else mask) * 30.0, atol=1e-3)
        outputs.append(flipped)
    assert any(outputs) and not all(outputs)
    torch.manual_seed(5)
    first = build_transforms(True, crop_size=20, rotation=20.0)(image, mask)
    torch.manual_seed(5)
    second = build_transforms(True, crop_size=20, rotation=20.0)(image, mask)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_flips_and_quarter_turns_reach_all_eight_symmetries_exactly():
    image, mask = blocky_pair(40, 40)  # square, so every symmetry keeps the shape
    turns = [torch.rot90(mask, k, (-2, -1)) for k in range(4)]
    symmetries = turns + [turn.flip(-1) for turn in turns]
    transform = build_transforms(True, scale_range=None, hflip=True, vflip=True, quarter_turns=True)
    torch.manual_seed(3)
    seen = set()
    for _ in range(64):
        out_image, out_mask = transform(image, mask)
        matches = [index for index, symmetry in enumerate(symmetries) if torch.equal(out_mask, symmetry)]
        assert len(matches) == 1
        seen.add(matches[0])
        # Moved, not resampled: the image is exactly the mask's picture.
        assert torch.allclose(red_channel(out_image), out_mask * 30.0, atol=1e-3)
    assert seen == set(range(8))


def test_quarter_turns_come_before_the_crop_so_batches_keep_their_shape():
    image, mask = blocky_pair(24, 40)
    transform = build_transforms(True, crop_size=(16, 32), scale_range=None, hflip=False, quarter_turns=True)
    torch.manual_seed(4)
    shapes = {transform(image, mask)[1].shape for _ in range(16)}
    assert shapes == {(16, 32)}


def test_color_jitter_changes_image_only():
    torch.manual_seed(2)
    image, mask = blocky_pair()
    out_image, out_mask = build_transforms(True, scale_range=None, hflip=False, color_jitter=0.4)(image, mask)
    assert torch.equal(out_mask, mask)
    assert not torch.allclose(out_image, build_transforms(False)(image, mask)[0], atol=1e-3)


def test_grayscale_and_plain_tensors():
    gray = torch.randint(0, 256, (1, 8, 9), dtype=torch.uint8)
    mask = torch.zeros(8, 9, dtype=torch.uint8)
    out_image, out_mask = build_transforms(False)(gray, mask)
    expected = (gray.float() / 255 - sum(IMAGENET_MEAN) / 3) / (sum(IMAGENET_STD) / 3)
    assert torch.allclose(out_image, expected, atol=1e-6)
    assert out_mask.dtype == torch.int64
    out_image, _ = build_transforms(False, mean=[0.5], std=[0.25])(gray, mask)
    assert torch.allclose(out_image, (gray.float() / 255 - 0.5) / 0.25, atol=1e-6)
    with pytest.raises(ValueError, match="1 channels but the image has 3"):
        build_transforms(False, mean=[0.5], std=[0.25])(gray.expand(3, -1, -1), mask)
    with pytest.raises(ValueError, match="scale_range"):
        build_transforms(True, scale_range=(2.0, 1.0))


def test_noise_has_the_requested_spread_and_leaves_the_mask_alone():
    torch.manual_seed(0)
    image = tv_tensors.Image(torch.full((1, 128, 128), 128, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.randint(0, 2, (128, 128)))
    out_image, out_mask = build_transforms(True, scale_range=None, hflip=False, noise=0.05, mean=[0.0],
                                           std=[1.0])(image, mask)
    assert torch.equal(out_mask, mask)
    assert abs(out_image.mean().item() - 128 / 255) < 0.005  # zero-mean noise
    assert out_image.std().item() == pytest.approx(0.05, rel=0.05)


def test_blur_softens_half_of_the_images_and_keeps_flat_regions():
    torch.manual_seed(0)
    step = torch.zeros(1, 32, 32, dtype=torch.uint8)
    step[..., 16:] = 200
    transform = build_transforms(True, scale_range=None, hflip=False, blur=2.0, mean=[0.0], std=[1.0])
    blurred = 0
    for _ in range(200):
        out_image, out_mask = transform(tv_tensors.Image(step), tv_tensors.Mask(step.squeeze(0) // 200))
        assert torch.equal(out_mask, step.squeeze(0) // 200)
        assert torch.allclose(out_image[..., :4], torch.tensor(0.0)) and torch.allclose(
            out_image[..., -4:], torch.tensor(200 / 255))  # far from the edge nothing changes
        blurred += bool((out_image[0, :, 15] > 0).any())  # the edge bleeds into its dark side
    assert 70 <= blurred <= 130  # about half: RandomApply with p = 0.5
