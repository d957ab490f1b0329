"""The machine's limits: sustained matrix-multiply rate (fp32, bf16) and memory bandwidth.

    .venv/bin/python benchmarks/machine_peak.py [--threads 1 2] [--device cpu|cuda] [--json peak.json]

GEMM: ``torch.mm`` of two large square matrices (4096 on CPU, 8192 on CUDA), the best of the timed runs,
in GMAC/s (one multiply-add = 2 FLOP): the rate the machine sustains for a whole product of a second.
bf16 on CPUs with AMX or AVX512-BF16 runs on those units.
Bandwidth: a 512 MiB copy, counted as bytes read plus bytes written. The inference benchmark reads the
same functions, so its "% of peak" column divides by rates measured the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(function, device: str, runs: int, best: bool = False) -> float:
    """Median (or with ``best`` the shortest) seconds of ``runs`` calls after two warm-ups."""
    times = []
    for index in range(runs + 2):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        if index >= 2:
            times.append(time.perf_counter() - start)
    return min(times) if best else statistics.median(times)


def gemm_rate(dtype: str, device: str = "cpu", size: int | None = None, runs: int = 3) -> float:
    """Sustained GMAC/s of an n x n x n matrix product in ``dtype`` on the current thread count.

    On CPU the best of two libraries: ``torch.mm`` (MKL or oneDNN, by dtype) and the same product as a 1x1
    convolution, which oneDNN runs: MKL takes a slow path on some AMD CPUs, where convolutions then ran
    faster than "the peak" (more than 100% of it in the inference table)."""
    size = size or (8192 if device.startswith("cuda") else 4096)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=DTYPES[dtype])
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=DTYPES[dtype])
    seconds = timed(lambda: torch.mm(a, b), device, runs, best=True)
    if not device.startswith("cuda"):
        # (1, K, 64, N/64) channels-last input times (M, K, 1, 1) weights: an (N x K) @ (K x M) product.
        image = a.t().reshape(1, size, 64, size // 64).contiguous(memory_format=torch.channels_last)
        weight = b.reshape(size, size, 1, 1).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            seconds = min(seconds, timed(lambda: torch.nn.functional.conv2d(image, weight), device, runs, best=True))
    return size**3 / seconds / 1e9


def copy_bandwidth(device: str = "cpu", mib: int = 512, runs: int = 5) -> float:
    """GB/s of a large tensor copy, bytes read plus bytes written."""
    source = torch.ones(mib * 2**20 // 4, device=device)
    target = torch.empty_like(source)
    seconds = timed(lambda: target.copy_(source), device, runs)
    return 2 * source.nbytes / seconds / 1e9


def load_average() -> float:
    return os.getloadavg()[0]


def busy_cores(seconds: float = 1.0) -> float:
    """Cores kept busy by other processes: the machine's non-idle CPU time over ``seconds`` while this process
    sleeps. Unlike the load average, it does not count the benchmark's own work of the minute before."""
    def cpu_times() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle and iowait
        return sum(fields) - idle, sum(fields)

    busy_before, total_before = cpu_times()
    time.sleep(seconds)
    busy_after, total_after = cpu_times()
    return (os.cpu_count() or 1) * (busy_after - busy_before) / max(1, total_after - total_before)


QUIET_CORES = 0.5  # at most this many cores busy with other processes for a figure to be quoted


def machine_state(when: str) -> str:
    """One line for a benchmark's log: the load average and the cores other processes keep busy, flagged when
    the machine is not quiet enough for the figures that follow (or precede) to be quoted."""
    others = busy_cores()
    flag = "" if others <= QUIET_CORES else " NOT QUIET: do not quote"
    return f"load average {when} {load_average():.2f}, cores busy elsewhere {others:.2f}{flag}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count()])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    print(f"torch {torch.__version__}; load average before {load_average():.2f}")
    rows = []
    dtypes = ["fp32", "bf16"] + (["fp16"] if args.device.startswith("cuda") else [])
    for threads in args.threads if args.device == "cpu" else [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        row = {"device": args.device, "threads": threads, **{f"{d}_gmacs": gemm_rate(d, args.device) for d in dtypes},
               "copy_gbs": copy_bandwidth(args.device)}
        rows.append(row)
        rates = ", ".join(f"{d} GEMM {row[f'{d}_gmacs']:.0f} GMAC/s" for d in dtypes)
        print(f"{args.device}, {threads} thread(s): {rates}; copy {row['copy_gbs']:.1f} GB/s")
    print(f"load average after {load_average():.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
