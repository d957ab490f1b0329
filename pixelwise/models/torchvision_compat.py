"""torchvision's segmentation models as pixelwise models, with the same weights and outputs.

``from_torchvision(tv_model)`` rebuilds torchvision's ``fcn_resnet50/101``, ``deeplabv3_resnet50/101``,
``deeplabv3_mobilenet_v3_large`` and ``lraspp_mobilenet_v3_large`` with ``create_model`` (so ``save_model``
works) and copies their weights. ``create_model(..., weights="torchvision")`` does the same from
torchvision's published checkpoints (COCO images, the 21 VOC classes).

What makes the two the same network: our ResNet and MobileNet backbones keep torchvision's layer
names and dilation pattern; our ``lraspp`` head keeps torchvision's names; our ``fcn`` head is
torchvision's FCNHead; ``deeplabv3`` with ``head="torchvision"`` adds torchvision's extra 3x3 conv + BN +
ReLU after the ASPP, whose rates are 12/24/36 in torchvision at both output stride 8 (ResNet) and 16
(MobileNetV3). The auxiliary classifier is dropped: it only adds a training loss.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models import segmentation as tv

from pixelwise.backbones.pretrained import download_state_dict

# (model, backbone) -> (torchvision's published weights, the options that give torchvision's architecture)
TORCHVISION_WEIGHTS = {
    ("fcn", "resnet50"): tv.FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
    ("fcn", "resnet101"): tv.FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1,
    ("deeplabv3", "resnet50"): tv.DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
    ("deeplabv3", "resnet101"): tv.DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1,
    ("deeplabv3", "mobilenet_v3_large"): tv.DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1,
    ("lraspp", "mobilenet_v3_large"): tv.LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1,
}
TORCHVISION_ARCHITECTURE: dict[tuple[str, str], dict[str, Any]] = {
    ("fcn", "resnet50"): {"output_stride": 8},
    ("fcn", "resnet101"): {"output_stride": 8},
    ("deeplabv3", "resnet50"): {"output_stride": 8, "atrous_rates": (12, 24, 36), "head": "torchvision"},
    ("deeplabv3", "resnet101"): {"output_stride": 8, "atrous_rates": (12, 24, 36), "head": "torchvision"},
    ("deeplabv3", "mobilenet_v3_large"): {"output_stride": 16, "atrous_rates": (12, 24, 36), "head": "torchvision"},
    ("lraspp", "mobilenet_v3_large"): {"output_stride": 16},
}


def torchvision_options(name: str, backbone: str, weights: str, num_classes: int) -> dict[str, Any]:
    """The options that give torchvision's architecture for ``weights="torchvision"``; checks they exist."""
    if weights != "torchvision":
        raise ValueError(f"weights must be None or 'torchvision', got {weights!r}")
    if (name, backbone) not in TORCHVISION_WEIGHTS:
        available = [b for n, b in TORCHVISION_WEIGHTS if n == name]
        raise ValueError(f"torchvision publishes {name} weights for backbones {available}, not {backbone!r}")
    if num_classes != 21:
        raise ValueError(f"torchvision's {name} weights have 21 classes (VOC), not num_classes={num_classes}")
    return TORCHVISION_ARCHITECTURE[name, backbone]


def torchvision_state_dict(state: dict, name: str, backbone: str) -> dict:
    """torchvision's parameter names -> ours: drop ``aux_classifier``, MobileNet ``backbone.N`` ->
    ``backbone.features.N``, ASPP ``convs`` -> ``branches``."""
    converted = {}
    for key, value in state.items():
        if key.startswith("aux_classifier."):
            continue
        if backbone.startswith("mobilenet") and key.startswith("backbone."):
            key = "backbone.features." + key.removeprefix("backbone.")
        if name == "deeplabv3":
            key = key.replace("classifier.0.convs.", "classifier.0.branches.")
        converted[key] = value
    return converted


