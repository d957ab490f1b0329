"""Peak memory of slide-mode inference on a large image.

    .venv/bin/python benchmarks/bench_large_image.py [--size 4096] [--model deeplabv3plus] [--backbone mobilenet_v2]

Runs ``Segmenter(mode="slide")`` (512 x 512 windows, stride 341) on one random size x size RGB image and
reports the wall time and the process's peak RSS (the goal: under 3 GB at 4096 x 4096). The window
scores are added into one (1, K, H, W) float32 buffer in place; nothing else is full-size float.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_peak import machine_state  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--model", default="deeplabv3plus")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(machine_state("before"), flush=True)

    from pixelwise import Segmenter, create_model

    torch.manual_seed(0)
    options = {"backbone": args.backbone} if args.backbone else {}
    model = create_model(args.model, args.num_classes, **options).eval()
    segmenter = Segmenter(model, device=args.device, precision=args.precision, mode="slide", fast=args.fast)
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    before = peak_rss_mb()
    start = time.perf_counter()
    labels = segmenter.predict(image)
    seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    print(f"{args.model}/{args.backbone} {args.num_classes} classes, {args.size}x{args.size}, slide 512/341, "
          f"{args.precision}{' fast' if args.fast else ''}, torch threads {torch.get_num_threads()}")
    print(f"labels {labels.shape} {labels.dtype}; {seconds:.1f} s; peak RSS before predict {before:.0f} MB, "
          f"after {peak:.0f} MB ({'under' if peak < 3072 else 'OVER'} the 3 GB goal)")
    print(machine_state("after"))


if __name__ == "__main__":
    main()
