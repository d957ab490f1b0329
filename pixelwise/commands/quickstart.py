"""``pixelwise quickstart``: build every registered model and segment a built-in synthetic image.

(Until training lands, this shows the model contract end to end: any model, any size, one call.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pixelwise.models import create_model, list_models


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("quickstart", help="build every model and segment a synthetic image")
    parser.add_argument("--size", type=int, nargs=2, default=(97, 101), metavar=("H", "W"))
    parser.set_defaults(func=run)


def synthetic_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A (1, 3, H, W) float image: a bright disc and a dark square on a noisy gradient."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    image = np.stack([x, y, 0.5 * (x + y)]) + 0.1 * rng.standard_normal((3, height, width))
    image[:, (x - 0.3) ** 2 + (y - 0.4) ** 2 < 0.04] = 1.0
    image[:, (abs(x - 0.75) < 0.1) & (abs(y - 0.7) < 0.1)] = 0.0
    return torch.from_numpy(image).float()[None]


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(0)
    image = synthetic_image(*args.size)
    print(f"segmenting a {args.size[0]}x{args.size[1]} synthetic image with every registered model")
    for name in list_models():
        model = create_model(name, num_classes=5).eval()
        start = time.perf_counter()
        with torch.inference_mode():
            logits = model(image)
        labels = logits.argmax(1)
        seconds = time.perf_counter() - start
        print(f"  {name:14s} logits {tuple(logits.shape)}  labels used {labels.unique().numel()}  {seconds:.2f}s")
    return 0
