"""ImageNet and torchvision weights: from the cache, from a local file, or a clear error. Never a download."""

from __future__ import annotations

import importlib.util
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torchvision.models import mobilenet_v2, mobilenet_v3_large, resnet34, resnet50
from torchvision.models import segmentation as tv

from pixelwise import create_model, load_model, save_model
from pixelwise.backbones import build_backbone
from pixelwise.backbones.pretrained import IMAGENET_WEIGHTS, adapt_classification_state, adapt_first_conv, cache_path
from pixelwise.models.torchvision_compat import TORCHVISION_WEIGHTS


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache in tmp_path, and a network that is never reached."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def refuse(url: str, *args, **kwargs):
        raise urllib.error.URLError("network unreachable (test)")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    return tmp_path


def test_cache_is_read_without_download() -> None:
    reference = mobilenet_v3_large(weights=None).state_dict()
    path = cache_path(IMAGENET_WEIGHTS["mobilenet_v3_large"].url)
    assert "hub/checkpoints" in path.as_posix() and "torch" in path.parts
    path.parent.mkdir(parents=True)
    torch.save(reference, path)
    backbone = build_backbone("mobilenet_v3_large", pretrained=True)
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_local_safetensors_file(tmp_path: Path) -> None:
    reference = mobilenet_v2(weights=None).state_dict()
    save_file({k: v.contiguous() for k, v in reference.items()}, tmp_path / "mbv2.safetensors")
    path = str(tmp_path / "mbv2.safetensors")
    model = create_model("deeplabv3plus", 3, backbone="mobilenet_v2", pretrained_backbone=path)
    assert torch.equal(model.backbone.features[17].conv[0][0].weight, reference["features.17.conv.0.0.weight"])


def test_local_pth_file_into_a_grayscale_resnet(tmp_path: Path) -> None:
    reference = resnet50(weights=None).state_dict()
    torch.save(reference, tmp_path / "resnet50.pth")
    backbone = build_backbone("resnet50", in_channels=1, pretrained=tmp_path / "resnet50.pth")
    assert torch.equal(backbone.layer4[2].conv3.weight, reference["layer4.2.conv3.weight"])
    # Grayscale: the RGB filters summed, so a gray image gives the same conv1 response as its RGB copy.
    assert torch.allclose(backbone.conv1.weight, reference["conv1.weight"].sum(1, keepdim=True))


def test_vgg16_classifier_subsampled_to_large_fov() -> None:
    fc6 = torch.randn(8, 512 * 7 * 7)
    fc7 = torch.randn(8, 8)
    state = {"classifier.0.weight": fc6, "classifier.0.bias": torch.arange(8.0),
             "classifier.3.weight": fc7, "classifier.3.bias": torch.arange(8.0), "classifier.6.weight": fc7}
    expected = {"classifier.0.weight": torch.empty(2, 512, 3, 3), "classifier.0.bias": torch.empty(2),
                "classifier.3.weight": torch.empty(2, 2, 1, 1), "classifier.3.bias": torch.empty(2)}
    adapted = adapt_classification_state(state, expected)
    assert set(adapted) == set(expected)
    assert adapted["classifier.0.weight"].shape == (2, 512, 3, 3)
    assert torch.equal(adapted["classifier.0.weight"][1, 7, 2, 1], fc6.view(8, 512, 7, 7)[4, 7, 6, 3])
    assert torch.equal(adapted["classifier.0.bias"], torch.tensor([0.0, 4.0]))
    assert torch.equal(adapted["classifier.3.weight"][:, :, 0, 0], fc7[::4, ::4])


def test_missing_weights_say_where_to_put_the_file() -> None:
    expected_path = cache_path(IMAGENET_WEIGHTS["resnet50"].url)
    with pytest.raises(FileNotFoundError) as error:
        build_backbone("resnet50", pretrained=True)
    assert str(expected_path) in str(error.value) and "pretrained_backbone='path/to/file.pth'" in str(error.value)


def test_torchvision_model_weights_missing_offline() -> None:
    url = TORCHVISION_WEIGHTS["deeplabv3", "resnet50"].url
    with pytest.raises(FileNotFoundError, match=str(cache_path(url))):
        create_model("deeplabv3", backbone="resnet50", weights="torchvision")


def test_torchvision_model_weights_from_the_cache() -> None:
    reference = tv.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, aux_loss=True).eval()
    path = cache_path(TORCHVISION_WEIGHTS["deeplabv3", "mobilenet_v3_large"].url)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = create_model("deeplabv3", backbone="mobilenet_v3_large", weights="torchvision").eval()
    x = torch.randn(1, 3, 35, 26)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x)["out"], atol=1e-4)