def load_torchvision_weights(model: nn.Module, name: str, backbone: str) -> None:
    """Load torchvision's published ``name`` checkpoint on ``backbone`` into ``model`` (cached or downloaded)."""
    weights = TORCHVISION_WEIGHTS[name, backbone]
    hint = "load torchvision's model from a local copy of its weights and convert it with pixelwise.from_torchvision"
    model.load_state_dict(torchvision_state_dict(download_state_dict(weights, hint), name, backbone))


def from_torchvision(tv_model: nn.Module) -> nn.Module:
    """The pixelwise model equal to a torchvision FCN, DeepLabV3 (ResNet-50/101, MobileNetV3-Large) or LRASPP.

    The result is built by ``create_model`` (``save_model`` works), holds copies of ``tv_model``'s
    weights and is in the same train/eval mode; its output equals torchvision's ``out``.
    """
    from pixelwise.models import create_model  # here, since the registry imports this module

    if isinstance(tv_model, tv.DeepLabV3):
        name = "deeplabv3"
    elif isinstance(tv_model, tv.FCN):
        name = "fcn"
    elif isinstance(tv_model, tv.LRASPP):
        name = "lraspp"
    else:
        raise ValueError("from_torchvision takes a torchvision FCN, DeepLabV3 or LRASPP, "
                         f"got {type(tv_model).__name__}")
    body = tv_model.backbone
    if hasattr(body, "layer4"):
        depth = {6: "resnet50", 23: "resnet101"}.get(len(body.layer3))
        if depth is None:
            raise ValueError(f"unsupported ResNet with {len(body.layer3)} blocks in layer3 (expected ResNet-50/101)")
        backbone, first_conv = depth, body.conv1
    elif len(body) == 17 and body["16"].out_channels == 960:
        backbone, first_conv = "mobilenet_v3_large", body["0"][0]
    else:
        raise ValueError("unsupported torchvision backbone (expected ResNet-50/101 or MobileNetV3-Large)")
    stride = 1
    for module in body.modules():
        # The shortcut convolutions of ResNet repeat their block's stride; count each stride once.
        if isinstance(module, nn.Conv2d | nn.MaxPool2d) and not _is_shortcut(body, module):
            stride *= _pair(module.stride)[0]
    options: dict[str, Any] = {"backbone": backbone, "in_channels": first_conv.in_channels, "output_stride": stride}
    if name == "deeplabv3":
        aspp = tv_model.classifier[0]
        options["head"] = "torchvision"
        options["atrous_rates"] = tuple(branch[0].dilation[0] for branch in list(aspp.convs)[1:-1])
    if name == "lraspp":
        num_classes = tv_model.classifier.low_classifier.out_channels
        options["inter_channels"] = tv_model.classifier.cbr[0].out_channels
    else:
        num_classes = tv_model.classifier[-1].out_channels
    model = create_model(name, num_classes, **options)
    model.load_state_dict(torchvision_state_dict(tv_model.state_dict(), name, backbone))
    _check_same_geometry(model, tv_model, name, backbone)
    return model.train(tv_model.training)


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return value if isinstance(value, tuple) else (value, value)


def _is_shortcut(body: nn.Module, module: nn.Module) -> bool:
    return any(module is block.downsample[0] for block in body.modules() if getattr(block, "downsample", None))


def _check_same_geometry(model: nn.Module, tv_model: nn.Module, name: str, backbone: str) -> None:
    """Every convolution has torchvision's stride, padding and dilation (weights alone do not show a rate)."""
    ours = dict(model.named_modules())
    for key, module in tv_model.named_modules():
        if not isinstance(module, nn.Conv2d) or key.startswith("aux_classifier"):
            continue
        counterpart = ours[next(iter(torchvision_state_dict({key: None}, name, backbone)))]
        geometry = (module.stride, module.padding, module.dilation)
        if (counterpart.stride, counterpart.padding, counterpart.dilation) != geometry:
            raise ValueError(f"{key}: torchvision's stride/padding/dilation {geometry} has no pixelwise equivalent")
