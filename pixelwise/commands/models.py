"""``pixelwise models``: a table of every registered model."""

from __future__ import annotations

import argparse
import gc


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list every registered model with its parameter count")
    parser.add_argument("--num-classes", type=int, default=21, help="classes to count parameters for (default 21)")
    parser.set_defaults(func=run)


def model_rows(num_classes: int) -> list[tuple[str, str, str, str]]:
    """(name, parameters in millions, backbones with the default first, paper) for every model."""
    import torch

    from pixelwise.models import MODELS, create_model, list_models

    rows = []
    for name in list_models():
        entry = MODELS[name]
        # Build on the meta device: counts parameters without allocating or initialising weights.
        with torch.device("meta"):
            model = create_model(name, num_classes)
        params = sum(p.numel() for p in model.parameters())
        backbones = ", ".join(f"{b} (default)" if i == 0 else b for i, b in enumerate(entry.backbones)) or "own"
        rows.append((name, f"{params / 1e6:.2f}M", backbones, entry.paper))
    return rows


def run(args: argparse.Namespace) -> int:
    # A short read-only command: the cyclic garbage collector would only re-walk the objects that importing
    # torch and torchvision creates (about 0.5 s on a 2-core machine); nothing here makes reference cycles.
    enabled = gc.isenabled()
    gc.disable()
    try:
        rows = model_rows(args.num_classes)
    finally:
        if enabled:  # called in-process (tests, notebooks): leave the collector as it was
            gc.enable()
    header = ("model", f"params ({args.num_classes} classes)", "backbones", "paper")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3])
    return 0
