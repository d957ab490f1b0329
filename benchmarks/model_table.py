"""Print a Markdown table of every registered model: paper, backbones, parameters and multiply-adds.

Parameters are counted for 21 classes with each model's default options; multiply-adds (GMACs,
FLOPs / 2 as counted by ``torch.utils.flop_counter.FlopCounterMode``: convolutions and matmuls) for one
512x512 RGB image with the default backbone. Everything runs on the meta device: shapes only, no
memory and no arithmetic, so the whole table takes seconds on any machine.

    python benchmarks/model_table.py [--size 512]
"""

from __future__ import annotations

import argparse
import datetime

import torch
from torch.utils.flop_counter import FlopCounterMode

from pixelwise.models import MODELS, create_model, list_models


def measure(name: str, size: int) -> tuple[int, float]:
    """(parameters, billions of multiply-adds) of ``name`` with 21 classes on a (1, 3, size, size) input."""
    with torch.device("meta"):
        model = create_model(name, 21).eval()
        x = torch.empty(1, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() / 2 / 1e9


def table(size: int) -> str:
    lines = [
        f"| model | paper | backbones (default first) | parameters (21 classes) | GMACs at {size}x{size} |",
        "|---|---|---|---:|---:|",
    ]
    for name in list_models():
        entry = MODELS[name]
        parameters, gmacs = measure(name, size)
        backbones = ", ".join(entry.backbone_names()) or "own encoder"
        lines.append(f"| `{name}` | {entry.paper} | {backbones} | {parameters / 1e6:.2f} M | {gmacs:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="input height and width in pixels")
    args = parser.parse_args()
    print(f"<!-- generated {datetime.date.today()} by: python benchmarks/model_table.py --size {args.size} -->")
    print(table(args.size))


if __name__ == "__main__":
    main()
