"""Any timm model with ``features_only=True`` as a backbone: ``build_backbone("timm:<name>")``.

timm (``pip install "pixelwise[timm]"``) builds the network with ``features_only=True``; its
``feature_info`` gives the channels and strides of the maps, and timm's own ``output_stride`` argument
trades strides for dilation where the model supports it (ResNets, ConvNeXts, EfficientNets, MobileNets,
RegNets ...). A model that does not (ViT, Swin, DenseNet) is built at its own stride, and asking for another
is an error naming the output strides it allows.

Any input size. Many timm networks floor odd sizes, and some refuse inputs smaller than their stem
(ConvNeXt's 4x4 stride-4 patchify). The input is zero-padded at the bottom and right to a multiple of the
output stride and every map cropped back to ``ceil(H / stride)`` pixels, so the contract of
``base.Backbone`` holds: pixel ``i`` of a stride-``s`` map covers input pixels ``[i s, (i + 1) s)``, and
the maps' pixels that lie wholly past the image are dropped.

Weights. ``pretrained=True`` reads timm's ImageNet weights from the local caches only (Hugging Face's,
``$HF_HOME/hub``, then torch hub's), never downloading; ``pretrained="file"`` reads a local file. Either
way pixelwise reads the tensors (no pickle) and hands them to timm, which maps them onto the network and
adapts the first convolution to ``in_channels`` by the rule of ``pretrained.adapt_first_conv``.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import torch
from torch import nn
from torch.nn import functional as F

from pixelwise.backbones.base import OUTPUT_STRIDES, Backbone, map_size
from pixelwise.backbones.pretrained import cache_path, read_state_dict
from pixelwise.nn.skip import crop_at

TIMM_PREFIX = "timm:"
INSTALL_HINT = 'pip install "pixelwise[timm]"'
# What timm stores on the Hugging Face hub, preferred first (timm's own order).
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def import_timm() -> ModuleType:
    """The timm package, or an ImportError that names the extra to install."""
    try:
        import timm
    except ImportError as error:
        raise ImportError(f"timm backbones need the timm package: {INSTALL_HINT}") from error
    return timm


def cached_weights(timm: ModuleType, name: str) -> Path:
    """The file of timm's pretrained weights for ``name`` in the local caches; FileNotFoundError if absent."""
    from huggingface_hub import constants, try_to_load_from_cache

    config = timm.models.get_pretrained_cfg(name)
    if config is None or not (config.hf_hub_id or config.url):
        raise ValueError(f"timm has no pretrained weights for {name!r}; pass pretrained_backbone='path/to/file'")
    looked = []
    if config.hf_hub_id:
        repo, _, revision = config.hf_hub_id.partition("@")
        for filename in (config.hf_hub_filename,) if config.hf_hub_filename else HF_WEIGHT_FILES:
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str):  # else None or the marker of a file known to be absent
                return Path(found)
        looked.append(str(Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"))
    if config.url:
        path = cache_path(config.url)
        if path.is_file():
            return path
        looked.append(str(path))
    raise FileNotFoundError(
        f"timm's weights for {name!r} are not in the local cache (looked in {' and '.join(looked)}); pixelwise "
        f"never downloads them: run python -c \"import timm; timm.create_model('{name}', pretrained=True)\" where "
        "there is a network (it fills the Hugging Face cache; HF_HOME moves it) or pass "
        "pretrained_backbone='path/to/file.safetensors'"
    )


class TimmBackbone(Backbone):
    """(N, in_channels, H, W) -> the maps of ``timm.create_model(model_name, features_only=True)``.

    ``channels`` and ``strides`` are timm's ``feature_info`` (strides capped at ``output_stride``), e.g.
    ResNet-18 (64, 64, 128, 256, 512) at (2, 4, 8, 16, 32), ConvNeXt (40, 80, 160, 320) at (4, 8, 16, 32).
    ``output_stride`` None builds the model at its own stride.
    """

    def __init__(
        self,
        model_name: str,
        in_channels: int = 3,
        output_stride: int | None = None,
        pretrained: bool | str | os.PathLike = False,
    ) -> None:
        timm = import_timm()
        if not timm.is_model(model_name):
            raise ValueError(f"unknown timm model {model_name!r} (timm.list_models() lists them)")
        if timm.models.get_pretrained_cfg_value(model_name, "fixed_input_size"):
            # Transformers with learnt position embeddings or fixed windows (ViT, Swin): one input size only.
            size = timm.models.get_pretrained_cfg_value(model_name, "input_size")
            raise ValueError(f"timm model {model_name!r} takes only its fixed input size {size}, while a pixelwise "
                             "model takes any H and W: choose a convolutional timm model (resnet*, convnext*, "
                             "efficientnet*, mobilenetv3*, regnet* ...)")
        weights = None
        if pretrained:
            weights = read_state_dict(cached_weights(timm, model_name) if pretrained is True else pretrained)
        net = _features(timm, model_name, in_channels, output_stride, weights)
        if net is None:  # timm refused output_stride, or took it and ignored it: the model's own stride may do
            net = _features(timm, model_name, in_channels, None, weights)
            own = max(net.feature_info.reduction())
            if own != output_stride:
                others = [s for s in OUTPUT_STRIDES if s != output_stride]
                allowed = sorted({own, *(s for s in others
                                         if _features(timm, model_name, in_channels, s, None) is not None)})
                raise ValueError(f"timm model {model_name!r} cannot be built at output_stride {output_stride}; "
                                 f"it allows {', '.join(map(str, allowed))}")
        super().__init__(max(net.feature_info.reduction()))
        self.model_name = model_name
        self.net = net
        self.channels = tuple(net.feature_info.channels())
        self.strides = tuple(net.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        size = x.shape[-2:]
        padded = [side * self.output_stride for side in map_size(size, self.output_stride)]
        x = F.pad(x, (0, padded[1] - size[1], 0, padded[0] - size[0]))
        return [
            crop_at(feature, 0, map_size(size, stride))
            for feature, stride in zip(self.net(x), self.strides, strict=True)
        ]


def _features(timm: ModuleType, name: str, in_channels: int, output_stride: int | None,
              weights: dict[str, torch.Tensor] | None) -> nn.Module | None:
    """timm's features_only network at ``output_stride`` (None: its own), or None when timm cannot build it so."""
    options: dict = {} if output_stride is None else {"output_stride": output_stride}
    if weights is not None:
        # The tensors themselves: timm neither downloads nor unpickles, and adapts them (first conv, classifier).
        options.update(pretrained=True, pretrained_cfg_overlay={"state_dict": dict(weights), "source": None})
    try:
        net = timm.create_model(name, features_only=True, in_chans=in_channels, **options)
    except (TypeError, AssertionError, ValueError, NotImplementedError):  # how timm models refuse output_stride
        if output_stride is None:
            raise
        return None
    except RuntimeError as error:  # no features_only support, or weights that do not fit
        raise ValueError(f"timm cannot build {name!r} as a backbone: {error}") from error
    if output_stride is not None and max(net.feature_info.reduction()) != output_stride:
        return None
    return net
