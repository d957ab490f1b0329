"""``pixelwise eval``: score a saved model over a whole split, as a per-class table and optional JSON.

Under ``torchrun`` each process scores its shard of the split; rank 0 prints and writes the summed result.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pixelwise.commands import positive_float, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a trained model (mIoU, per-class IoU, accuracy, Dice)")
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="a run directory (latest weights), its best/ directory, or any saved model directory")
    parser.add_argument("--data", help="NAME:ROOT, or 'synthetic' (default: the data set the run trained on)")
    parser.add_argument("--split", help="split to evaluate (default: the run's validation split)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a loader option, value in YAML (e.g. 'label_map={255: 1}'); repeatable. num_classes "
                             "defaults to the model's")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the scores to this JSON file")
    parser.add_argument("--batch-size", type=positive_int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--crf", action="store_true",
                        help="refine predictions with the dense CRF (pixelwise.crf, with the run's crf parameters)")
    parser.add_argument("--scales", type=positive_float, nargs="+", default=[1.0], metavar="S",
                        help="test-time augmentation: average the softmax over the image resized by each scale")
    parser.add_argument("--flip", action="store_true",
                        help="test-time augmentation: also average over the left-right mirrored image")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pixelwise.fileio import atomic_write, check_output_file, strict_json
    from pixelwise.train import distributed
    from pixelwise.train.config import parse_assignment
    from pixelwise.train.evaluate import evaluate_checkpoint, format_table

    if args.json is not None:
        check_output_file(args.json, "--json", (".json",))
    options = dict(parse_assignment(pair, "--option") for pair in args.option)
    try:
        scores, class_names = evaluate_checkpoint(args.checkpoint, args.data, args.split, args.batch_size,
                                                  args.device, args.crf, args.scales, args.flip, options)
        main = distributed.is_main_process()
    finally:
        distributed.shutdown()
    if not main:
        return 0
    print(format_table(scores, class_names))
    if args.json is not None:
        with atomic_write(args.json, "w") as handle:
            json.dump(strict_json({**scores, "class_names": class_names}), handle, indent=2, allow_nan=False)
    return 0
