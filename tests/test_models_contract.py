"""The model contract: logits (N, num_classes, H, W) at the input's size for any H, W >= 1."""

import functools

import pytest
import torch

import pixelwise
from pixelwise.models import MODELS, model_options

SIZES = [(1, 1), (2, 3), (31, 47), (97, 101)]


def build(name: str, num_classes: int = 3, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    if "in_channels" in model_options(name):
        options.setdefault("in_channels", 3)
    return pixelwise.create_model(name, num_classes, **options)


@functools.cache
def default_model(name: str) -> torch.nn.Module:
    """One instance per model for the read-only eval tests (building a VGG16 model takes seconds)."""
    return build(name).eval()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_eval_shapes_for_odd_prime_and_tiny_sizes(name):
    model = default_model(name)
    with torch.inference_mode():
        for size in SIZES:
            logits = model(torch.randn(1, 3, *size))
            assert logits.shape == (1, 3, *size), (name, size)
            assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_eval_shape_at_513(name):
    model = default_model(name)
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 513, 513)).shape == (1, 3, 513, 513)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_train_mode_shapes_and_gradient_reaches_every_parameter(name):
    model = build(name).train()
    x = torch.randn(2, 3, 31, 47)
    logits = model(x)
    assert logits.shape == (2, 3, 31, 47)
    # A random weighting so that no parameter's gradient cancels by symmetry.
    (logits * torch.randn_like(logits)).sum().backward()
    starved = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not starved, f"{name}: no gradient reaches {starved}"


def test_grayscale_input():
    model = build("unet", 2, in_channels=1, base_channels=8, depth=3).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 1, 45, 39)).shape == (1, 2, 45, 39)


@pytest.mark.parametrize("upsampling", ["bilinear", "nearest"])
def test_fcn8s_interpolating_upsamplers_keep_the_contract(upsampling):
    model = build("fcn8s", upsampling=upsampling).eval()
    with torch.inference_mode():
        for size in [(1, 1), (33, 35)]:
            assert model(torch.randn(1, 3, *size)).shape == (1, 3, *size)


@pytest.mark.parametrize("upsampling", ["transposed", "bilinear", "nearest"])
def test_unet_every_upsampling_mode_keeps_the_contract(upsampling):
    model = build("unet", base_channels=8, upsampling=upsampling, batch_norm=True).eval()
    with torch.inference_mode():
        for size in SIZES:
            assert model(torch.randn(1, 3, *size)).shape == (1, 3, *size)


def test_unknown_model_and_option_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model 'fcn9s'.*fcn8s"):
        pixelwise.create_model("fcn9s")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['colour'\] for model 'unet'"):
        pixelwise.create_model("unet", colour=3)
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32"):
        pixelwise.models.fcn.FCN(output_stride=4)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_states_its_output_margin_and_card(name):
    """Callers ask the model, never its class: same-size models have no margin and take any size."""
    model = default_model(name)
    assert (model.output_margin, model.size_multiple, model.input_size_for(77)) == (0, 1, 77)
    assert model.card.name == name and model.card.num_classes == 3
    # The card spells out every option, so a saved model rebuilds the same network whatever defaults do later.
    assert set(model.card.options) == set(model_options(name)) - {"pretrained_backbone", "weights"}


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_valid_unet_margin_matches_its_output(depth):
    model = build("unet", 2, base_channels=2, depth=depth, padding="valid").eval()
    assert model.output_margin == {1: 8, 2: 20, 3: 44, 4: 92}[depth]  # 572 -> 388 at depth 4: (572 - 388) / 2
    assert model.size_multiple == 2**depth
    with torch.inference_mode():
        for output in (model.size_multiple, 3 * model.size_multiple):
            side = model.input_size_for(output)
            produced = model(torch.randn(1, 3, side, side)).shape[-1]
            assert produced >= output and produced == side - 2 * model.output_margin


def test_no_module_outside_models_imports_a_model_class():
    """Inference, training and serving read the model contract; only models/ knows the classes."""
    import ast
    from pathlib import Path

    package = Path(pixelwise.__file__).parent
    classes = {"UNet", "FCN", "BackboneFCN", "Hypercolumn", "DeepLabV1", "DeepLabV2", "DeepLabV3", "DeepLabV3Plus"}
    offenders = []
    for path in package.rglob("*.py"):
        if path.parent.name == "models":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pixelwise.models"):
                offenders += [f"{path.relative_to(package)}: {a.name}" for a in node.names if a.name in classes]
    assert not offenders


@pytest.mark.parametrize("in_channels", [0, -1])
def test_in_channels_must_be_a_positive_whole_number(in_channels):
    for name, options in (("unet", {}), ("unet", {"backbone": "resnet34"}),
                          ("deeplabv3", {"backbone": "mobilenet_v2"})):
        with pytest.raises(ValueError, match=f"in_channels must be a whole number >= 1, got {in_channels!r}"):
            pixelwise.create_model(name, 2, in_channels=in_channels, **options)
    with pytest.raises(ValueError, match=r"in_channels = 2.5 is not a valid int"):
        pixelwise.create_model("unet", 2, in_channels=2.5)
