"""Dense CRF speed: pixelwise.crf.dense_crf against pydensecrf, side by side on the same inputs.

CPU (default): CamVid val images (480x360, 11 labels), 5 mean-field iterations, lattice build included,
pydensecrf (single-threaded by construction) and pixelwise with 1 thread and with all cores, interleaved per
image so that a noisy machine affects both alike. Prints per-image medians, spread, ratios and peak memory,
and the agreement of the labels.

    python benchmarks/bench_crf.py                      # 10 images, 3 repeats each
    python benchmarks/bench_crf.py --images 101         # all of CamVid val

CUDA: images/s at 512x512, 21 labels, 10 iterations, batched (synthetic inputs; no pydensecrf):

    python benchmarks/bench_crf.py --device cuda --batch 8
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

# torch's OpenMP threads spin while they wait; on a shared VM whose cores are busy that collapses the
# multi-threaded timings (seconds instead of milliseconds), so let them sleep unless told otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_peak import busy_cores, load_average  # noqa: E402

from pixelwise.crf import dense_crf, lattice_compiled  # noqa: E402
from pixelwise.crf.kernels import pixel_features  # noqa: E402
from pixelwise.crf.lattice import PermutohedralLattice  # noqa: E402
from pixelwise.crf.reference import noisy_probabilities, pydensecrf_available, pydensecrf_dense_crf  # noqa: E402

CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"


def summary(times: list[float]) -> str:
    ms = sorted(t * 1e3 for t in times)
    q1, q3 = np.percentile(ms, [25, 75])
    return f"median {statistics.median(ms):7.1f} ms  (IQR {q1:.1f}-{q3:.1f}, min {ms[0]:.1f})"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_camvid(count: int):
    from PIL import Image

    names = sorted(p.name for p in (CAMVID / "val").glob("*.png"))[:count]
    for name in names:
        image = np.array(Image.open(CAMVID / "val" / name).convert("RGB"))
        labels = np.array(Image.open(CAMVID / "valannot" / name))
        yield name, image, labels


def bench_cpu(args) -> None:
    if not (CAMVID / "val").is_dir():
        sys.exit(f"CamVid not found at {CAMVID}")
    have_reference = pydensecrf_available()
    if not have_reference:
        print("pydensecrf not installed (pip install pydensecrf2): timing pixelwise only")
    cores = os.cpu_count() or 1
    params = dict(iterations=args.iterations)
    times: dict[str, list[float]] = {"pydensecrf": [], "pixelwise 1 thread": [], f"pixelwise {cores} threads": []}
    per_image_ratio: dict[str, list[float]] = {k: [] for k in times if k != "pydensecrf"}
    agreement, difference = [], []
    build = "compiled hash table (numba)" if lattice_compiled.available() else "sort-based torch build (no numba)"
    print(f"torch {torch.__version__}; lattice: {build}; load average before {load_average():.2f}, cores busy "
          f"elsewhere {busy_cores():.2f}")
    for name, image, labels in load_camvid(args.images):
        probs = noisy_probabilities(labels, 11)
        probs_t = torch.from_numpy(probs)
        image_t = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        best: dict[str, float] = {}
        if not agreement:  # compile / warm up every path once, untimed
            dense_crf(probs_t, image_t, **params)
        for _ in range(args.repeats):
            for label in times:
                if label == "pydensecrf":
                    if not have_reference:
                        continue
                    start = time.perf_counter()
                    reference = pydensecrf_dense_crf(probs, image, **params)
                else:
                    torch.set_num_threads(1 if label == "pixelwise 1 thread" else cores)
                    start = time.perf_counter()
                    ours = dense_crf(probs_t, image_t, **params)
                elapsed = time.perf_counter() - start
                times[label].append(elapsed)
                best[label] = min(best.get(label, elapsed), elapsed)
        if have_reference:
            for label in per_image_ratio:
                per_image_ratio[label].append(best["pydensecrf"] / best[label])
            agreement.append((ours.numpy().argmax(0) == reference.argmax(0)).mean())
            difference.append(np.abs(ours.numpy() - reference).mean())
        print(f"{name}: " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in best.items()), flush=True)

    print(f"\n{len(agreement) or args.images} images 480x360, 11 labels, {args.iterations} iterations, "
          f"lattice build included, {args.repeats} repeats each, interleaved")
    for label, values in times.items():
        if values:
            print(f"  {label:22s} {summary(values)}")
    if have_reference:
        for label, ratios in per_image_ratio.items():
            print(f"  speed-up {label:13s} median {statistics.median(ratios):.2f}x "
                  f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x)  [pydensecrf time / pixelwise time]")
        print(f"  argmax agreement with pydensecrf: min {min(agreement):.6f}, mean {np.mean(agreement):.6f}")
        print(f"  mean |p - p_pydensecrf|: mean {np.mean(difference):.2e}, max {max(difference):.2e}")
    print(f"  peak RSS of the process {peak_rss_mib():.0f} MiB; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    profile_last_image(image_t, probs_t, params)
    print(f"load average after {load_average():.2f}, cores busy elsewhere {busy_cores():.2f}")


def profile_last_image(image: torch.Tensor, probs: torch.Tensor, params: dict) -> None:
    """Where pixelwise's time goes on one thread: the bilateral lattice's build against the whole call."""
    torch.set_num_threads(1)
    height, width = image.shape[-2:]
    features = pixel_features(1, height, width, 80.0, image[None], 13.0)
    builds, calls = [], []
    for _ in range(5):
        start = time.perf_counter()
        PermutohedralLattice(features)
        builds.append(time.perf_counter() - start)
        start = time.perf_counter()
        dense_crf(probs, image, **params)
        calls.append(time.perf_counter() - start)
    build, call = statistics.median(builds), statistics.median(calls)
    print(f"  1 thread, last image: bilateral lattice build {build * 1e3:.1f} ms of {call * 1e3:.1f} ms per call; "
          f"the rest is the mean field (sparse splat/blur/slice products, softmax): {(call - build) * 1e3:.1f} ms")


def bench_cuda(args) -> None:
    if not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device")
    size, classes, batch = args.size, args.classes, args.batch
    # Smooth random scenes (colour blobs plus noise, as photographs are rather than white noise) and
    # probabilities that follow them loosely.
    generator = torch.Generator(device="cuda").manual_seed(0)
    blobs = torch.rand(batch, 3, size // 32, size // 32, device="cuda", generator=generator)
    colours = torch.nn.functional.interpolate(blobs, size=(size, size), mode="bilinear") * 255
    noise = torch.randn(batch, 3, size, size, device="cuda", generator=generator) * 6
    image = (colours + noise).clamp(0, 255).to(torch.uint8)
    logits = torch.randn(batch, classes, size // 16, size // 16, device="cuda", generator=generator) * 3
    logits = torch.nn.functional.interpolate(logits, size=(size, size), mode="bilinear")
    logits = logits + torch.randn(logits.shape, device="cuda", generator=generator)
    probs = torch.softmax(logits, 1)
    dense_crf(probs, image, iterations=args.iterations)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    deadline = time.perf_counter() + args.seconds
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < args.repeats):
        start = time.perf_counter()
        dense_crf(probs, image, iterations=args.iterations)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"{torch.cuda.get_device_name()}: batch {batch} x {size}x{size}, {classes} labels, "
          f"{args.iterations} iterations, lattice build included")
    print(f"  per batch {summary(times)}")
    print(f"  {batch / median:.1f} images/s; peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--images", type=int, default=10, help="CPU: CamVid val images to use")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per image (CPU) or at most (CUDA)")
    parser.add_argument("--iterations", type=int, default=None, help="default 5 on CPU, 10 on CUDA")
    parser.add_argument("--batch", type=int, default=8, help="CUDA: images per batch")
    parser.add_argument("--size", type=int, default=512, help="CUDA: image side")
    parser.add_argument("--classes", type=int, default=21, help="CUDA: labels")
    parser.add_argument("--seconds", type=float, default=20.0, help="CUDA: time budget for the timed runs")
    args = parser.parse_args()
    if args.device == "cuda":
        args.iterations = args.iterations or 10
        args.repeats = max(args.repeats, 20)
        bench_cuda(args)
    else:
        args.iterations = args.iterations or 5
        bench_cpu(args)


if __name__ == "__main__":
    main()
