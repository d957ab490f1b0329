"""How fast the command line starts: ``pixelwise --help`` and ``pixelwise models``, medians of 5 fresh processes.

``--help`` imports no torch, torchvision or matplotlib (the commands import what they need when they run);
``models`` imports torch and torchvision and builds every model on the meta device to count its parameters.
Each run is a new process, as a user's shell starts it; the load average is printed before and after, and
the figures are flagged as not quotable when the machine was busy: a load above 0.5 before, or above 1.5 after
(the benchmark's own processes keep one core busy, which the 1-minute average counts).

    python benchmarks/startup.py [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Goals of issue 14, on the 2-core machine.
GOALS = {"--help": 0.5, "models": 3.0}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def heavy_modules_after_help() -> list[str]:
    """The heavy packages that ``pixelwise --help`` imports (should be none)."""
    probe = ("import sys\nfrom pixelwise.cli import build_parser\nbuild_parser()\n"
             "print(' '.join(m for m in ('torch', 'torchvision', 'matplotlib', 'numpy', 'PIL') if m in sys.modules))")
    return subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    executable = [sys.executable, "-m", "pixelwise"]
    load_before = os.getloadavg()[0]
    print(f"{time.strftime('%Y-%m-%d')}, {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"load average before: {load_before:.2f}")
    print(f"heavy modules imported by --help: {heavy_modules_after_help() or 'none'}")
    results = {}
    for name in GOALS:
        command = executable + ([name] if name != "--help" else ["--help"])
        seconds(command)  # warm the file cache
        times = [seconds(command) for _ in range(args.reps)]
        results[name] = statistics.median(times)
        print(f"pixelwise {name:<7} median {results[name]:.2f} s over {args.reps} runs "
              f"(min {min(times):.2f}, max {max(times):.2f}); goal < {GOALS[name]} s: "
              f"{'met' if results[name] < GOALS[name] else 'MISSED'}")
    load_after = os.getloadavg()[0]
    print(f"load average after: {load_after:.2f}")
    if load_before > 0.5 or load_after > 1.5:
        print("the machine was busy (load average > 0.5 before or > 1.5 after): do not quote these figures")


if __name__ == "__main__":
    main()
