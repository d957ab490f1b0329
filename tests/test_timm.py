"""timm backbones: ``backbone="timm:<name>"`` on every decoder that takes a backbone, checked against timm itself.

Random weights only (``pretrained=False``), small variants, tiny inputs. Skipped with a message where timm (the
``pixelwise[timm]`` extra) is absent, except the test that simulates its absence.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import pixelwise
from pixelwise.backbones import build_backbone

needs_timm = pytest.mark.skipif(
    importlib.util.find_spec("timm") is None, reason='timm is not installed: pip install "pixelwise[timm]"'
)
# One of each family the issue names: a ResNet, a ConvNeXt, an EfficientNet and a MobileNetV3.
FAMILIES = ("resnet18", "convnext_atto", "efficientnet_b0", "mobilenetv3_small_100")
SIZES = [(1, 1), (2, 3), (31, 47)]


@pytest.fixture(autouse=True)
def one_thread_and_offline(one_thread, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny inputs on one thread, and a network that is never reached (the tests must not download)."""
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network unreachable (test)")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    if importlib.util.find_spec("huggingface_hub") is not None:
        import huggingface_hub

        monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)


def reference(name: str, **options) -> torch.nn.Module:
    import timm

    return timm.create_model(name, features_only=True, **options).eval()


@needs_timm
@pytest.mark.parametrize("output_stride", [8, 32])
@pytest.mark.parametrize("name", FAMILIES)
def test_maps_are_timms_with_ceil_sizes_at_their_strides(name: str, output_stride: int) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(f"timm:{name}", output_stride=output_stride).eval()
    theirs = reference(name, output_stride=output_stride)
    assert backbone.strides == tuple(theirs.feature_info.reduction())
    assert backbone.channels == tuple(theirs.feature_info.channels())
    assert max(backbone.strides) == backbone.output_stride == output_stride
    theirs.load_state_dict(backbone.net.state_dict())
    with torch.no_grad():
        # A size that is a multiple of the output stride needs no padding: timm's own maps, exactly.
        x = torch.randn(1, 3, 64, 96)
        for ours, expected in zip(backbone(x), theirs(x), strict=True):
            assert torch.equal(ours, expected)
        for height, width in SIZES:
            maps = backbone(torch.randn(1, 3, height, width))
            described = zip(backbone.channels, backbone.strides, strict=True)
            assert [tuple(m.shape[1:]) for m in maps] == [
                (c, math.ceil(height / s), math.ceil(width / s)) for c, s in described
            ]


@needs_timm
@pytest.mark.parametrize(("model", "name"), [
    ("deeplabv3", "resnet18"), ("deeplabv3plus", "convnext_atto"), ("fcn", "efficientnet_b0"),
    ("unet", "mobilenetv3_small_100"), ("unet", "convnext_atto"), ("deeplabv2", "mobilenetv3_small_100"),
])
def test_every_decoder_keeps_the_model_contract_on_timm(model: str, name: str) -> None:
    """Any H, W >= 1 in eval mode, and in train mode a gradient that reaches every parameter."""
    torch.manual_seed(0)
    net = pixelwise.create_model(model, 3, backbone=f"timm:{name}")
    assert net.card.options["backbone"] == f"timm:{name}"
    net.eval()
    with torch.no_grad():
        for size in SIZES:
            logits = net(torch.randn(1, 3, *size))
            assert logits.shape == (1, 3, *size) and torch.isfinite(logits).all()
    # timm starts the last BatchNorm of each residual block at scale 0 (zero_init_last), which by design cuts
    # the gradient to the block's other layers at step 0; nonzero scales show every parameter is connected.
    for norm in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
    net.train()
    logits = net(torch.randn(2, 3, 31, 47))
    (logits * torch.randn_like(logits)).sum().backward()
    starved = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not starved, f"{model} on {name}: no gradient reaches {starved[:5]}"


@needs_timm
def test_output_stride_goes_through_timm_or_is_a_clear_error() -> None:
    # ConvNeXt dilates through timm's own output_stride; GhostNet has none, so only its own stride 32 is allowed.
    assert build_backbone("timm:convnext_atto", output_stride=16).strides == (4, 8, 16, 16)
    assert build_backbone("timm:ghostnet_100", output_stride=32).strides == (2, 4, 8, 16, 32)
    with pytest.raises(ValueError, match="timm model 'ghostnet_100' cannot be built at output_stride 8; "
                                         "it allows 32$"):
        build_backbone("timm:ghostnet_100", output_stride=8)
    # Models of one fixed input size (ViT, Swin) would break the any-size contract: refused when built.
    with pytest.raises(ValueError, match=r"'vit_tiny_patch16_224' takes only its fixed input size \(3, 224, 224\)"):
        build_backbone("timm:vit_tiny_patch16_224", output_stride=16)


