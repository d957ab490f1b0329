"""Load test of ``pixelwise serve`` on loopback: concurrent clients for a bounded time.

    .venv/bin/python benchmarks/bench_serve_load.py [--clients 32] [--seconds 60] [--max-requests 100000]

Saves a small U-Net in a temporary run directory, starts ``python -m pixelwise serve`` on a free
127.0.0.1 port in a subprocess, warms it up with a few requests, then runs ``--clients`` threads that
POST a 256 x 256 PNG to /v1/segment until ``--seconds`` pass or ``--max-requests`` are sent. Reports
requests, errors (any non-200), p50/p99 latency and the server's RSS before and after the load.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_peak import machine_state  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    print(machine_state("before"), flush=True)

    import torch

    from pixelwise import create_model, save_model
    from pixelwise.serve.background import free_port

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)).save(
        buffer, format="PNG")
    payload = buffer.getvalue()
    with tempfile.TemporaryDirectory() as run_dir:
        torch.manual_seed(0)
        save_model(create_model("unet", 5, base_channels=16, depth=4), run_dir)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "pixelwise", "serve", "--checkpoint", run_dir,
                                   "--port", str(port)], cwd=Path(__file__).resolve().parents[1],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    httpx.get(f"{url}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            for _ in range(5):  # warm-up: first inferences allocate the model's working memory
                httpx.post(f"{url}/v1/segment", files={"image": ("p.png", payload)}, timeout=60).raise_for_status()
            before = rss_mb(server.pid)
            latencies: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()
            deadline = time.monotonic() + args.seconds

            def client() -> None:
                with httpx.Client(timeout=120) as session:
                    while time.monotonic() < deadline:
                        with lock:
                            if len(latencies) + len(errors) >= args.max_requests:
                                return
                        start = time.perf_counter()
                        try:
                            response = session.post(f"{url}/v1/segment", files={"image": ("p.png", payload)})
                            failed = None if response.status_code == 200 else f"HTTP {response.status_code}"
                        except httpx.HTTPError as error:
                            failed = f"{type(error).__name__}: {error}"
                        with lock:
                            (errors.append(failed) if failed else latencies.append(time.perf_counter() - start))

            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - started
            after = rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    print(f"{args.clients} clients, {elapsed:.0f} s, {args.size}x{args.size} PNG, unet (base 16, depth 4)")
    print(f"requests ok {len(latencies)}, errors {len(errors)}{' ' + str(sorted(set(errors))[:3]) if errors else ''}"
          f", throughput {len(latencies) / elapsed:.1f}/s")
    print(f"latency p50 {1000 * quantiles[49]:.0f} ms, p99 {1000 * quantiles[98]:.0f} ms")
    print(f"server RSS before {before:.0f} MB, after {after:.0f} MB, growth {100 * (after / before - 1):+.1f}%")
    print(machine_state("after"))


if __name__ == "__main__":
    main()
