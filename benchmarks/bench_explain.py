"""Wall time of the lecture gallery (``pixelwise explain``, every topic) on the CPU, topic by topic.

Prints each topic's seconds, the total, torch's thread count and the load average before and after, so that a
time measured on a shared machine can be judged. The README records the result on the 2-core CPU.

    python benchmarks/bench_explain.py                      # all topics, into a temporary folder
    python benchmarks/bench_explain.py --threads 1 --out /tmp/lecture aspp upsampling
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

# torch's OpenMP threads spin while they wait; on a shared VM whose cores are busy that collapses the
# multi-threaded timings, so let them sleep unless told otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pixelwise.explain.gallery import run_gallery  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topics", nargs="*", help="topics to time (default: all)")
    parser.add_argument("--out", help="gallery folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--data", help="a data set for the topics that take one, e.g. camvid:../shared/data/camvid")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pixelwise-explain-") as scratch:
        seconds = run_gallery(args.topics, args.out or scratch, data=args.data, progress=False)
    load_after = os.getloadavg()
    width = max(len(name) for name in seconds)
    for name, value in seconds.items():
        print(f"{name:<{width}}  {value:7.1f} s")
    print(f"{'total':<{width}}  {sum(seconds.values()):7.1f} s")
    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
          f"load average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")


if __name__ == "__main__":
    main()
