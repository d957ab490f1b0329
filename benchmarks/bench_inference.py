"""Fast CPU path vs eager PyTorch: images/s, peak memory and argmax agreement at 512 x 512.

    .venv/bin/python benchmarks/bench_inference.py [--runs 5] [--size 512] [--threads 2] [--device cpu]

Cases (same architecture, identical random weights on both sides unless said otherwise):
- deeplabv3_resnet50: torchvision eager vs ``pixelwise.from_torchvision`` of the same model, fast path.
- unet: pixelwise eager vs the fast path.
- deeplabv3plus mobilenet_v2 / resnet50: segmentation_models_pytorch eager (encoder_weights=None) vs the
  pixelwise fast path. The two implementations differ in details (smp's decoder and encoder cuts), so
  their weights cannot be shared: the speed is compared, and agreement is against pixelwise eager fp32.

Each (case, variant) runs in its own subprocess so that its peak RSS is its own. Timing: median of
``--runs`` forward passes after two warm-ups. segmentation-models-pytorch is a benchmark-only dependency.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NUM_CLASSES = 21
CASES = {
    "deeplabv3_resnet50": ("torchvision", "fast_fp32", "fast_bf16"),
    "unet": ("eager", "fast_fp32", "fast_bf16"),
    "deeplabv3plus_mobilenet_v2": ("smp", "eager", "fast_fp32", "fast_bf16"),
    "deeplabv3plus_resnet50": ("smp", "eager", "fast_fp32", "fast_bf16"),
}


def build(case: str, variant: str) -> tuple[torch.nn.Module, torch.dtype, bool]:
    """(model, input dtype, channels_last) for one side of the comparison; weights seeded identically."""
    from pixelwise import create_model, from_torchvision
    from pixelwise.infer.fast import optimize_for_cpu

    torch.manual_seed(0)
    if case == "deeplabv3_resnet50":
        import torchvision

        reference = torchvision.models.segmentation.deeplabv3_resnet50(
            weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=False).eval()
        randomize_batchnorm(reference)
        if variant == "torchvision":
            return TorchvisionOut(reference), torch.float32, False
        model = from_torchvision(reference)
    elif variant == "smp":
        import segmentation_models_pytorch as smp

        encoder = case.removeprefix("deeplabv3plus_")
        model = smp.DeepLabV3Plus(encoder, encoder_weights=None, classes=NUM_CLASSES)
        return randomize_batchnorm(model), torch.float32, False
    elif case == "unet":
        model = create_model("unet", NUM_CLASSES, batch_norm=True)
    else:
        model = create_model("deeplabv3plus", NUM_CLASSES, backbone=case.removeprefix("deeplabv3plus_"))
    model = randomize_batchnorm(model.eval())
    if variant in ("eager", "torchvision"):
        return model, torch.float32, False
    dtype = torch.bfloat16 if variant == "fast_bf16" else torch.float32
    return optimize_for_cpu(model, torch.randn(1, 3, 64, 64), dtype), dtype, True


class TorchvisionOut(torch.nn.Module):
    """torchvision segmentation models return {"out": logits}; unwrap it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def randomize_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics, seeded, so folding has something to fold."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
    return model.eval()


def measure(case: str, variant: str, size: int, runs: int, device: str, labels_path: str) -> dict:
    model, dtype, channels_last = build(case, variant)
    model = model.to(device)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2)).to(device)
    x = x.to(dtype=dtype, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    times = []
    with torch.inference_mode():
        for index in range(runs + 2):
            start = time.perf_counter()
            logits = model(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if index >= 2:
                times.append(time.perf_counter() - start)
    np.save(labels_path, logits.float().argmax(1).cpu().numpy())
    seconds = statistics.median(times)
    return {"case": case, "variant": variant, "median_s": seconds, "images_per_s": 1 / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--one", nargs=3, metavar=("CASE", "VARIANT", "LABELS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.size, args.runs, args.device, args.one[2])))
        return
    print(f"torch {torch.__version__}, {args.threads} threads, {args.size}x{args.size}, median of {args.runs}")
    print("| case | variant | images/s | speed-up | peak RSS (MB) | argmax agreement |")
    print("|---|---|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for case in args.cases:
            results = {}
            for variant in CASES[case]:
                labels = os.path.join(scratch, f"{case}-{variant}.npy")
                command = [sys.executable, __file__, "--one", case, variant, labels, "--runs", str(args.runs),
                           "--size", str(args.size), "--threads", str(args.threads), "--device", args.device]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                results[variant] = json.loads(output.strip().splitlines()[-1])
                results[variant]["labels"] = np.load(labels)
            baseline_name = CASES[case][0]
            reference_name = "eager" if "eager" in results else baseline_name
            for variant, result in results.items():
                speedup = result["images_per_s"] / results[baseline_name]["images_per_s"]
                agreement = (result["labels"] == results[reference_name]["labels"]).mean()
                agrees = "n/a (other weights)" if variant == "smp" else f"{100 * agreement:.3f}% vs {reference_name}"
                row = (f"| {case} | {variant} | {result['images_per_s']:.2f} | {speedup:.2f}x vs {baseline_name} | "
                       f"{result['peak_rss_mb']:.0f} | {agrees} |")
                rows.append(row)
                print(row, flush=True)


if __name__ == "__main__":
    main()
