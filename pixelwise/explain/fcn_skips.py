"""FCN-32s, -16s and -8s side by side: what the pool4 and pool3 skips add near object boundaries.

The three ``pixelwise.models.fcn.FCN`` variants train for the same short, seeded schedule on the synthetic
set, at a reduced width (every VGG16 and fc6/fc7 channel count divided by ``width_divisor``; same strides and
offsets). The crop offsets that align each skip, derived in ``fcn.py``'s docstring, are traced here through
the network itself: the centre of each map pixel's input gradient.
"""

from __future__ import annotations

import copy

import torch
from matplotlib.figure import Figure
from torch import nn
from torch.nn import functional as F

from pixelwise.data.synthetic import PALETTE
from pixelwise.explain.base import Explained, boundary_f_score, synthetic_batch, train_briefly
from pixelwise.metrics import ConfusionMatrix
from pixelwise.models import create_model
from pixelwise.nn.upsample import Upsample

# Each traced map: the FCN submodule whose output it is (the backbone's by index) and its stride.
TRACED_MAPS = {
    "pool3": ("backbone", 2, 8),
    "pool4": ("backbone", 3, 16),
    "score_fr": ("classifier", None, 32),
    "upscore2": ("upscore2", None, 16),
    "upscore_pool4": ("upscore_pool4", None, 8),
    "upscore_final": ("upscore_final", None, 1),
}


class AveragingPool(nn.MaxPool2d):
    """A max-pool's windows, averaged: the same geometry, but linear, so it passes every gradient on evenly.

    A ``MaxPool2d`` still, so that the backbone, which returns the output of each max-pool, returns its.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, ceil_mode=self.ceil_mode)


def traced_offsets(model: nn.Module, size: int = 512) -> dict[str, float]:
    """Input coordinate of pixel 0 of each map of an FCN-8s (``offset`` in ``offset + stride * j``), traced.

    A copy of ``model`` becomes linear and symmetric: every convolution weight positive and equal, biases
    zero, and each 2x2 max-pool an average pool of the same windows (the same geometry; a max routes its
    gradient to one arbitrary pixel). The gradient of a map's centre pixel with respect to an ``size`` x
    ``size`` input is then symmetric about that pixel's centre, which its centre of mass gives exactly.
    ``size`` must hold the whole receptive field of the final map's centre pixel (about 460 pixels).
    ``model`` is taken as built: its transposed convolutions bilinear, the kernels that put output pixel
    ``i`` at input coordinate ``(i + 0.5) / f - 0.5`` (training reshapes them).
    """
    if model.output_stride != 8:
        raise ValueError(f"tracing needs FCN-8s, which has every skip; got output_stride {model.output_stride}")
    traced = copy.deepcopy(model).double().eval()
    for index, layer in enumerate(traced.backbone.features):
        if isinstance(layer, nn.MaxPool2d):
            traced.backbone.features[index] = AveragingPool(layer.kernel_size, layer.stride, ceil_mode=layer.ceil_mode)
    with torch.no_grad():
        for layer in traced.modules():
            if type(layer) is nn.Conv2d:
                layer.weight.fill_(1.0 / layer.weight[0].numel())
                layer.bias.zero_()
    outputs = {}
    hooks = [getattr(traced, module).register_forward_hook(
        lambda _module, _inputs, output, name=name, index=index: outputs.__setitem__(
            name, output if index is None else output[index]))
        for name, (module, index, _) in TRACED_MAPS.items()]
    image = torch.ones(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    traced(image)
    for hook in hooks:
        hook.remove()
    offsets = {}
    positions = torch.arange(size, dtype=torch.float64)
    for name, (_, _, stride) in TRACED_MAPS.items():
        centre = outputs[name].shape[-1] // 2
        (gradient,) = torch.autograd.grad(outputs[name][0, 0, centre, centre], image, retain_graph=True)
        columns = gradient[0].sum(dim=(0, 1))
        offsets[name] = ((columns * positions).sum() / columns.sum()).item() - stride * centre
    return offsets


def crop_offsets(offsets: dict[str, float]) -> dict[str, float]:
    """FCN's three crops from the traced offsets: the pool4 and pool3 score crops and the final one."""
    return {
        "pool4": (offsets["upscore2"] - offsets["pool4"]) / TRACED_MAPS["pool4"][2],
        "pool3": (offsets["upscore_pool4"] - offsets["pool3"]) / TRACED_MAPS["pool3"][2],
        "output": -offsets["upscore_final"],
    }


def he_initialise(model: nn.Module) -> None:
    """He et al.'s initialisation of the VGG16 and fc6/fc7 convolutions (skip scores and upsamplers untouched).

    The paper starts from ImageNet weights; from scratch, PyTorch's default initialisation shrinks the signal
    of a plain 15-layer ReLU network layer by layer until the coarse scores ignore the image.
    """
    for part in (model.backbone, model.classifier):
        for layer in part.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)


