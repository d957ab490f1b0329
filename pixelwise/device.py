"""Device names, checked once: every command and the Python API turn a user's device string into a
``torch.device`` here, so a typo or a device this machine lacks is one clear error before any work starts."""

from __future__ import annotations

import torch

SUPPORTED = ("cpu", "cuda", "mps")


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` as torch
    spells them. Raises ValueError naming the device when torch does not know it or this machine lacks it."""
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except (RuntimeError, ValueError, TypeError) as error:
            raise ValueError(f"device {name!r} is not a device name ({', '.join(SUPPORTED)}, cuda:1, auto)") from error
    if device.type not in SUPPORTED:
        raise ValueError(f"device {str(device)!r}: pixelwise runs on {', '.join(SUPPORTED)}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r} requested but MPS is not available on this machine")
    return device
