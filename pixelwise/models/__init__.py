"""The model registry: a plain dict from name to how to build it, and ``create_model``.

Every model keeps one contract (``pixelwise.models.base``): in eval mode ``model(x)`` with ``x``
(N, in_channels, H, W) returns logits (N, num_classes, H, W) for every H, W >= 1, or, for a model with an
``output_margin`` (U-Net with ``padding="valid"``), that many pixels fewer on each side.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from pixelwise.backbones.timm_backbone import TIMM_PREFIX
from pixelwise.card import WEIGHT_SOURCE_OPTIONS, RunCard
from pixelwise.models.base import SegmentationModel
from pixelwise.models.deeplab import DeepLabV1, DeepLabV2, DeepLabV3, DeepLabV3Plus
from pixelwise.models.encoder_unet import build_unet
from pixelwise.models.fcn import FCN
from pixelwise.models.fcn_resnet import BackboneFCN
from pixelwise.models.hypercolumn import Hypercolumn
from pixelwise.models.lraspp import LRASPP
from pixelwise.models.torchvision_compat import TORCHVISION_WEIGHTS, load_torchvision_weights, torchvision_options
from pixelwise.options import check_options, keyword_parameters


@dataclass(frozen=True)
class ModelEntry:
    """How to build a model, and what ``pixelwise models`` says about it."""

    builder: Callable[..., SegmentationModel]
    paper: str
    # The first one is the default; None is the model's own encoder; empty for models with only their own.
    backbones: tuple[str | None, ...] = ()
    timm: bool = False  # also takes backbone="timm:<name>", any timm model with features_only=True

    def accepts(self, backbone: str | None) -> bool:
        return backbone in self.backbones or (self.timm and str(backbone).startswith(TIMM_PREFIX))

    def backbone_names(self) -> list[str]:
        """The backbones as ``pixelwise models`` lists them: "own" for the model's own encoder, then timm."""
        return [name or "own" for name in self.backbones] + ([f"{TIMM_PREFIX}<name>"] if self.timm else [])


FCN_PAPER = "Long, Shelhamer & Darrell, Fully Convolutional Networks for Semantic Segmentation, CVPR 2015"

MODELS: dict[str, ModelEntry] = {
    "fcn32s": ModelEntry(partial(FCN, output_stride=32), FCN_PAPER, ("vgg16",)),
    "fcn16s": ModelEntry(partial(FCN, output_stride=16), FCN_PAPER, ("vgg16",)),
    "fcn8s": ModelEntry(partial(FCN, output_stride=8), FCN_PAPER, ("vgg16",)),
    "unet": ModelEntry(
        build_unet, "Ronneberger, Fischer & Brox, U-Net: Convolutional Networks for Biomedical Image Segmentation, "
        "MICCAI 2015", (None, "resnet34", "resnet50", "resnet101", "xception65", "mobilenet_v2", "mobilenet_v3_large"),
        timm=True,
    ),
    "hypercolumn": ModelEntry(
        Hypercolumn, "Hariharan, Arbeláez, Girshick & Malik, Hypercolumns for Object Segmentation and "
        "Fine-grained Localization, CVPR 2015", ("vgg16",),
    ),
    "deeplabv1": ModelEntry(
        DeepLabV1, "Chen, Papandreou, Kokkinos, Murphy & Yuille, Semantic Image Segmentation with Deep "
        "Convolutional Nets and Fully Connected CRFs, ICLR 2015", ("vgg16_largefov",),
    ),
    "deeplabv2": ModelEntry(
        DeepLabV2, "Chen, Papandreou, Kokkinos, Murphy & Yuille, DeepLab: Semantic Image Segmentation with Deep "
        "Convolutional Nets, Atrous Convolution, and Fully Connected CRFs, TPAMI 2017", ("resnet101", "resnet50"),
        timm=True,
    ),
    "deeplabv3": ModelEntry(
        DeepLabV3, "Chen, Papandreou, Schroff & Adam, Rethinking Atrous Convolution for Semantic Image "
        "Segmentation, arXiv 2017",
        ("resnet101", "resnet50", "xception65", "mobilenet_v2", "mobilenet_v3_large"), timm=True,
    ),
    "deeplabv3plus": ModelEntry(
        DeepLabV3Plus, "Chen, Zhu, Papandreou, Schroff & Adam, Encoder-Decoder with Atrous Separable "
        "Convolution for Semantic Image Segmentation, ECCV 2018",
        ("xception65", "resnet101", "resnet50", "mobilenet_v2", "mobilenet_v3_large"), timm=True,
    ),
    "fcn": ModelEntry(
        BackboneFCN, FCN_PAPER + " (torchvision's FCN head on a dilated ResNet)", ("resnet50", "resnet101"),
        timm=True,
    ),
    "lraspp": ModelEntry(
        LRASPP, "Howard et al., Searching for MobileNetV3, ICCV 2019 (the LR-ASPP head)",
        ("mobilenet_v3_large", "mobilenet_v2"),
    ),
}


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(MODELS)


