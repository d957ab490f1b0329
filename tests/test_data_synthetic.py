"""The synthetic shapes set: deterministic, well-formed, and not solvable from pixel colour alone."""

import pytest
import torch
from torch import nn
from torchvision import tv_tensors

from pixelwise.data import DATASETS, build_dataset
from pixelwise.data.synthetic import SyntheticShapes, make_image
from pixelwise.metrics import ConfusionMatrix


def stack(dataset):
    images, masks = zip(*[dataset[i] for i in range(len(dataset))], strict=True)
    return torch.stack(images), torch.stack(masks)


def test_items_are_pure_functions_of_seed_split_index():
    first = build_dataset("synthetic", None, "train", num_images=6, seed=3)
    again = SyntheticShapes("train", seed=3, num_images=100)
    for index in (0, 5):
        assert torch.equal(first[index][0], again[index][0]) and torch.equal(first[index][1], again[index][1])
    assert not torch.equal(first[0][0], first[1][0])
    assert not torch.equal(first[0][0], SyntheticShapes("val", seed=3)[0][0])
    assert not torch.equal(first[0][0], SyntheticShapes("train", seed=4)[0][0])
    assert torch.equal(make_image(7)[0], make_image(7)[0]) and not torch.equal(make_image(7)[0], make_image(8)[0])


def test_item_contract_and_defaults():
    train, val = SyntheticShapes("train"), SyntheticShapes("val")
    assert (len(train), len(val)) == (512, 64)
    assert DATASETS["synthetic"] is SyntheticShapes
    image, mask = train[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape == (3, 64, 64)
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64 and mask.shape == (64, 64)
    assert train.num_classes == 5 and train.in_channels == 3 and train.ignore_index == 255
    assert train.class_names == ["background", "disc", "rectangle", "triangle", "ring"]
    assert len(train.palette) == 5 and all(len(color) == 3 for color in train.palette)

    wide = SyntheticShapes("val", num_images=20, image_size=(48, 80), num_classes=7)
    _, masks = stack(wide)
    assert masks.shape == (20, 48, 80)
    assert set(masks.unique().tolist()) == set(range(7))  # every shape occurs, nothing else
    with pytest.raises(IndexError):
        wide[20]
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticShapes("train", num_classes=9)
    with pytest.raises(ValueError, match="no root"):
        build_dataset("synthetic", "/tmp", "train")


def test_transform_is_applied():
    dataset = build_dataset("synthetic", None, "val", num_images=2, transform=lambda image, mask: (mask, image))
    mask, image = dataset[0]
    assert mask.shape == (64, 64) and image.shape == (3, 64, 64)


def pixel_colour_miou(train_images, train_masks, val_images, val_masks) -> float:
    """Val mIoU of a per-pixel logistic regression on RGB (a 1x1 convolution) fitted on the train pixels."""
    torch.manual_seed(0)
    features = train_images.permute(0, 2, 3, 1).reshape(-1, 3).float() / 255
    targets = train_masks.reshape(-1)
    classifier = nn.Linear(3, 5)
    # Balanced classes, so the classifier does try to find objects instead of answering "background".
    weights = 1 / torch.bincount(targets, minlength=5).float()
    optimizer = torch.optim.LBFGS(classifier.parameters(), max_iter=50, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(classifier(features), targets, weight=weights / weights.sum())
        loss.backward()
        return loss

    optimizer.step(closure)
    metric = ConfusionMatrix(5)
    with torch.no_grad():
        logits = classifier(val_images.permute(0, 2, 3, 1).float() / 255)
    metric.update(logits.argmax(-1), val_masks)
    return metric.compute()["miou"]


def test_pixel_colour_alone_scores_poorly():
    train = stack(SyntheticShapes("train", num_images=24))
    val = stack(SyntheticShapes("val", num_images=32))
    assert pixel_colour_miou(*train, *val) < 0.4
    # Control: the same classifier on images painted in the class palette, where colour is the class,
    # is near perfect, so the low score above is the data set's doing.
    palette = torch.tensor(SyntheticShapes("train").palette, dtype=torch.uint8)
    painted = [(palette[masks].permute(0, 3, 1, 2), masks) for _, masks in (train, val)]
    assert pixel_colour_miou(*painted[0], *painted[1]) > 0.9
