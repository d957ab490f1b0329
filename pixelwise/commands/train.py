"""``pixelwise train``: train a YAML recipe into a run directory, or resume one.

The same command runs under ``torchrun`` (one process per device, see docs/distributed.md): the processes
join their group first, so that rank 0 alone names, checks and fills the run directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pixelwise.train.config import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a model from a YAML recipe (see configs/)")
    parser.add_argument("--config", type=Path, help="the YAML recipe")
    parser.add_argument("--out", type=Path, help="run directory (default runs/<config name>-<time>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, dotted for nested keys (e.g. train.steps=100); repeatable")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue RUN_DIR from its latest checkpoint, with the config it was started with")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pixelwise.train import distributed
    from pixelwise.train.config import load_config
    from pixelwise.train.trainer import CONFIG_YAML

    if args.resume is not None:
        if args.config is not None or args.overrides or args.out is not None:
            raise ValueError("--resume continues a run exactly as configured: drop --config, --set and --out")
        config = load_config(args.resume / CONFIG_YAML)
    else:
        if args.config is None:
            raise ValueError("--config FILE (or --resume RUN_DIR) is required")
        config = load_config(args.config, args.overrides)
    distributed.setup(config.train.device, config.train.dist_timeout)
    try:
        return train_and_report(args, config)
    finally:
        distributed.shutdown()


def train_and_report(args: argparse.Namespace, config: Config) -> int:
    from pixelwise.checkpoint import read_card
    from pixelwise.fileio import check_output_dir
    from pixelwise.train import distributed
    from pixelwise.train.evaluate import format_table
    from pixelwise.train.trainer import default_run_dir, train

    main = distributed.is_main_process()
    if args.resume is not None:
        run_dir = args.resume
    else:
        # train() itself refuses a folder that is not empty, on rank 0, before any work.
        run_dir = check_output_dir(args.out or default_run_dir(config.name), "--out")
        run_dir = distributed.from_main_process(run_dir)  # one clock decides the default name
    if main:
        print(f"run directory: {run_dir}")
    result = train(config, run_dir, resume=args.resume is not None)
    if main:
        if result.scores:
            print(format_table(result.scores, read_card(run_dir).classes))
        print(f"best validation mIoU {result.best_miou:.4f}; weights in {run_dir} (best in {run_dir / 'best'})")
    return 0
