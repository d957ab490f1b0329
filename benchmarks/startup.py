"""How fast the command line starts: ``pixelwise --help`` and ``pixelwise models``, medians of 5 fresh processes.

``--help`` imports no torch, torchvision or matplotlib (the commands import what they need when they run);
``models`` imports torch and torchvision and builds every model on the meta device to count its parameters.
Each run is a new process, as a user's shell starts it. Before and after, the load average and the cores
other processes keep busy are printed (``machine_peak.machine_state``: unlike the load average, that count
leaves out the benchmark's own processes), and the figures are flagged when the machine was not quiet.

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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_peak import machine_state  # noqa: E402

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
    print(f"{time.strftime('%Y-%m-%d')}, {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(machine_state("before"), flush=True)
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
    print(machine_state("after"))


if __name__ == "__main__":
    main()
