"""Evaluation over a whole split: one confusion matrix, the standard scores, a per-class table.

``refine`` is the hook for post-processing the logits before the argmax (the dense CRF plugs in here,
through ``pixelwise.crf.refine``, the same step the Segmenter runs): a function ``refine(images, logits)
-> logits`` with images (N, C, H, W) normalised as the model saw them and logits (N, K, H, W).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pixelwise.checkpoint import load_model
from pixelwise.crf.dense_crf import refine
from pixelwise.crf.settings import CRFSettings
from pixelwise.data import DATASETS, IGNORE_INDEX, build_dataset, parse_data_source, resolve_root, scan_labels
from pixelwise.data.check import MaskScan, diagnose, image_header_problems
from pixelwise.data.transforms import Normalization, build_transforms
from pixelwise.infer.segmenter import average_views
from pixelwise.metrics import ConfusionMatrix
from pixelwise.options import keyword_parameters
from pixelwise.train.distributed import eval_shard, reduce_confusion, setup
from pixelwise.train.losses import crop_target_to
from pixelwise.train.runtime import autocast

Refiner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, precision: str = "fp32", channels_last: bool = False,
            refine: Refiner | None = None, scales: Sequence[float] = (1.0,), flip: bool = False) -> torch.Tensor:
    """Labels (N, h, w) int64 for normalised images (N, C, H, W) already on the model's device.

    ``scales``/``flip`` average the softmax over rescaled and mirrored views (``average_views``).
    """
    def logits_of(view: torch.Tensor) -> torch.Tensor:
        if channels_last:
            view = view.contiguous(memory_format=torch.channels_last)
        with autocast(view.device, precision):
            return model(view).float()

    if tuple(scales) == (1.0,) and not flip:
        logits = logits_of(images)
    else:  # the log of the averaged probabilities: same argmax, and what a refiner expects
        logits = average_views(logits_of, images, scales, flip).clamp_min_(1e-12).log_()
    if refine is not None:
        logits = refine(images, logits)
    return logits.argmax(1)


def evaluate(model: nn.Module, loader: DataLoader, num_classes: int, ignore_index: int = IGNORE_INDEX,
             precision: str = "fp32", channels_last: bool = False, refine: Refiner | None = None,
             scales: Sequence[float] = (1.0,), flip: bool = False) -> ConfusionMatrix:
    """Accumulate the confusion matrix of ``model`` over every (image, mask) batch of ``loader``.

    The model is put in eval mode; its device is taken from its parameters. A model whose output is
    smaller than its input (valid padding) is scored on the centre of the mask it covers. Under torchrun
    each process passes a loader over its own shard (``sampler=eval_shard(len(dataset))``) and every
    process gets the matrix summed over all of them. ``scales`` and ``flip`` turn on test-time
    augmentation (see ``predict``).
    """
    model.eval()
    device = next(model.parameters()).device
    confusion = ConfusionMatrix(num_classes, ignore_index)
    for images, masks in loader:
        labels = predict(model, images.to(device), precision, channels_last, refine, scales, flip)
        confusion.update(labels, crop_target_to(labels, masks.to(device)))
    return reduce_confusion(confusion)


def refuse_label_mistakes(dataset: Dataset, split: str, where: str, options: dict, ignore: tuple[str, ...] = (),
                          how_to_skip: str = "", split_field: str = "split") -> MaskScan:
    """Read every mask of ``dataset`` (split ``split`` of ``where``, NAME or NAME:ROOT, read with loader
    ``options``) and refuse, in one line, the label mistakes that make a class score IoU 0 or NaN
    (``pixelwise.data.check``), masks that cannot be read and images whose header does not match their mask;
    findings of the kinds in ``ignore`` pass.
    ``split_field`` names the split in the message as the user gave it (``data.train_split`` in a recipe)."""
    scan = scan_labels(dataset)
    troubles = [str(finding) for finding in diagnose(scan, split) if finding.blocking and finding.kind not in ignore]
    troubles += [str(problem) for problem in scan.problems + image_header_problems(dataset, scan)]
    if troubles:
        more = f" (and {len(troubles) - 1} more)" if len(troubles) > 1 else ""
        flags = "".join(f" --classes {value}" if key == "num_classes" else f" --option '{key}={value}'"
                        for key, value in options.items())
        raise ValueError(f"{split_field} {split!r} of {where}: {troubles[0]}{more}. `pixelwise check-data {where} "
                         f"--split {split}{flags}` lists them all{how_to_skip}")
    return scan


def format_table(scores: dict, class_names: Sequence[str]) -> str:
    """A text table: one row per class (IoU, accuracy, Dice), then the means and the pixel accuracy."""
    width = max(len("mean"), *(len(name) for name in class_names))
    lines = [f"{'class':<{width}}  {'IoU':>7}  {'acc':>7}  {'Dice':>7}"]
    for index, name in enumerate(class_names):
        row = (scores["iou"][index], scores["class_accuracy"][index], scores["dice"][index])
        lines.append(f"{name:<{width}}  " + "  ".join(_percent(value) for value in row))
    lines.append(f"{'mean':<{width}}  " + "  ".join(
        _percent(scores[key]) for key in ("miou", "mean_accuracy", "mdice")))
    lines.append(f"pixel accuracy {_percent(scores['pixel_accuracy']).strip()}   "
                 f"frequency-weighted IoU {_percent(scores['fwiou']).strip()}")
    return "\n".join(lines)


def _percent(value: float) -> str:
    return f"{'-':>7}" if math.isnan(value) else f"{100 * value:7.2f}"


def crf_refiner(normalization: Normalization, settings: CRFSettings) -> Refiner:
    """``refine`` running the dense CRF (``pixelwise.crf.refine``) on the softmax.

    The CRF compares colours in 0..255, so the normalised images go back to the uint8 pixels the model saw.
    """
    def refine_logits(images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        pixels = crop_target_to(logits, normalization.to_uint8(images))
        return refine(logits.softmax(1), pixels, settings).clamp_min(1e-12).log()

    return refine_logits


def evaluate_checkpoint(checkpoint: str | os.PathLike, data: str | None = None, split: str | None = None,
                        batch_size: int = 1, device: str = "auto", crf: bool = False,
                        scales: Sequence[float] = (1.0,), flip: bool = False, options: dict | None = None
                        ) -> tuple[dict, list[str]]:
    """Scores of a saved model (a run directory, or its ``best/``) over a whole split, and the class names.

    ``data`` is ``"NAME:ROOT"`` (``"synthetic"`` takes no root); None uses the data set the run trained on.
    ``split`` defaults to the run's validation split. Normalisation, precision and CRF settings come from
    the run card; the data set options are the run's when it is the same data set, updated by ``options``, and a
    data set that takes ``num_classes`` gets the model's unless they say otherwise. ``crf`` refines with the
    dense CRF; ``scales`` and ``flip`` average the softmax over rescaled and mirrored views (multi-scale
    needs a model whose output matches its input size).
    Under torchrun each process scores its shard of the split and the confusion matrices are summed.
    """
    model = load_model(checkpoint, map_location=setup(device))
    if tuple(scales) != (1.0,) and model.output_margin:
        raise ValueError(f"{checkpoint}: multi-scale evaluation needs a same-size model; this one loses a "
                         f"{model.output_margin}-pixel margin (valid padding)")
    card = model.card
    trained_on = card.data
    if data is None:
        if trained_on is None:
            raise ValueError(f"{checkpoint}: the checkpoint does not name its data set; pass --data NAME:ROOT")
        name, root = trained_on.name, resolve_root(trained_on.root)
    else:
        name, root = parse_data_source(data)
    same_data = trained_on is not None and trained_on.name == name
    options = {**(trained_on.split_options() if same_data else {}), **(options or {})}
    if name in DATASETS and "num_classes" in keyword_parameters(DATASETS[name])[0]:
        options.setdefault("num_classes", card.num_classes)
    split = split or (trained_on.val_split if trained_on is not None else "val")
    norm = card.normalization
    transform = build_transforms(False, mean=norm.mean, std=norm.std, intensity=norm.intensity)
    dataset = build_dataset(name, root, split, transform, **options)
    if dataset.num_classes != card.num_classes:
        raise ValueError(f"{checkpoint}: the model predicts {card.num_classes} classes but data set "
                         f"{name!r} has {dataset.num_classes}")
    # Scores of masks misread (0/255 binary masks, colour masks, JPEG artefacts) would be printed as if real;
    # a class absent from the split is normal here: its IoU is NaN, not 0.
    refuse_label_mistakes(dataset, split, name if root is None else f"{name}:{root}", options,
                          ignore=("absent_classes",))
    precision = card.precision if card.precision != "fp16" or torch.cuda.is_available() else "fp32"
    loader = DataLoader(dataset, batch_size=batch_size, sampler=eval_shard(len(dataset)))
    confusion = evaluate(model, loader, dataset.num_classes, dataset.ignore_index, precision,
                         refine=crf_refiner(card.normalization, card.crf) if crf else None,
                         scales=scales, flip=flip)
    return confusion.compute(), card.class_names or list(dataset.class_names)
