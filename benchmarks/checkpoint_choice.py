"""How much does the choice of checkpoint move a run's validation score? Raw weights against their EMA.

    .venv/bin/python benchmarks/checkpoint_choice.py runs/camvid-unet-2core [--data camvid:../shared/data/camvid]

A run keeps its last few training states (``state/step-*``), each with the raw weights and, when the run
averages them, their exponential moving average. This scores both at every kept step on the run's validation
split, as ``pixelwise eval`` would score them. How far neighbouring checkpoints of one run disagree on the
same validation images bounds what one run can show: two recipes closer than that are not told apart, and
choosing the best of several checkpoints on val can flatter the val score by up to as much (issue #18's
val-test gap).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a training run directory (it has state/ and config.json)")
    parser.add_argument("--data", help="NAME:ROOT (default: the data set the run trained on)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from pixelwise.checkpoint import read_card, save_model
    from pixelwise.models import create_model
    from pixelwise.train.evaluate import evaluate_checkpoint
    from pixelwise.train.state import STATE_DIR, read_checkpoint

    card = read_card(args.run_dir)
    stems = sorted(path.with_suffix("") for path in (args.run_dir / STATE_DIR).glob("step-*.json"))
    if not stems:
        sys.exit(f"{args.run_dir / STATE_DIR}: no training states (step-*.json) to score")
    print(f"{args.run_dir}: {card.name} {card.options}; mIoU and pixel accuracy on the validation split")
    for stem in stems:
        state = read_checkpoint(stem)
        # The EMA is a torch AveragedModel: the averaged model's entries under "module.", plus its counter.
        weights = {"raw": state["model"]}
        if "ema" in state:
            weights["ema"] = {key.removeprefix("module."): value for key, value in state["ema"].items()
                              if key.startswith("module.")}
        for kind, state_dict in weights.items():
            model = create_model(card.name, card.num_classes, **card.options)
            model.load_state_dict(state_dict)
            with tempfile.TemporaryDirectory() as directory:
                save_model(model, directory, card=card)
                scores, _ = evaluate_checkpoint(directory, args.data, device=args.device)
            print(f"{stem.name} {kind:>3}: mIoU {100 * scores['miou']:.2f}, "
                  f"pixel accuracy {100 * scores['pixel_accuracy']:.2f}", flush=True)


if __name__ == "__main__":
    main()