def test_bad_files_and_options(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth: cannot be read"):
        build_backbone("mobilenet_v2", pretrained=garbage)
    with pytest.raises(FileNotFoundError, match="absent.pth: no such weights file"):
        build_backbone("mobilenet_v2", pretrained=tmp_path / "absent.pth")
    torch.save(mobilenet_v2(weights=None).state_dict(), tmp_path / "mbv2.pth")
    with pytest.raises(ValueError, match="mbv2.pth does not fit the mobilenet_v3_large backbone"):
        build_backbone("mobilenet_v3_large", pretrained=tmp_path / "mbv2.pth")
    with pytest.raises(ValueError, match="torchvision has no ImageNet weights for 'xception65'"):
        build_backbone("xception65", pretrained=True)
    with pytest.raises(ValueError, match="21 classes"):
        create_model("deeplabv3", 5, backbone="resnet50", weights="torchvision")
    with pytest.raises(ValueError, match="not 'xception65'"):
        create_model("deeplabv3", backbone="xception65", weights="torchvision")


def test_torchvision_weights_refuse_options_that_contradict_their_architecture():
    """weights="torchvision" fixes head, output stride and rates; an explicit other value is an error, not
    silently overridden (checked before anything is downloaded)."""
    with pytest.raises(ValueError, match=r"fixes output_stride to 8 .*drop output_stride=16"):
        create_model("deeplabv3", backbone="resnet50", weights="torchvision", output_stride=16)
    with pytest.raises(ValueError, match=r"fixes atrous_rates to \(12, 24, 36\)"):
        create_model("deeplabv3", backbone="resnet50", weights="torchvision", atrous_rates=[6, 12, 18])
    with pytest.raises(ValueError, match="fixes head to 'torchvision'"):
        create_model("deeplabv3", backbone="mobilenet_v3_large", weights="torchvision", head="paper")
    with pytest.raises(ValueError, match="fixes output_stride to 8"):
        create_model("fcn", backbone="resnet50", weights="torchvision", output_stride=16)


def test_saved_models_reload_without_their_weight_source(tmp_path: Path) -> None:
    """The config records the architecture, not where the first weights came from: no download on load."""
    reference = tv.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    path = cache_path(TORCHVISION_WEIGHTS["deeplabv3", "mobilenet_v3_large"].url)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = create_model("deeplabv3", backbone="mobilenet_v3_large", weights="torchvision").eval()
    save_model(model, tmp_path / "saved")
    path.unlink()  # the cache is gone: loading must not need it
    loaded = load_model(tmp_path / "saved")
    options = loaded.pixelwise_config["options"]
    assert "weights" not in options and options["head"] == "torchvision" and options["output_stride"] == 16
    x = torch.randn(1, 3, 33, 41)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_backbone_must_be_one_the_model_accepts() -> None:
    with pytest.raises(ValueError, match=r"model 'deeplabv3' takes backbone one of \['resnet101'"):
        create_model("deeplabv3", backbone="vgg16")


@pytest.mark.parametrize("name", ["fcn8s", "hypercolumn"])
def test_fcn_and_hypercolumn_start_from_convolutionalized_imagenet_vgg16(tmp_path: Path, name: str) -> None:
    """The FCN paper's initialisation: VGG16's convolutions, and fc6/fc7 reshaped into convolutions."""
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).eval()
    torch.save(vgg.state_dict(), tmp_path / "vgg16.pth")
    model = create_model(name, 21, pretrained_backbone=str(tmp_path / "vgg16.pth")).eval()
    fc = model.classifier if name == "fcn8s" else model.fc
    assert torch.equal(model.backbone.features[28].weight, vgg.features[28].weight)
    assert torch.equal(fc[0].weight, vgg.classifier[0].weight.view(4096, 512, 7, 7))
    assert torch.equal(fc[3].weight[:, :, 0, 0], vgg.classifier[3].weight)
    # The convolutionalized layers compute the classifier: on pool5 of a 224 image, fc7 equals VGG's.
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        pool5 = vgg.features(x)
        ours = fc[:5](pool5) if name == "fcn8s" else fc[:5](pool5)[..., 3:4, 3:4]
        theirs = vgg.classifier[:5](pool5.flatten(1))
    torch.testing.assert_close(ours.flatten(1), theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("in_channels", [1, 2, 3, 4, 6, 7])
def test_first_conv_adapts_as_timm_and_smp(in_channels: int) -> None:
    """1 channel: the RGB sum; otherwise the RGB filters cycled and scaled by 3 / in_channels. A gray image
    repeated over the channels gives the RGB response exactly when in_channels is 1 or a multiple of 3."""
    torch.manual_seed(0)
    rgb = torch.randn(8, 3, 3, 3)
    adapted = adapt_first_conv(rgb, in_channels)
    assert adapted.shape == (8, in_channels, 3, 3)
    cycled = torch.cat([rgb] * 3, 1)[:, :in_channels]
    expected = rgb.sum(1, keepdim=True) if in_channels == 1 else cycled * 3 / in_channels
    assert torch.allclose(adapted, expected)
    if importlib.util.find_spec("timm") is not None:  # the reference rule: timm's own adapt_input_conv
        from timm.models import adapt_input_conv

        assert torch.allclose(adapted, adapt_input_conv(in_channels, rgb.clone()))
    if in_channels == 1 or in_channels % 3 == 0:
        gray = torch.rand(1, 1, 9, 7)
        torch.testing.assert_close(torch.nn.functional.conv2d(gray.expand(-1, in_channels, -1, -1), adapted),
                                   torch.nn.functional.conv2d(gray.expand(-1, 3, -1, -1), rgb))


def test_first_conv_adaptation_refuses_what_it_cannot_adapt() -> None:
    with pytest.raises(ValueError, match="only adapt a first convolution with 3 input channels, got 4"):
        adapt_first_conv(torch.randn(8, 4, 3, 3), 1)
    with pytest.raises(ValueError, match="in_channels must be >= 1, got 0"):
        adapt_first_conv(torch.randn(8, 3, 3, 3), 0)


def test_local_pth_file_into_a_two_channel_resnet34(tmp_path: Path) -> None:
    """Two channels (say SAR HH and HV): R and G scaled by 3/2, through torchvision's weights path."""
    reference = resnet34(weights=None).state_dict()
    torch.save(reference, tmp_path / "resnet34.pth")
    backbone = build_backbone("resnet34", in_channels=2, pretrained=tmp_path / "resnet34.pth")
    assert torch.allclose(backbone.conv1.weight, reference["conv1.weight"][:, :2] * 1.5)
