"""DeepLab v1/v2/v3/v3+ and FCN-ResNet: the model contract, gradients, ASPP and decoder structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pixelwise import create_model, load_model, save_model
from pixelwise.models import MODELS, model_options
from pixelwise.nn.aspp import ASPP, ASPPv2, ImagePooling
from pixelwise.nn.conv import SeparableConv2d

NEW_MODELS = ("deeplabv1", "deeplabv2", "deeplabv3", "deeplabv3plus", "fcn")

# (model, options, input sizes): heavy backbones at small sizes only, 513x513 for the light ones.
CONTRACT_CASES = [
    ("deeplabv1", {}, [(1, 1), (2, 3), (31, 47)]),
    ("deeplabv2", {}, [(1, 1), (31, 47)]),
    ("deeplabv3", {}, [(2, 3), (31, 47)]),
    ("deeplabv3", {"backbone": "mobilenet_v3_large"}, [(1, 1), (2, 3), (31, 47), (97, 101), (513, 513)]),
    ("deeplabv3plus", {}, [(1, 1), (31, 47)]),
    ("deeplabv3plus", {"backbone": "mobilenet_v2"}, [(1, 1), (2, 3), (31, 47), (97, 101), (513, 513)]),
    ("fcn", {}, [(2, 3), (31, 47)]),
]


@pytest.mark.parametrize(("name", "options", "sizes"), CONTRACT_CASES)
def test_logits_at_input_size_in_eval_and_train(name: str, options: dict, sizes: list) -> None:
    model = create_model(name, num_classes=5, **options).eval()
    with torch.no_grad():
        for height, width in sizes:
            assert model(torch.randn(1, 3, height, width)).shape == (1, 5, height, width)
    model.train()
    assert model(torch.randn(2, 3, 9, 14)).shape == (2, 5, 9, 14)


def test_registry_lists_every_new_model_with_its_backbones() -> None:
    for name in NEW_MODELS:
        entry = MODELS[name]
        default = model_options(name).get("backbone", "vgg16_largefov")  # DeepLab v1 has its own VGG16
        assert entry.backbones[0] == default
    assert MODELS["deeplabv3plus"].backbones == (
        "xception65", "resnet101", "resnet50", "mobilenet_v2", "mobilenet_v3_large"
    )


@pytest.mark.parametrize(
    ("name", "backbone"),
    [(name, backbone) for name in NEW_MODELS for backbone in MODELS[name].backbones[1:]],
)
def test_every_accepted_backbone_builds_and_runs(name: str, backbone: str) -> None:
    model = create_model(name, num_classes=3, backbone=backbone, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 7, 10)).shape == (1, 3, 7, 10)


@pytest.mark.parametrize("upsampling", ["transposed", "bilinear", "nearest"])
def test_learnable_upsampling_modes(upsampling: str) -> None:
    model = create_model("deeplabv3plus", 4, backbone="mobilenet_v2", upsampling=upsampling).eval()
    assert any(isinstance(m, (nn.ConvTranspose2d if upsampling == "transposed" else nn.Conv2d)) for m in
               model.upsample.modules())
    with torch.no_grad():
        assert model(torch.randn(1, 3, 31, 47)).shape == (1, 4, 31, 47)


def test_default_upsampling_has_no_parameters() -> None:
    model = create_model("deeplabv3", 4, backbone="mobilenet_v3_large")
    assert sum(p.numel() for p in model.upsample.parameters()) == 0
    with pytest.raises(ValueError, match="upsampling must be one of"):
        create_model("deeplabv3", 4, backbone="mobilenet_v3_large", upsampling="cubic")


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("deeplabv1", {}),
        ("deeplabv2", {"backbone": "resnet50"}),
        ("deeplabv3", {"backbone": "mobilenet_v2", "head": "torchvision", "multi_grid": False}),
        ("deeplabv3plus", {"backbone": "xception65", "separable_aspp": True}),
        ("fcn", {}),
    ],
)
def test_gradient_reaches_every_parameter(name: str, options: dict) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **options).train()
    model(torch.randn(2, 3, 33, 35)).square().mean().backward()
    dead = [key for key, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []


def test_image_pooling_with_one_image_in_train_mode_uses_running_statistics() -> None:
    pooling = ImagePooling(8, 4)
    nn.init.normal_(pooling[2].running_mean)
    nn.init.uniform_(pooling[2].running_var, 0.5, 2.0)
    before = pooling[2].running_mean.clone()
    x = torch.randn(1, 8, 5, 6)
    trained = pooling.train()(x)
    assert torch.equal(pooling[2].running_mean, before)  # one image: no batch statistics to learn from
    assert torch.allclose(trained, pooling.eval()(x))
    assert trained.shape == (1, 4, 5, 6) and torch.allclose(trained[..., :1, :1].expand_as(trained), trained)
    pooling.train()(torch.randn(2, 8, 5, 6))
    assert not torch.equal(pooling[2].running_mean, before)  # two images: trained as usual


def test_deeplabv3_trains_on_one_image() -> None:
    """One image per batch in train mode, where the image-pooling branch has no batch statistics: it
    normalises with its running statistics and leaves them alone, and optimizer steps on it lower its loss."""
    torch.manual_seed(0)
    model = create_model("deeplabv3", 3, backbone="mobilenet_v3_large").train()
    pooling_norm = model.classifier[0].branches[-1][2]
    pooling_norm.running_mean.uniform_(-1, 1)
    before = pooling_norm.running_mean.clone()
    image = torch.randn(1, 3, 40, 40)
    target = torch.zeros(1, 40, 40, dtype=torch.long)
    target[:, :, 20:] = 1  # a left half and a right half: learnable from one image
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(image), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert torch.equal(pooling_norm.running_mean, before)


def test_aspp_v2_sums_four_atrous_classifiers() -> None:
    aspp = ASPPv2(16, 3)
    assert [branch.dilation[0] for branch in aspp.branches] == [6, 12, 18, 24]
    x = torch.randn(1, 16, 9, 9)
    expected = sum(nn.functional.conv2d(x, b.weight, b.bias, padding=b.padding, dilation=b.dilation)
                   for b in aspp.branches)
    assert torch.allclose(aspp(x), expected, atol=1e-6)


def test_aspp_v3_branches_and_rates_double_at_output_stride_8() -> None:
    for output_stride, rates in ((16, [6, 12, 18]), (8, [12, 24, 36])):
        model = create_model("deeplabv3", backbone="mobilenet_v2", output_stride=output_stride)
        aspp = model.classifier[0]
        assert isinstance(aspp, ASPP)
        assert [branch[0].dilation[0] for branch in aspp.branches[1:4]] == rates
        assert aspp.branches[0][0].kernel_size == (1, 1) and isinstance(aspp.branches[4], ImagePooling)
        assert aspp.project[0].in_channels == 5 * 256 and aspp.project[0].out_channels == 256


def test_deeplabv3plus_decoder_structure() -> None:
    model = create_model("deeplabv3plus", backbone="resnet50", separable_aspp=True)
    assert model.backbone.strides[model.low_level_index] == 4
    assert model.reduce_low_level[0].in_channels == 256 and model.reduce_low_level[0].out_channels == 48
    assert [type(m) for m in model.decoder] == [SeparableConv2d, SeparableConv2d]
    assert model.decoder[0][0].in_channels == 256 + 48
    assert all(isinstance(b, SeparableConv2d) for b in model.aspp.branches[1:4])


@pytest.mark.parametrize("recipe", ["voc/deeplabv1_vgg16.yaml", "voc/deeplabv2_resnet101.yaml"])
def test_v1_and_v2_runs_refine_with_deeplabs_crf(recipe: str) -> None:
    """The papers post-process with a dense CRF: a run of their recipe carries DeepLab's published CRF on its
    card, and ``Segmenter(run, crf=True)`` applies exactly that after the network."""
    import types
    from pathlib import Path

    import numpy as np

    from pixelwise.crf import DEEPLAB_VOC, dense_crf
    from pixelwise.infer import Segmenter
    from pixelwise.train.config import load_config
    from pixelwise.train.trainer import run_card

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / recipe)
    options = {"backbone": "resnet50"} if config.model.name == "deeplabv2" else {}  # light, no ImageNet download
    torch.manual_seed(0)
    model = create_model(config.model.name, 21, **options).eval()
    voc = types.SimpleNamespace(class_names=[str(c) for c in range(21)], palette=[[c, c, c] for c in range(21)],
                                ignore_index=255)
    model.card = run_card(config, voc, model)
    assert model.card.crf == DEEPLAB_VOC
    pixels = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    probs = Segmenter(model).predict_proba(pixels)
    expected = dense_crf(torch.from_numpy(probs), pixels, **DEEPLAB_VOC.as_keywords()).numpy()
    np.testing.assert_allclose(Segmenter(model, crf=True).predict_proba(pixels), expected, atol=1e-5)


def test_save_and_load_round_trip(tmp_path) -> None:
    model = create_model("deeplabv3plus", 4, backbone="mobilenet_v3_large", atrous_rates=(3, 6, 9)).eval()
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    x = torch.randn(1, 3, 21, 30)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
