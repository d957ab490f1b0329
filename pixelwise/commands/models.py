"""``pixelwise models``: a table of every registered model; ``--backbones``: a table of every backbone."""

from __future__ import annotations

import argparse
import gc


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list every registered model with its parameter count")
    parser.add_argument("--num-classes", type=int, default=21, help="classes to count parameters for (default 21)")
    parser.add_argument("--backbones", action="store_true",
                        help="list the built-in backbones instead (any timm features_only model works too)")
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
        names = entry.backbone_names()
        backbones = ", ".join(f"{b} (default)" if i == 0 else b for i, b in enumerate(names)) or "own"
        rows.append((name, f"{params / 1e6:.2f}M", backbones, entry.paper))
    return rows


def backbone_rows() -> list[tuple[str, str, str, str]]:
    """(name, output strides, its maps as stride:channels at its default output stride, the models that take it)
    for every built-in backbone."""
    import torch

    from pixelwise.backbones import BACKBONES, build_backbone
    from pixelwise.models import MODELS, list_models

    rows = []
    for name, builder in BACKBONES.items():
        with torch.device("meta"):
            backbone = build_backbone(name)
        maps = " ".join(f"{s}:{c}" for s, c in zip(backbone.strides, backbone.channels, strict=True))
        strides = "/".join(map(str, getattr(builder, "func", builder).output_strides))
        models = ", ".join(model for model in list_models() if name in MODELS[model].backbones) or "-"
        rows.append((name, strides, maps, models))
    return rows


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Columns padded to their widest cell; the last one is left unpadded."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1])


def timm_note() -> str:
    """What ``timm:<name>`` takes, and whether timm is installed (found without importing it)."""
    import importlib.metadata

    from pixelwise.backbones.timm_backbone import INSTALL_HINT

    try:
        installed = f"timm {importlib.metadata.version('timm')} is installed"
    except importlib.metadata.PackageNotFoundError:
        installed = f"timm is not installed: {INSTALL_HINT}"
    return (f"timm:<name>  any timm model that supports features_only=True (timm:resnet34, timm:convnext_tiny, "
            f"timm:efficientnet_b0 ...), for the models marked timm:<name> in `pixelwise models`; output_stride "
            f"where the model supports it. {installed}.")


def run(args: argparse.Namespace) -> int:
    # A short read-only command: the cyclic garbage collector would only re-walk the objects that importing
    # torch and torchvision creates (about 0.5 s on a 2-core machine); nothing here makes reference cycles.
    enabled = gc.isenabled()
    gc.disable()
    try:
        if args.backbones:
            print_table(("backbone", "output strides", "maps (stride:channels)", "models"), backbone_rows())
            print(timm_note())
            return 0
        rows = model_rows(args.num_classes)
    finally:
        if enabled:  # called in-process (tests, notebooks): leave the collector as it was
            gc.enable()
    print_table(("model", f"params ({args.num_classes} classes)", "backbones", "paper"), rows)
    return 0
