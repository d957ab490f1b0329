"""U-Net on a pretrained encoder: smp's ``Unet("resnet34")`` exactly, under pixelwise's model contract."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet34

import pixelwise
from pixelwise.backbones.pretrained import IMAGENET_WEIGHTS, adapt_first_conv, cache_path
from pixelwise.models.unet import UNet

SIZES = [(1, 1), (2, 3), (31, 47), (97, 101)]
# smp 0.6.0: sum(p.numel() for p in smp.Unet("resnet34", encoder_weights=None, classes=1).parameters())
SMP_UNET_RESNET34_PARAMETERS = 24_436_369


@pytest.fixture(autouse=True)
def threads(one_thread) -> None:
    """Tiny inputs run fastest on one thread (conftest)."""


def unet(num_classes: int = 1, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return pixelwise.create_model("unet", num_classes, backbone="resnet34", **options)


def test_parameters_are_smps_unet_resnet34() -> None:
    model = unet()
    assert sum(p.numel() for p in model.parameters()) == SMP_UNET_RESNET34_PARAMETERS
    assert model.card.options["backbone"] == "resnet34"


def test_same_network_as_smp_given_the_same_weights() -> None:
    """Parameter for parameter smp's network (in the same order), and with its weights the same logits."""
    smp = pytest.importorskip("segmentation_models_pytorch", reason="segmentation_models_pytorch (and the timm it "
                              "needs) is not installed: pip install segmentation-models-pytorch")

    theirs = smp.Unet("resnet34", encoder_weights=None, classes=5).eval()
    ours = unet(5).eval()
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())
    mine, reference = ours.state_dict(), theirs.state_dict()
    assert [v.shape for v in mine.values()] == [v.shape for v in reference.values()]
    ours.load_state_dict(dict(zip(mine, reference.values(), strict=True)))
    x = torch.randn(1, 3, 64, 96)  # smp needs sizes divisible by 32
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("upsampling", ["interpolate", "transposed", "bilinear"])
def test_model_contract_for_any_size_and_gradient_to_every_parameter(upsampling: str) -> None:
    model = unet(3, upsampling=upsampling).eval()
    with torch.no_grad():
        for size in SIZES:
            logits = model(torch.randn(1, 3, *size))
            assert logits.shape == (1, 3, *size) and torch.isfinite(logits).all()
    model.train()
    logits = model(torch.randn(2, 3, 31, 47))
    (logits * torch.randn_like(logits)).sum().backward()
    starved = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not starved, f"no gradient reaches {starved[:5]}"


def test_odd_sizes_are_handled_level_by_level() -> None:
    """The table of encoder_unet.py: each decoder level has the size of the encoder map it joins."""
    model = unet().eval()
    sizes = []
    for block in model.decoder:
        block.register_forward_hook(lambda module, inputs, output: sizes.append(tuple(output.shape[-2:])))
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 97, 101))
        model(torch.randn(1, 3, 97, 101))
    assert [tuple(f.shape[-2:]) for f in features] == [(49, 51), (25, 26), (13, 13), (7, 7), (4, 4)]
    assert sizes == [(7, 7), (13, 13), (25, 26), (49, 51), (97, 101)]


def test_without_a_backbone_it_is_the_papers_unet() -> None:
    model = pixelwise.create_model("unet", 2, base_channels=8, depth=3)
    assert type(model) is UNet
    assert model.card.options["backbone"] is None
    torch.manual_seed(0)
    paper = UNet(2, base_channels=8, depth=3)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in paper.state_dict().items()}


def test_options_of_the_other_unet_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="base_channels, dropout belong to the paper's U-Net"):
        unet(base_channels=32, dropout=0.5)
    with pytest.raises(ValueError, match="decoder_channels and pretrained_backbone need a backbone"):
        pixelwise.create_model("unet", 2, decoder_channels=(64, 32, 16, 8, 4))
    with pytest.raises(ValueError, match=r"decoder_channels needs 5 widths for backbone 'resnet34' \(stride 32\)"):
        unet(decoder_channels=(64, 32, 16))
    with pytest.raises(ValueError, match="upsampling must be one of"):
        unet(upsampling="cubic")
    with pytest.raises(ValueError, match=r"model 'unet' takes backbone one of \[None, 'resnet34'.*or timm:<name>"):
        pixelwise.create_model("unet", 2, backbone="vgg16")


def test_saved_and_loaded_gives_the_same_logits(tmp_path: Path) -> None:
    model = unet(3, decoder_channels=(32, 16, 16, 8, 8)).eval()
    pixelwise.save_model(model, tmp_path / "run")
    loaded = pixelwise.load_model(tmp_path / "run")
    x = torch.randn(1, 3, 37, 29)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_pretrained_grayscale_unet_answers_as_the_rgb_one_on_the_repeated_image(tmp_path, monkeypatch) -> None:
    """torchvision's ImageNet ResNet-34 (random here, in its cache) with in_channels=1: conv1 is the sum of the
    RGB filters, so a gray image gives the 3-channel model's logits on the image repeated 3 times."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network unreachable (test)")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    torch.manual_seed(0)
    imagenet = resnet34().state_dict()
    path = cache_path(IMAGENET_WEIGHTS["resnet34"].url)
    path.parent.mkdir(parents=True)
    torch.save(imagenet, path)
    rgb = unet(2, pretrained_backbone=True).eval()
    gray = unet(2, in_channels=1, pretrained_backbone=True).eval()
    assert torch.equal(rgb.backbone.layer3[5].conv2.weight, imagenet["layer3.5.conv2.weight"])
    gray.load_state_dict({k: v for k, v in rgb.state_dict().items() if not k.startswith("backbone.")}, strict=False)
    image = torch.rand(1, 1, 45, 38)
    with torch.no_grad():
        torch.testing.assert_close(gray(image), rgb(image.expand(-1, 3, -1, -1)), atol=2e-5, rtol=1e-5)
    assert torch.equal(gray.backbone.conv1.weight, adapt_first_conv(imagenet["conv1.weight"], 1))


def test_exports_to_onnx_that_runs_at_other_sizes() -> None:
    """Traced at 64 x 64, the ONNX program must give the model's logits at 77 x 93 (``export_onnx`` checks):
    the level sizes are computed from the input's, so they must trace as shapes, not constants."""
    from pixelwise.infer import export_onnx

    assert export_onnx(unet(3, decoder_channels=(16, 16, 8, 8, 8)))
