"""A VGG16 classifier turned into convolutions: the same logits at 224x224, a map of scores on a larger image.

``pixelwise.nn.convolutionalize`` reshapes fc6, fc7 and fc8 into 7x7, 1x1 and 1x1 convolutions. At 224x224
the result is the classifier; on H x W it slides the classifier with stride 32 and returns
``floor((H - 224) / 32) + 1`` by ``floor((W - 224) / 32) + 1`` score vectors in one pass.
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torchvision.models import vgg16

from pixelwise.explain.base import Explained, synthetic_batch
from pixelwise.nn.convolutionalize import convolutionalize

CLASSIFIER_SIZE = 224  # VGG16's training crop: pool5 is then 7x7, what fc6 reads
NETWORK_STRIDE = 32


def score_map_size(model: torch.nn.Module, height: int, width: int) -> tuple[int, int]:
    """The (H', W') of the score map of ``model`` (built on the meta device) for an H x W input.

    Tensors on the meta device carry shapes but no data, so a forward pass of VGG16 at any size costs nothing.
    """
    with torch.device("meta"):
        scores = model(torch.empty(1, 3, height, width))
    return tuple(scores.shape[-2:])


def convolutionalization(*, seed: int = 0, scene_size: tuple[int, int] = (384, 480),
                         sizes: tuple[tuple[int, int], ...] = ((224, 224), (255, 256), (256, 288), (320, 480),
                                                             (500, 375), (512, 1024))) -> Explained:
    """Compare torchvision's VGG16 with its convolutionalized copy; slide it over a ``scene_size`` scene.

    The weights are torchvision's random initialisation (seeded): nothing is downloaded, and the equality
    of the logits holds for any weights.
    """
    small = [(height, width) for height, width in (*sizes, scene_size) if min(height, width) < CLASSIFIER_SIZE]
    if small:
        raise ValueError(f"sizes {small} are smaller than the classifier's {CLASSIFIER_SIZE}x{CLASSIFIER_SIZE} input")
    torch.manual_seed(seed)
    classifier = vgg16(weights=None).eval()
    fully_convolutional = convolutionalize(classifier).eval()

    image = torch.rand(1, 3, CLASSIFIER_SIZE, CLASSIFIER_SIZE, generator=torch.Generator().manual_seed(seed))
    scene, _ = synthetic_batch("val", 1, max(scene_size), seed=seed)
    scene = scene[..., : scene_size[0], : scene_size[1]]
    with torch.no_grad():
        logits = classifier(image)[0]
        scores_224 = fully_convolutional(image)[0, :, 0, 0]
        scene_scores = fully_convolutional(scene)[0]
    difference = (logits - scores_224).abs().max().item()

    with torch.device("meta"):
        meta_model = convolutionalize(vgg16(weights=None))
    size_table = [
        {"input": [height, width], "score_map": list(score_map_size(meta_model, height, width)),
         "formula": [(height - CLASSIFIER_SIZE) // NETWORK_STRIDE + 1, (width - CLASSIFIER_SIZE) // NETWORK_STRIDE + 1]}
        for height, width in (*sizes, scene_size)
    ]
    numbers = {
        "max_abs_logit_difference_at_224": difference,
        "max_abs_logit_at_224": logits.abs().max().item(),
        "score_map_sizes": size_table,
        "scene_size": list(scene_size),
        "scene_score_map": list(scene_scores.shape[-2:]),
    }
    figure = _figure(scene[0], scene_scores)
    return Explained(
        topic="convolutionalization",
        numbers=numbers,
        figures={"score_map": figure},
        caption=(
            "fc6 of VGG16 reads a 512x7x7 pool5 map, so it is a 7x7 convolution; fc7 and fc8 are 1x1 convolutions. "
            f"At 224x224 the convolutionalized network returns the classifier's 1000 logits (largest difference "
            f"{difference:.1e}). On the {scene_size[0]}x{scene_size[1]} scene it returns a "
            f"{scene_scores.shape[1]}x{scene_scores.shape[2]} map in one pass: each cell is the classifier applied "
            "to a 224x224 window, the windows 32 pixels apart (two are outlined). The weights are random (nothing "
            "is downloaded), so the scores' values mean nothing here; their layout is the point."
        ),
        source="pixelwise/nn/convolutionalize.py: convolutionalize, linear_to_conv; torchvision.models.vgg16",
        extras={"scene_scores": scene_scores},
    )


def _figure(scene: torch.Tensor, scores: torch.Tensor) -> Figure:
    figure = Figure(figsize=(10, 4.2), layout="constrained")
    left, right = figure.subplots(1, 2)
    left.imshow(scene.permute(1, 2, 0).numpy())
    rows, cols = scores.shape[-2:]
    for (row, col), color in (((0, 0), "yellow"), ((rows - 1, cols - 1), "cyan")):
        left.add_patch(Rectangle((col * NETWORK_STRIDE - 0.5, row * NETWORK_STRIDE - 0.5), CLASSIFIER_SIZE,
                                 CLASSIFIER_SIZE, fill=False, edgecolor=color, linewidth=2))
    left.set_title(f"{scene.shape[1]}x{scene.shape[2]} scene, two 224x224 windows")
    # The top class per window: one classifier decision per cell of the map.
    top_class = scores.argmax(0)
    image = right.imshow(scores.max(0).values.numpy(), cmap="viridis")
    for row in range(rows):
        for col in range(cols):
            right.text(col, row, str(top_class[row, col].item()), ha="center", va="center", fontsize=7, color="w")
    right.set_title(f"score map {rows}x{cols}: top score and class per window")
    figure.colorbar(image, ax=right, shrink=0.8)
    return figure
