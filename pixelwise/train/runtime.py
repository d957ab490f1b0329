"""Device, precision and reproducibility settings shared by training and evaluation."""

from __future__ import annotations

import contextlib
import os

import torch

from pixelwise.infer.fast import DTYPES


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision autocast for ``precision`` ("fp32" disables it).

    bf16 has fp32's exponent range, so it needs no loss scaling and runs on CPU and CUDA; fp16 is
    CUDA-only here and pairs with a GradScaler.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device; use bf16 on CPU")
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def make_reproducible(seed: int, deterministic: bool) -> None:
    """Seed torch; with ``deterministic``, also forbid non-deterministic kernels (slower on CUDA)."""
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; must be set before the first CUDA matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
