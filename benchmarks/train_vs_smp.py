"""Training throughput on CamVid: pixelwise's DeepLabv3+ MobileNetV2 against segmentation_models_pytorch's.

    python benchmarks/train_vs_smp.py --device cuda --data .camvid_jpeg [--batch 16] [--steps 30]

The batches are the CamVid recipe's (configs/camvid/deeplabv3plus_mobilenetv2.yaml: 352x480 crops, scales
0.5-2, flips), cut on the device from decoded images (``data.in_memory``); each step fetches one batch and
trains every model on it in turn: smp ``DeepLabV3Plus("mobilenet_v2")``, pixelwise configured to smp's
architecture (multiply-adds printed, within 5%), and the recipe's own model. Same optimizer (SGD, the
recipe's settings), loss (cross-entropy, median-frequency weights), precision and memory format for all.
images/s with data = batch / (fetch + step): the in-memory batches are cut synchronously, so the fetch
time is what the step waits for. The loader row times the per-image DataLoader alone (``--workers``
processes, no model), the path without ``data.in_memory``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from itertools import islice
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_inference import SMP_MATCHED, multiply_adds  # noqa: E402
from machine_peak import load_average, synchronize  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "camvid" / "deeplabv3plus_mobilenetv2.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", default="../shared/data/camvid", help="CamVid root (SegNet layout)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=8, help="loader processes of the per-image path")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()

    import segmentation_models_pytorch as smp
    from torch.utils.data import DataLoader

    from pixelwise.models import create_model
    from pixelwise.train.config import load_config
    from pixelwise.train.losses import SegmentationLoss
    from pixelwise.train.runtime import autocast
    from pixelwise.train.sampling import SampleStream, SeededSamples
    from pixelwise.train.schedules import build_optimizer
    from pixelwise.train.trainer import build_datasets, class_weights, in_memory_batches

    device = torch.device(args.device)
    overrides = [f"data.root={args.data}", f"train.batch_size={args.batch}", f"data.num_workers={args.workers}",
                 "model.options.pretrained_backbone=false"]
    config = load_config(RECIPE, overrides)
    train_set = build_datasets(config, train_transforms=False)[0]
    per_image_set = build_datasets(config)[0]
    num_classes = train_set.num_classes
    print(f"torch {torch.__version__} on {device}; batch {args.batch}, {args.precision}, channels_last "
          f"{args.channels_last}; load average before {load_average():.2f}")

    # The per-image path alone: how many images/s the DataLoader delivers with no model to feed.
    loader = DataLoader(SeededSamples(per_image_set), batch_size=args.batch, sampler=SampleStream(len(train_set), 0),
                        num_workers=args.workers, pin_memory=device.type == "cuda")
    batches = iter(loader)
    next(batches)
    start = time.perf_counter()
    for images, _ in islice(batches, args.steps):
        images.to(device, non_blocking=True)
    synchronize(args.device)
    loader_rate = args.steps * args.batch / (time.perf_counter() - start)
    del batches, loader

    torch.manual_seed(0)
    models = {
        "smp DeepLabV3Plus(mobilenet_v2)": smp.DeepLabV3Plus("mobilenet_v2", encoder_weights=None, classes=num_classes),
        "pixelwise, smp's architecture": create_model("deeplabv3plus", num_classes, backbone="mobilenet_v2",
                                                      **SMP_MATCHED),
        "pixelwise, the recipe's model": create_model("deeplabv3plus", num_classes, **config.model.options),
    }
    example = torch.randn(1, 3, 352, 480)
    criterion = SegmentationLoss(config.loss, class_weights(config, num_classes), train_set.ignore_index).to(device)
    state = {}
    for name, model in models.items():
        macs = multiply_adds(model.eval(), example)
        model = model.to(device).train()
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        state[name] = (model, build_optimizer(model, config.optim), [])
        print(f"{name}: {macs / 1e9:.2f} GMACs per 352x480 crop, "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")

    batches = in_memory_batches(config, train_set, SampleStream(len(train_set), 0), device)
    fetch_times = []
    for step in range(args.warmup + args.steps):
        synchronize(args.device)
        start = time.perf_counter()
        images, masks = next(batches)
        if args.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        synchronize(args.device)
        if step >= args.warmup:
            fetch_times.append(time.perf_counter() - start)
        for model, optimizer, times in state.values():  # interleaved: every model on the same batch
            synchronize(args.device)
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, args.precision):
                loss = criterion(model(images), masks)
            loss.backward()
            optimizer.step()
            synchronize(args.device)
            if step >= args.warmup:
                times.append(time.perf_counter() - start)
    fetch = statistics.median(fetch_times)
    print(f"load average after {load_average():.2f}")
    print("\n| model | step ms (median) | images/s, step only | images/s with data | vs smp |\n|---|---|---|---|---|")
    smp_rate = None
    for name, (_, _, times) in state.items():
        step = statistics.median(times)
        rate = args.batch / (fetch + step)
        smp_rate = smp_rate or rate
        print(f"| {name} | {1000 * step:.1f} | {args.batch / step:.0f} | {rate:.0f} | {rate / smp_rate:.2f}x |")
    print(f"\nin-memory batch cut on {device}: {1000 * fetch:.1f} ms per batch of {args.batch} "
          f"({args.batch / fetch:.0f} images/s); per-image DataLoader with {args.workers} workers, no model: "
          f"{loader_rate:.0f} images/s")


if __name__ == "__main__":
    main()