def model_options(name: str) -> dict[str, Any]:
    """The options ``create_model(name, ...)`` accepts, with their defaults."""
    builder = _entry(name).builder
    names, _ = keyword_parameters(builder)
    target = builder.func if isinstance(builder, partial) else builder
    defaults = inspect.signature(target).parameters
    options = {key: defaults[key].default for key in names if key != "num_classes"}
    if any(model == name for model, _ in TORCHVISION_WEIGHTS):
        options["weights"] = None  # "torchvision": torchvision's published weights and architecture
    return options


def create_model(name: str, num_classes: int = 21, **options: Any) -> SegmentationModel:
    """Build a registered model with ``num_classes`` outputs; ``options`` are the model's own keywords.

    ``weights="torchvision"`` (``fcn`` and ``deeplabv3``) loads torchvision's published weights into
    torchvision's architecture; an explicit option that contradicts that architecture is an error. The
    returned model carries ``card``, a ``RunCard`` holding its architecture with every option spelled out,
    which ``save_model`` writes next to the weights so ``load_model`` can rebuild it.
    """
    entry = _entry(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    valid = model_options(name)
    weights = options.pop("weights", None)
    if weights is not None and "weights" not in valid:
        raise ValueError(f"model {name!r} has no published weights: weights= applies to "
                         f"{sorted({model for model, _ in TORCHVISION_WEIGHTS})}")
    options = check_options(f"model {name!r}", entry.builder, options, exclude=("num_classes",))
    in_channels = options.get("in_channels", 1)
    if type(in_channels) is not int or in_channels < 1:
        raise ValueError(f"in_channels must be a whole number >= 1, got {in_channels!r}")
    backbone = options.get("backbone", valid.get("backbone"))
    if "backbone" in options and not entry.accepts(backbone):
        timm = f" or {TIMM_PREFIX}<name>" if entry.timm else ""
        raise ValueError(f"model {name!r} takes backbone one of {list(entry.backbones)}{timm}, got {backbone!r}")
    if weights is not None:
        options = with_torchvision_architecture(name, backbone, weights, num_classes, options)
    model = entry.builder(num_classes=num_classes, **options)
    if weights is not None:
        load_torchvision_weights(model, name, backbone)
    resolved = {key: value for key, value in {**valid, **options}.items() if key not in WEIGHT_SOURCE_OPTIONS}
    model.card = RunCard(name, num_classes, resolved)
    return model


def with_torchvision_architecture(name: str, backbone: str, weights: str, num_classes: int,
                                  options: dict[str, Any]) -> dict[str, Any]:
    """``options`` plus the head, output stride and rates of torchvision's model.

    The weights are torchvision's network exactly: its head, output stride and rates, and every other
    option at its default. An explicit option that says otherwise is refused, not silently overridden.
    """
    architecture = torchvision_options(name, backbone, weights, num_classes)
    defaults = model_options(name)
    for key, given in options.items():
        if key == "backbone":
            continue
        value = architecture.get(key, defaults[key])
        if (tuple(given) if isinstance(given, list | tuple) else given) != value:
            raise ValueError(f"weights={weights!r} fixes {key} to {value!r} (torchvision's {name} on {backbone}); "
                             f"drop {key}={given!r} or the weights")
    return {**options, **architecture}


def _entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return MODELS[name]
