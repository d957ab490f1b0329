"""``pixelwise quickstart``: train a small U-Net on the built-in synthetic shapes, then evaluate it.

No download, a few minutes on a laptop CPU: the whole pipeline (data, augmentation, training, checkpoint,
evaluation, plots) end to end. The recipe is ``pixelwise.train.recipes.QUICKSTART``
(mirrored in ``configs/quickstart.yaml``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("quickstart", help="train and evaluate a small U-Net on synthetic shapes")
    parser.add_argument("--out", type=Path, help="run directory (default runs/quickstart-<time>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. train.steps=50; repeatable")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pixelwise.fileio import check_output_dir
    from pixelwise.train.config import apply_overrides, config_from_dict
    from pixelwise.train.evaluate import evaluate_checkpoint, format_table
    from pixelwise.train.recipes import QUICKSTART
    from pixelwise.train.trainer import default_run_dir, train

    start = time.perf_counter()
    config = config_from_dict(apply_overrides(QUICKSTART, args.overrides), "quickstart recipe")
    run_dir = check_output_dir(args.out or default_run_dir("quickstart"), "--out")
    print(f"training {config.model.name} on synthetic shapes for {config.train.steps} steps into {run_dir}")
    train(config, run_dir)
    scores, class_names = evaluate_checkpoint(run_dir, batch_size=config.eval.batch_size)
    print(f"\nvalidation split ({config.data.val_split}), model reloaded from {run_dir}:")
    print(format_table(scores, class_names))
    print(f"mIoU {scores['miou']:.4f} in {time.perf_counter() - start:.0f} s; plots: {run_dir}/*.png")
    return 0
