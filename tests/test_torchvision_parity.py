"""from_torchvision: the same network as torchvision's FCN / DeepLabV3, output for output, and parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import segmentation as tv

from pixelwise import create_model, from_torchvision, load_model, save_model

TORCHVISION_BUILDERS = {
    "fcn_resnet50": tv.fcn_resnet50,
    "fcn_resnet101": tv.fcn_resnet101,
    "deeplabv3_resnet50": tv.deeplabv3_resnet50,
    "deeplabv3_resnet101": tv.deeplabv3_resnet101,
    "deeplabv3_mobilenet_v3_large": tv.deeplabv3_mobilenet_v3_large,
    "lraspp_mobilenet_v3_large": tv.lraspp_mobilenet_v3_large,
}


def randomized(model: nn.Module) -> nn.Module:
    """Random BatchNorm statistics and affine parameters, so that a wrongly wired norm layer shows."""
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.running_mean, -0.2, 0.2)
            nn.init.uniform_(module.running_var, 0.5, 1.5)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("name", list(TORCHVISION_BUILDERS))
def test_outputs_equal_torchvisions(name: str) -> None:
    aux = {} if name.startswith("lraspp") else {"aux_loss": True}  # LRASPP has no auxiliary head
    reference = randomized(TORCHVISION_BUILDERS[name](weights=None, weights_backbone=None, **aux))
    model = from_torchvision(reference)
    assert not model.training
    assert model.pixelwise_config["name"] == name.split("_")[0]
    sizes = [(1, 1), (2, 3), (31, 47)] if "101" in name else [(1, 1), (2, 3), (31, 47), (65, 34)]
    with torch.no_grad():
        for height, width in sizes:
            x = torch.randn(2, 3, height, width)
            assert (model(x) - reference(x)["out"]).abs().max().item() <= 1e-4, (height, width)


def test_converted_model_saves_and_loads(tmp_path) -> None:
    reference = randomized(tv.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4))
    model = from_torchvision(reference)
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    x = torch.randn(1, 3, 30, 41)
    with torch.no_grad():
        assert torch.allclose(loaded(x), reference(x)["out"], atol=1e-4)


def test_other_models_are_refused() -> None:
    with pytest.raises(ValueError, match="takes a torchvision FCN, DeepLabV3 or LRASPP, got Sequential"):
        from_torchvision(nn.Sequential(nn.Conv2d(3, 2, 1)))


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_torchvision() -> None:
    """Counted without the auxiliary head (torchvision's published num_params include it)."""
    deeplab = tv.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    aux = count(deeplab.aux_classifier)
    assert count(deeplab) == tv.DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.meta["num_params"] == 42_004_074
    ours = create_model("deeplabv3", 21, backbone="resnet50", head="torchvision", output_stride=8)
    assert count(ours) == count(deeplab) - aux == 39_638_869
    # The paper's head has no extra 3x3 conv (256 -> 256) + BN between the ASPP and the classifier.
    paper = create_model("deeplabv3", 21, backbone="resnet50")
    assert count(paper) == count(ours) - (256 * 256 * 9 + 2 * 256)
    fcn = tv.fcn_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    assert count(fcn) == tv.FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.meta["num_params"]
    assert count(create_model("fcn", 21, backbone="resnet50")) == count(fcn) - count(fcn.aux_classifier) == 32_957_013
    lraspp = tv.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)
    assert count(lraspp) == tv.LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1.meta["num_params"]
    assert count(create_model("lraspp", 21)) == count(lraspp) == 3_221_538