@needs_timm
def test_bad_timm_names_and_options_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown timm model 'resnet_nope' \(timm.list_models\(\)"):
        build_backbone("timm:resnet_nope")
    with pytest.raises(ValueError, match="backbone 'timm:resnet18' takes no option multi_grid"):
        pixelwise.create_model("deeplabv3", 3, backbone="timm:resnet18", multi_grid=True)
    # FCN-VGG and Hypercolumns are the papers' own VGG16: no backbone option, so no timm encoder.
    for name in ("fcn8s", "hypercolumn"):
        with pytest.raises(ValueError, match=rf"unknown option\(s\) \['backbone'\] for model '{name}'"):
            pixelwise.create_model(name, 3, backbone="timm:resnet18")


def test_without_timm_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # what an environment without the extra gives: ImportError
    with pytest.raises(ImportError, match=r'timm backbones need the timm package: pip install "pixelwise\[timm\]"'):
        pixelwise.create_model("deeplabv3", 3, backbone="timm:resnet18")


def hf_cache_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo: str, state: dict | None) -> Path:
    """A Hugging Face cache in tmp_path, holding ``state`` as ``repo``'s model.safetensors (its real layout)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    if state is not None:
        folder = cache / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text("0123abcd")
        snapshot = folder / "snapshots" / "0123abcd"
        snapshot.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")
    return cache


@needs_timm
def test_pretrained_weights_come_from_the_cache_and_adapt_to_one_channel(tmp_path, monkeypatch) -> None:
    """timm's ImageNet checkpoint (here random, in its cache layout) loads without a download, and a
    1-channel model on a gray image gives the 3-channel model's output on that image repeated 3 times."""
    import timm

    torch.manual_seed(0)
    classifier = timm.create_model("resnet18")
    hf_cache_with(tmp_path, monkeypatch, "timm/resnet18.a1_in1k", classifier.state_dict())
    rgb = pixelwise.create_model("unet", 2, backbone="timm:resnet18", pretrained_backbone=True).eval()
    gray = pixelwise.create_model("unet", 2, backbone="timm:resnet18", in_channels=1, pretrained_backbone=True).eval()
    assert torch.equal(rgb.backbone.net.layer4[1].conv2.weight, classifier.layer4[1].conv2.weight)
    assert torch.allclose(gray.backbone.net.conv1.weight, classifier.conv1.weight.sum(1, keepdim=True))
    # The decoders start at random: give the gray model the RGB model's, then the two must agree.
    gray.load_state_dict({k: v for k, v in rgb.state_dict().items() if not k.startswith("backbone.")}, strict=False)
    image = torch.rand(1, 1, 45, 38)
    with torch.no_grad():
        torch.testing.assert_close(gray(image), rgb(image.expand(-1, 3, -1, -1)), atol=2e-5, rtol=1e-5)


@needs_timm
def test_pretrained_weights_missing_from_the_cache_are_a_clear_error(tmp_path, monkeypatch) -> None:
    cache = hf_cache_with(tmp_path, monkeypatch, "timm/resnet18.a1_in1k", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    with pytest.raises(FileNotFoundError) as error:
        build_backbone("timm:resnet18", pretrained=True)
    message = str(error.value)
    assert "timm's weights for 'resnet18' are not in the local cache" in message
    assert str(cache / "models--timm--resnet18.a1_in1k") in message and "never downloads" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet18_a1_0-d63eafa0.pth") in message


@needs_timm
def test_pretrained_weights_from_a_local_file(tmp_path) -> None:
    import timm

    classifier = timm.create_model("mobilenetv3_small_100")
    save_file(classifier.state_dict(), tmp_path / "mnv3.safetensors")
    backbone = build_backbone("timm:mobilenetv3_small_100", in_channels=4, pretrained=tmp_path / "mnv3.safetensors")
    assert torch.equal(backbone.net.blocks[3][0].conv_pw.weight, classifier.blocks[3][0].conv_pw.weight)
    # Four channels: R, G, B, R, scaled by 3/4 (the rule of timm's adapt_input_conv and smp).
    rgb = classifier.conv_stem.weight
    assert torch.allclose(backbone.net.conv_stem.weight, torch.cat([rgb, rgb[:, :1]], 1) * 0.75)
    save_file({"conv_stem.weight": torch.zeros(3)}, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="timm cannot build 'mobilenetv3_small_100' as a backbone"):
        build_backbone("timm:mobilenetv3_small_100", pretrained=tmp_path / "bad.safetensors")


@needs_timm
def test_padded_timm_encoder_exports_to_onnx_that_runs_at_other_sizes() -> None:
    """The padding to the output stride and the crops back to ceil(H / s) trace as shapes (checked by
    ``export_onnx`` at a second size, 77 x 93, that needs padding)."""
    from pixelwise.infer import export_onnx

    torch.manual_seed(0)
    assert export_onnx(pixelwise.create_model("unet", 2, backbone="timm:convnext_atto",
                                              decoder_channels=(16, 16, 8, 8, 8)))