def fcn_skips(*, seed: int = 0, steps: int = 120, image_size: int = 64, num_classes: int = 5,
              width_divisor: int = 16, batch_size: int = 8, train_images: int = 8, lr: float = 1e-3,
              trace_size: int = 512) -> Explained:
    """Train FCN-32s, -16s and -8s for ``steps`` each on ``train_images`` scenes; compare what they fit.

    From scratch, a VGG16 without batch normalisation needs far longer than a gallery has to generalise, but
    it fits a few scenes in a hundred steps: enough to show how finely each variant can draw a boundary.
    Scores on unseen validation scenes are reported beside, for honesty.
    """
    models = {}
    for output_stride in (32, 16, 8):
        torch.manual_seed(seed)
        model = create_model(f"fcn{output_stride}s", num_classes, width_divisor=width_divisor, dropout=0.0)
        he_initialise(model)
        # As in the paper's reference models (Caffe lr_mult 0), the upsamplers stay bilinear: a learnt 64x64
        # kernel at stride 32 could paint any mask by heart and hide the coarseness that the skips fix.
        for module in model.modules():
            if isinstance(module, Upsample):
                module.requires_grad_(False)
        models[f"FCN-{output_stride}s"] = train_briefly(model, steps, batch_size, image_size, num_classes, lr,
                                                         seed, num_images=train_images)
    scenes = {"train": synthetic_batch("train", train_images, image_size, num_classes, seed),
              "val": synthetic_batch("val", 8, image_size, num_classes, seed)}
    predictions, scores = {}, {}
    for split, (images, masks) in scenes.items():
        with torch.no_grad():
            predictions[split] = {name: model(images).argmax(1) for name, model in models.items()}
        scores[split] = {}
        for name, prediction in predictions[split].items():
            confusion = ConfusionMatrix(num_classes)
            confusion.update(prediction, masks)
            metrics = confusion.compute()
            scores[split][name] = {"mIoU": metrics["miou"], "pixel_accuracy": metrics["pixel_accuracy"],
                                   "boundary_f_score_2px": boundary_f_score(prediction, masks)}

    offsets = traced_offsets(create_model("fcn8s", num_classes, width_divisor=width_divisor), trace_size)
    numbers = {
        "training": {"steps": steps, "batch_size": batch_size, "image_size": image_size, "num_classes": num_classes,
                     "train_images": train_images, "lr": lr, "width_divisor": width_divisor, "seed": seed},
        "scores": scores,
        "traced_offsets": offsets,
        "traced_crops": crop_offsets(offsets),
    }
    return Explained(
        topic="fcn-skips",
        numbers=numbers,
        figures={"predictions": _figure(*scenes["train"], predictions["train"])},
        caption=(
            f"FCN-32s, -16s and -8s, each trained for {steps} Adam steps from the same seed on the same "
            f"{train_images} synthetic {image_size}x{image_size} scenes (shown), at 1/{width_divisor} of VGG16's "
            "width, He-initialised, upsamplers fixed bilinear as in the paper's reference models. From scratch, "
            "without ImageNet weights, they cannot generalise in a gallery's time (the validation scores in the "
            "numbers stay near chance), but fitting a few scenes shows what each can draw: FCN-32s interpolates "
            "a score grid 32 pixels apart and paints blobs; each skip adds scores from a finer pool layer, "
            "cropped into line, and the shapes sharpen. The crops (pool4 at 6, pool3 at 12, output at 3) are "
            "derived in fcn.py and traced here through the network: both agree."
        ),
        source="pixelwise/models/fcn.py: FCN (POOL4_OFFSET, POOL3_OFFSET, OUTPUT_OFFSET); "
               "pixelwise/nn/skip.py: crop_at; pixelwise/nn/upsample.py: Upsample",
        extras={"models": models, "predictions": predictions},
    )


def _figure(images: torch.Tensor, masks: torch.Tensor, predictions: dict[str, torch.Tensor]) -> Figure:
    palette = torch.tensor(PALETTE, dtype=torch.uint8)
    scenes = min(3, len(images))
    figure = Figure(figsize=(2.4 * (2 + len(predictions)), 2.4 * scenes), layout="constrained")
    axes = figure.subplots(scenes, 2 + len(predictions), squeeze=False)
    for row in range(scenes):
        panels = {"image": images[row].permute(1, 2, 0), "truth": palette[masks[row]]}
        panels |= {name: palette[prediction[row]] for name, prediction in predictions.items()}
        for axis, (title, panel) in zip(axes[row], panels.items(), strict=True):
            axis.imshow(panel.numpy(), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title)
    figure.suptitle(f"{scenes} of the {len(images)} training scenes, as each variant fits them")
    return figure
