"""Peak memory of ``pixelwise serve`` against image size, on default settings, for two models.

For each model a real server is started (``python -m pixelwise serve``, loopback, default limits), images of
growing size are uploaded one after the other, and the server's peak resident memory (``VmHWM`` of its
process) is read after each. The peak never decreases, so with sizes in increasing order each reading is
the peak of the largest image so far. The server's advertised plan (``GET /v1/model``, card.limits.memory)
is printed beside: an image over ``max_pixels`` must get 413, and every accepted one must stay within
``request_bytes`` above the idle server.

    python benchmarks/bench_serve_memory.py [--sizes 1 4 9 16 25]   # megapixels
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixelwise import create_model, save_model

MODELS = {
    "quickstart U-Net (16 channels, depth 3)": ("unet", {"base_channels": 16, "depth": 3}),
    "DeepLabv3+ MobileNetV2": ("deeplabv3plus", {"backbone": "mobilenet_v2"}),
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def gradient_png(megapixels: float) -> bytes:
    """A smooth RGB picture of about ``megapixels`` (4:3), a few KB as PNG: the kind of small upload that
    decodes to a large image."""
    height = int((megapixels * 1e6 * 3 / 4) ** 0.5)
    width = int(megapixels * 1e6 / height)
    ramp = np.linspace(0, 255, width).astype(np.uint8)
    image = np.stack([np.broadcast_to(ramp, (height, width))] * 3, axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def request(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    headers = {"content-type": "image/png"} if data is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=600) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def bench(label: str, name: str, options: dict, sizes: list[float]) -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        save_model(create_model(name, 5, **options), scratch)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "pixelwise", "serve", "--checkpoint", scratch, "--port",
                                   str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 300
            while True:
                try:
                    if request(f"{base}/healthz")[0] == 200:
                        break
                except OSError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {server.stdout.read()}")
                time.sleep(0.5)
            plan = json.loads(request(f"{base}/v1/model")[1])["card"]["limits"]["memory"]
            idle = rss(server.pid)
            print(f"\n{label}: idle RSS {idle / 2**20:.0f} MiB; plan: whole up to {plan['whole_up_to'] / 1e6:.1f} MP "
                  f"({plan['whole_bytes_per_pixel']:.0f} B/px planned), windows beyond "
                  f"({plan['window_bytes_per_pixel']:.0f} B/px + {plan['window_bytes'] / 2**20:.0f} MiB), "
                  f"max {plan['max_pixels'] / 1e6:.1f} MP, request budget {plan['request_bytes'] / 2**20:.0f} MiB, "
                  f"{plan['max_concurrent']} at once")
            print(f"{'image':>10}  {'status':>6}  {'seconds':>7}  {'peak RSS':>9}  {'above idle':>10}  within budget")
            for megapixels in sizes:
                body = gradient_png(megapixels)
                start = time.perf_counter()
                status, _ = request(f"{base}/v1/segment", body)
                seconds = time.perf_counter() - start
                peak = peak_rss(server.pid)
                within = "-" if status != 200 else ("yes" if peak - idle <= plan["request_bytes"] else "NO")
                print(f"{megapixels:>8.1f}MP  {status:>6}  {seconds:>7.1f}  {peak / 2**20:>7.0f}Mi  "
                      f"{(peak - idle) / 2**20:>8.0f}Mi  {within}")
        finally:
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 9, 16, 40], help="megapixels")
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    for label, (name, options) in MODELS.items():
        bench(label, name, options, sorted(args.sizes))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
