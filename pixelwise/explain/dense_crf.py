"""The dense CRF: one prediction before and after mean field, its energy per iteration, three colour kernel widths.

The unary is the softmax of a small U-Net (8 base channels, depth 3) trained briefly: on the synthetic set,
or with ``data="camvid:ROOT"`` on CamVid's first training images at a quarter of their size (90x120), and
the CRF runs on CamVid's first validation image at that size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from pixelwise.crf import CRFSettings
from pixelwise.crf import dense_crf as run_dense_crf
from pixelwise.crf.dense_crf import mean_field_energy
from pixelwise.data.base import IGNORE_INDEX
from pixelwise.data.registry import build_dataset, parse_data_source
from pixelwise.data.synthetic import PALETTE as SYNTHETIC_PALETTE
from pixelwise.explain.base import Explained, boundary_f_score, require_positive, synthetic_batch, train_briefly
from pixelwise.metrics import ConfusionMatrix
from pixelwise.models import create_model

RANGE_WIDTHS = (3.0, 13.0, 50.0)  # bilateral_srgb, in 0..255 intensity units; 13 is pydensecrf's default
CAMVID_SCALE = 4  # CamVid's 360x480 images are used at 90x120: a brief training and a quick CRF


def load_camvid(root: str, split: str, count: int) -> tuple[torch.Tensor, torch.Tensor, list, list[str]]:
    """The first ``count`` images of a CamVid split at a quarter size: float (N, 3, h, w) in [0, 1], masks."""
    dataset = build_dataset("camvid", root, split)
    images, masks = [], []
    for index in range(min(count, len(dataset))):
        pixels, mask = dataset.load_arrays(index)
        image = torch.tensor(pixels).permute(2, 0, 1).float()[None] / 255  # a copy: the array may be read-only
        size = (pixels.shape[0] // CAMVID_SCALE, pixels.shape[1] // CAMVID_SCALE)
        images.append(F.interpolate(image, size=size, mode="area")[0])
        masks.append(F.interpolate(torch.from_numpy(mask.astype(np.int64))[None, None].float(), size=size,
                                   mode="nearest")[0, 0].long())
    return torch.stack(images), torch.stack(masks), dataset.palette, dataset.class_names


def scene(data: str | None, seed: int, steps: int, image_size: int, train_images: int) -> tuple:
    """(trained model, image (3, H, W) in [0, 1], its mask, palette, data set name)."""
    if data is None:
        num_classes, palette, name = 5, SYNTHETIC_PALETTE, "synthetic"
        training = None
        images, masks = synthetic_batch("val", 1, image_size, num_classes, seed)
    else:
        name, root = parse_data_source(data)
        if name != "camvid" or root is None:
            raise ValueError(f"dense-crf takes --data camvid:ROOT, got {data!r}")
        training_images, training_masks, palette, class_names = load_camvid(root, "train", train_images)
        training, num_classes = (training_images, training_masks), len(class_names)
        images, masks, _, _ = load_camvid(root, "val", 1)
    torch.manual_seed(seed)
    model = create_model("unet", num_classes, base_channels=8, depth=3, batch_norm=True)
    train_briefly(model, steps=steps, image_size=image_size, num_classes=num_classes, seed=seed, data=training)
    return model, images[0], masks[0], palette, name


def scores(labels: torch.Tensor, mask: torch.Tensor, num_classes: int) -> dict[str, float]:
    confusion = ConfusionMatrix(num_classes)
    confusion.update(labels, mask)
    result = confusion.compute()
    return {"miou": result["miou"], "pixel_accuracy": result["pixel_accuracy"],
            "boundary_f_score": boundary_f_score(labels[None], mask[None])}


def dense_crf(*, seed: int = 0, data: str | None = None, steps: int = 150, image_size: int = 64,
              iterations: int = CRFSettings.iterations, exact: bool = False, train_images: int = 96) -> Explained:
    """Refine one prediction with ``CRFSettings``' kernels; ``exact`` filters with dense matrices (small images).

    ``train_images`` CamVid images train the unary model (the synthetic set always gives 256 scenes)."""
    require_positive(steps=steps, image_size=image_size, train_images=train_images, iterations=iterations)
    model, image, mask, palette, name = scene(data, seed, steps, image_size, train_images)
    with torch.no_grad():
        probs = model(image[None])[0].softmax(0)
    pixels = (image * 255 + 0.5).to(torch.uint8)
    num_classes = probs.shape[0]
    settings = {**CRFSettings().as_keywords(), "iterations": iterations}
    kernels = {key: value for key, value in settings.items() if key != "iterations"}
    # Mean field is deterministic: the marginals after t iterations are a run of t iterations.
    marginals = [run_dense_crf(probs, pixels, **{**settings, "iterations": t}, exact=exact)
                 for t in range(iterations + 1)]
    energies = [mean_field_energy(q, probs, pixels, **kernels, exact=exact) for q in marginals]
    before, after = probs.argmax(0), marginals[-1].argmax(0)
    widths = {srgb: after if srgb == settings["bilateral_srgb"] else
              run_dense_crf(probs, pixels, **{**settings, "bilateral_srgb": srgb}, exact=exact).argmax(0)
              for srgb in RANGE_WIDTHS}
    numbers = {
        "data": name,
        "image_size": list(mask.shape),
        "settings": settings,
        "energy_per_iteration": energies,
        "before": scores(before, mask, num_classes),
        "after": scores(after, mask, num_classes),
        "bilateral_srgb": {
            f"{srgb:g}": {**scores(labels, mask, num_classes),
                          "changed_pixels": float((labels != before).float().mean())}
            for srgb, labels in widths.items()
        },
        "unary_model": f"unet, 8 base channels, depth 3, {steps} training steps",
    }
    return Explained(
        topic="dense-crf",
        numbers=numbers,
        figures={"dense_crf": draw(pixels, mask, before, after, energies, widths, palette)},
        caption=(
            f"The softmax of a small U-Net ({steps} training steps on {name}) is the unary; mean field with "
            "pydensecrf's kernels (smoothness sxy 3, appearance sxy 80 and srgb 13) pulls labels along regions "
            "of similar colour: it cleans up speckle, but with a unary this weak and kernels set for full-size "
            "images it also lets a confident class swallow uncertain ones (compare before/after in the numbers). "
            "Its objective (KL(Q||P) - log Z, pydensecrf's "
            f"klDivergence) falls from {energies[0]:.0f} to {energies[-1]:.0f} in {iterations} iterations. The "
            "colour width decides what counts as one region: at 3 only near-identical colours pull each other; "
            "wider, labels spread further across colour edges (numbers: the share of pixels each width changes)."
        ),
        source="pixelwise/crf/dense_crf.py: dense_crf, mean_field_energy; pixelwise/crf/kernels.py: "
               "PairwiseKernels; pixelwise/models/unet.py: UNet",
        extras={"probs": probs, "image": pixels, "marginals": marginals},
    )


def draw(pixels: torch.Tensor, mask: torch.Tensor, before: torch.Tensor, after: torch.Tensor,
         energies: list[float], widths: dict[float, torch.Tensor], palette: list) -> Figure:
    """Row 1: image, truth, before, after. Row 2: the energy per iteration, then each colour width."""
    colours = np.asarray(palette, dtype=np.uint8)

    def coloured(labels: torch.Tensor) -> np.ndarray:
        shown = colours[labels.clamp(0, len(colours) - 1).numpy()]
        shown[(labels == IGNORE_INDEX).numpy()] = 255  # void pixels (CamVid) in white
        return shown

    height, width = mask.shape
    figure = Figure(figsize=(12.0, 6.2 if height <= width else 8.0))
    axes = figure.subplots(2, 4)
    panels = [(pixels.permute(1, 2, 0).numpy(), "image"), (coloured(mask), "ground truth"),
              (coloured(before), "before the CRF (argmax of the unary)"), (coloured(after), "after mean field")]
    panels += [(coloured(labels), f"bilateral srgb = {srgb:g}") for srgb, labels in widths.items()]
    for ax, (panel, title) in zip([*axes[0], *axes[1, 1:]], panels, strict=True):
        ax.imshow(panel)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = axes[1, 0]
    ax.plot(range(len(energies)), energies, marker="o")
    ax.set_xlabel("mean-field iteration")
    ax.set_ylabel("KL(Q||P) - log Z")
    ax.set_title("mean-field objective", fontsize=10)
    figure.subplots_adjust(left=0.085, right=0.99, top=0.95, bottom=0.08, wspace=0.12, hspace=0.2)
    return figure
