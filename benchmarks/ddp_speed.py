"""Training throughput of 1 process against N processes under torchrun, on one recipe and one global batch.

    python benchmarks/ddp_speed.py                      # CPU: 1 process x 1 and x 2 threads, 2 processes x 1
    python benchmarks/ddp_speed.py --device cuda --processes 1 2 --threads 4   # one process per GPU

Each configuration trains the quickstart recipe (synthetic 64x64 shapes, small U-Net with BatchNorm) with the
same global batch (``--batch-size`` split evenly over the processes) through the real command, ``pixelwise
train`` for one process and ``torchrun -m pixelwise train`` for several. The rate of one run is the median of
its logged windows' images/s (over all processes), the first window (warm-up) left out; the table reports
the median over ``--repeats`` runs, in alternating order so a noisy neighbour hurts every row alike.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from machine_peak import machine_state

from pixelwise.train.config import apply_overrides
from pixelwise.train.recipes import QUICKSTART

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(processes: int, recipe: Path, out: Path) -> list[str]:
    train = ["-m", "pixelwise", "train", "--config", str(recipe), "--out", str(out)]
    if processes == 1:
        return [sys.executable, *train]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *train]


def images_per_second(processes: int, threads: int, args: argparse.Namespace) -> float:
    """One run's median images/s over its logged windows after the first."""
    overrides = [f"train.device={args.device}", f"train.steps={args.steps}", f"train.log_every={args.log_every}",
                 f"train.batch_size={args.batch_size // processes}", f"train.threads={threads}",
                 f"train.checkpoint_every={args.steps}", f"eval.every={args.steps}", "eval.plot_images=0",
                 "train.progress=false"]
    with tempfile.TemporaryDirectory() as scratch:
        recipe = Path(scratch) / "recipe.yaml"
        recipe.write_text(json.dumps(apply_overrides(QUICKSTART, overrides)))
        environment = {**os.environ, "OMP_NUM_THREADS": str(threads),
                       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        subprocess.run(command(processes, recipe, Path(scratch) / "run"), env=environment, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        rows = [json.loads(line) for line in (Path(scratch) / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = [row["images_per_s"] for row in rows if "images_per_s" in row][1:]
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (one GPU per process)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch, split over the processes")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine_state("before"), flush=True)
    # On a CPU, one process with as many threads as the processes together is the fair single-process rival.
    setups = [(processes, args.threads) for processes in args.processes]
    if args.device == "cpu" and max(args.processes) > 1:
        setups.insert(1, (1, max(args.processes) * args.threads))
    for processes, _ in setups:
        if args.batch_size % processes:
            parser.error(f"--batch-size {args.batch_size} does not split over {processes} processes")
    rates: dict[tuple[int, int], list[float]] = {setup: [] for setup in setups}
    for repeat in range(args.repeats):
        for setup in setups if repeat % 2 == 0 else reversed(setups):
            rates[setup].append(images_per_second(*setup, args))
    baseline = statistics.median(rates[setups[0]])
    print(f"{'processes':>9}  {'threads each':>12}  {'images/s (median)':>17}  {'runs':<24}  {'vs first row':>12}")
    for (processes, threads), values in rates.items():
        median = statistics.median(values)
        runs = " ".join(f"{value:.1f}" for value in values)
        print(f"{processes:>9}  {threads:>12}  {median:17.1f}  {runs:<24}  {median / baseline:11.2f}x")
    print(machine_state("after"))


if __name__ == "__main__":
    main()
