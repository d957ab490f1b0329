"""Training throughput per precision: ``python benchmarks/train_speed.py --device cuda [--steps 50]``.

Trains the quickstart recipe (synthetic shapes, small U-Net) for a few steps under fp32, bf16 and, on CUDA,
fp16 with the gradient scaler, with and without channels_last, and prints images/s and the final loss.
It doubles as the CUDA check of the mixed-precision paths (the CPU test suite covers fp32 and bf16 only).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from pixelwise.train import config_from_dict, train
from pixelwise.train.config import apply_overrides
from pixelwise.train.recipes import QUICKSTART


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    precisions = ["fp32", "bf16"] + (["fp16"] if torch.device(args.device).type == "cuda" else [])
    print(f"{'precision':>9}  {'channels_last':>13}  {'images/s':>9}  {'last loss':>9}")
    for precision in precisions:
        for channels_last in (False, True):
            overrides = [f"train.device={args.device}", f"train.precision={precision}",
                         f"train.channels_last={channels_last}", f"train.steps={args.steps}",
                         f"train.batch_size={args.batch_size}", f"train.log_every={args.steps}",
                         f"train.checkpoint_every={args.steps}", f"eval.every={args.steps}",
                         "eval.plot_images=0", "train.progress=false"]
            config = config_from_dict(apply_overrides(QUICKSTART, overrides), "benchmark")
            with tempfile.TemporaryDirectory() as run_dir:
                train(config, run_dir)
                row = json.loads((Path(run_dir) / "metrics.jsonl").read_text().splitlines()[0])
            # The single logged row averages every step, the first (warm-up) included.
            print(f"{precision:>9}  {channels_last!s:>13}  {row['images_per_s']:9.1f}  {row['loss']:9.4f}")


if __name__ == "__main__":
    main()
