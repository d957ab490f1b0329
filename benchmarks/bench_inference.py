"""Inference speed side by side: the peer and every pixelwise path, interleaved rep by rep in one process.

    .venv/bin/python benchmarks/bench_inference.py [--threads 1 2] [--batch 1 8] [--reps 7] [--cases ...]
    python benchmarks/bench_inference.py --device cuda --batch 1 8

Cases (512x512 input; the peer first):
- deeplabv3_resnet50, deeplabv3_mobilenet_v3_large, fcn_resnet50, lraspp_mobilenet_v3_large: torchvision eager against
  ``pixelwise.from_torchvision`` of the same weights.
- deeplabv3plus_mobilenet_v2: segmentation_models_pytorch's DeepLabV3Plus(mobilenet_v2) against pixelwise
  configured to the same architecture (separable ASPP at rates 12/24/36, one separable decoder convolution);
  their multiply-adds are printed and must agree within 5%. Weights cannot be shared (the layers differ).
  deeplabv3plus_mobilenet_v2_default is pixelwise's own default configuration, timed against the same smp model.
- unet: pixelwise's U-Net, eager fp32 as the "peer".

Weights: each model is first trained for ``--train-steps`` steps on the synthetic shapes (the peer where
weights are shared, then converted), so that logits have realistic margins: with random weights the top two
classes are near ties and any rounding flips them. Agreement is the argmax against pixelwise eager fp32.

Variants: eager (fp32), fast_fp32 / fast_bf16 (/ fast_fp16 on CUDA): BatchNorm folded, channels-last, cast;
compile_fp32 / compile_bf16: torch.compile of the fast path (bf16 only on CUDA); onnxruntime (CPU, fp32) and openvino
(CPU, its default precision hint) when installed. Each row gives the median of ``--reps`` timed passes after
warm-up, images/s, the ratio against the peer's eager fp32, and the achieved multiply-adds per second
(MACs from FlopCounterMode) as a share of this machine's GEMM rate in that precision (benchmarks/machine_peak.py).
The load average is printed before and after each case, and the cores other processes keep busy (measured
while this one sleeps for a second): a case that starts with more than 0.5 of them is flagged.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_peak import QUIET_CORES, busy_cores, gemm_rate, load_average, synchronize  # noqa: E402

TORCHVISION_CASES = ["deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large", "fcn_resnet50", "lraspp_mobilenet_v3_large"]
CASES = [*TORCHVISION_CASES, "deeplabv3plus_mobilenet_v2",
         "deeplabv3plus_mobilenet_v2_default", "unet"]
NUM_CLASSES = 5  # the synthetic shapes' classes


class Unwrap(torch.nn.Module):
    """torchvision segmentation models return {"out": logits}; unwrap it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def brief_training(model: torch.nn.Module, steps: int, device: str, unwrap=lambda out: out) -> torch.nn.Module:
    """A few SGD steps on synthetic shapes (batch 4, 128x128) so that the logits have real margins."""
    from pixelwise.data.synthetic import SyntheticShapes
    from pixelwise.data.transforms import build_transforms

    data = SyntheticShapes("train", build_transforms(False), num_images=4 * max(steps, 1), image_size=128, seed=7)
    model = model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(steps):
        images, masks = zip(*(data[4 * step + i] for i in range(4)), strict=True)
        logits = unwrap(model(torch.stack(images).to(device)))
        loss = torch.nn.functional.cross_entropy(logits, torch.stack(masks).to(device), ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def build_case(case: str, train_steps: int, device: str) -> tuple[str, torch.nn.Module, torch.nn.Module]:
    """(peer name, peer model, pixelwise eager model), both in eval mode on ``device``."""
    import torchvision

    from pixelwise import create_model, from_torchvision

    torch.manual_seed(0)
    if case in TORCHVISION_CASES:
        peer = getattr(torchvision.models.segmentation, case)(weights=None, weights_backbone=None,
                                                              num_classes=NUM_CLASSES)
        peer = Unwrap(brief_training(peer, train_steps, device, lambda out: out["out"]))
        ours = from_torchvision(peer.model.cpu()).to(device).eval()
        return "torchvision", peer.to(device), ours
    if case.startswith("deeplabv3plus_mobilenet_v2"):
        import segmentation_models_pytorch as smp

        peer = brief_training(smp.DeepLabV3Plus("mobilenet_v2", encoder_weights=None, classes=NUM_CLASSES),
                              train_steps, device)
        options = {} if case.endswith("_default") else SMP_MATCHED
        ours = create_model("deeplabv3plus", NUM_CLASSES, backbone="mobilenet_v2", **options)
        return "smp", peer, brief_training(ours, train_steps, device)
    if case == "unet":
        ours = brief_training(create_model("unet", NUM_CLASSES, batch_norm=True), train_steps, device)
        return "own", ours, ours
    raise ValueError(f"unknown case {case!r}; choose from {CASES}")


# smp's DeepLabV3Plus: separable ASPP at rates 12/24/36 (output stride 16), 256 channels, and a decoder of one
# separable 3x3 convolution after the 48-channel low-level projection.
SMP_MATCHED = {"separable_aspp": True, "atrous_rates": (12, 24, 36), "decoder_convs": 1}


def multiply_adds(model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 2


def variants(model: torch.nn.Module, example: torch.Tensor, device: str, compile: bool) -> dict:
    """name -> (callable on the fp32 NCHW input, precision for the peak column)."""
    from pixelwise.infer.fast import optimize_for_cpu

    def fast(dtype, compile=False):
        module = optimize_for_cpu(model.cpu(), example.cpu(), dtype, compile=compile).to(device)
        model.to(device)
        return lambda x: module(x.to(dtype=dtype, memory_format=torch.channels_last))

    paths = {"eager": (model, "fp32"), "fast_fp32": (fast(torch.float32), "fp32"),
             "fast_bf16": (fast(torch.bfloat16), "bf16")}
    if compile:
        paths["compile_bf16"] = (fast(torch.bfloat16, compile=True), "bf16")
    if device.startswith("cuda"):
        paths["fast_fp16"] = (fast(torch.float16), "fp16")
        return paths
    if compile:
        paths["compile_fp32"] = (fast(torch.float32, compile=True), "fp32")
    try:
        from pixelwise.infer.export import as_numpy, export_onnx, onnx_session

        session = onnx_session(export_onnx(model.cpu()), threads=torch.get_num_threads())
        paths["onnxruntime"] = (lambda x: torch.from_numpy(session.run(None, {"image": as_numpy(x)})[0]), "fp32")
    except ImportError:
        print("  (onnxruntime not installed: no onnxruntime row)")
    try:
        from pixelwise.infer.openvino import OpenVINOForward

        openvino = OpenVINOForward(model.cpu(), threads=torch.get_num_threads())  # its own precision choice
        paths[f"openvino_{openvino.precision}"] = (openvino, openvino.precision)
    except ImportError:
        print("  (openvino not installed: no openvino row)")
    return paths


def run_case(case: str, args, peaks: dict) -> list[str]:
    """Every path of ``case`` at every batch size of ``args.batch``: markdown rows."""
    from pixelwise.data.synthetic import SyntheticShapes
    from pixelwise.data.transforms import build_transforms

    peer_name, peer, ours = build_case(case, args.train_steps, args.device)
    data = SyntheticShapes("val", build_transforms(False), num_images=max(args.batch), image_size=args.size, seed=11)
    inputs = torch.stack([data[i][0] for i in range(max(args.batch))]).to(args.device)
    macs, peer_macs = multiply_adds(ours, inputs[:1]), multiply_adds(peer, inputs[:1])
    paths = {"peer": (peer, "fp32"), **variants(ours, inputs[:1], args.device, case in args.compile_cases)}
    rows = []
    for batch in args.batch:
        before, others = load_average(), busy_cores()
        flag = "" if others <= QUIET_CORES else f" NOT QUIET ({others:.2f} cores busy elsewhere): do not quote"
        print(f"\n{case}, batch {batch}, {torch.get_num_threads()} threads: pixelwise {macs / 1e9:.2f} GMACs per "
              f"image, {peer_name} {peer_macs / 1e9:.2f} ({100 * (macs / peer_macs - 1):+.1f}%); "
              f"load average before {before:.2f}, cores busy elsewhere {others:.2f}{flag}")
        x = inputs[:batch]
        times: dict[str, list[float]] = {name: [] for name in paths}
        labels = {}
        with torch.inference_mode():
            for rep in range(args.reps + args.warmup):
                for name, (function, _) in paths.items():  # interleaved: every path once per rep
                    synchronize(args.device)
                    start = time.perf_counter()
                    logits = function(x)
                    synchronize(args.device)
                    if rep >= args.warmup:
                        times[name].append(time.perf_counter() - start)
                    labels[name] = logits.float().argmax(1).cpu()
        peer_seconds = statistics.median(times["peer"])
        for name, (_, precision) in paths.items():
            seconds = statistics.median(times[name])
            share = batch * (peer_macs if name == "peer" else macs) / seconds / 1e9 / peaks[precision]
            agreement = (labels[name] == labels["eager"]).float().mean().item()
            label = {"peer": f"{peer_name} eager", "eager": "pixelwise eager"}.get(name, name)
            rows.append(f"| {case} | {batch} | {torch.get_num_threads()} | {label} | {1000 * seconds:.1f} | "
                        f"{batch / seconds:.2f} | {peer_seconds / seconds:.2f}x | {100 * share:.0f}% {precision} | "
                        f"{100 * agreement:.2f}%{' (load)' if flag else ''} |")
            print(rows[-1], flush=True)
        print(f"load average after {load_average():.2f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count()])
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    parser.add_argument("--compile-cases", nargs="*", default=CASES, choices=CASES,
                        help="the cases that also get torch.compile rows (compiling takes a minute each); "
                             "given bare: none")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    print(f"torch {torch.__version__}, {args.size}x{args.size}, median of {args.reps} interleaved reps")
    header = ("| case | batch | threads | path | ms | images/s | vs peer | of GEMM peak | argmax agreement |\n"
              "|---|---|---|---|---|---|---|---|---|")
    rows = []
    for threads in [torch.get_num_threads()] if cuda else args.threads:
        torch.set_num_threads(threads)
        peaks = {p: gemm_rate(p, args.device) for p in (["fp32", "bf16", "fp16"] if cuda else ["fp32", "bf16"])}
        print(f"{threads} threads: GEMM peak " + ", ".join(f"{p} {r:.0f} GMAC/s" for p, r in peaks.items()))
        for case in args.cases:
            rows += run_case(case, args, peaks)
    print("\n" + header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
