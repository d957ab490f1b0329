"""Saving and loading models: ``model.safetensors`` plus ``config.json``, no pickle anywhere."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from pixelwise.fileio import atomic_write
from pixelwise.models import create_model

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "pixelwise-model"
FORMAT_VERSION = 1


def save_model(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    class_names: list[str] | None = None,
    palette: list[list[int]] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (created if needed).

    ``model`` must come from ``create_model`` (it carries ``pixelwise_config``). ``class_names``,
    ``palette`` (one [r, g, b] per class) and ``metadata`` (any JSON: normalisation, data set, ...)
    are stored in the config. Both files are written atomically.
    """
    config = getattr(model, "pixelwise_config", None)
    if config is None:
        raise ValueError("save_model needs a model built by pixelwise.create_model (no pixelwise_config found)")
    num_classes = config["num_classes"]
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} entries for a model with {num_classes} classes")
    if palette is not None and (len(palette) < num_classes or any(len(colour) != 3 for colour in palette)):
        raise ValueError(f"palette must hold at least {num_classes} [r, g, b] colours")
    directory = Path(directory)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    with atomic_write(directory / WEIGHTS_FILE) as handle:
        handle.write(safetensors_bytes(state))
    document = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        **config,
        "class_names": class_names,
        "palette": palette,
        "metadata": metadata or {},
    }
    with atomic_write(directory / CONFIG_FILE, "w") as handle:
        json.dump(document, handle, indent=2)
    return directory


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a saved model, checked for the fields ``load_model`` needs."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (a saved model directory holds {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{path}: not a pixelwise model config (expected \"format\": \"{FORMAT}\")")
    for field in ("name", "num_classes", "options"):
        if field not in config:
            raise ValueError(f"{path}: missing field {field!r}")
    return config


def load_model(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by ``save_model`` from its two files; returned in eval mode.

    The config (with class names, palette and metadata) is on ``model.pixelwise_config``.
    Raises FileNotFoundError or ValueError naming the file and the problem for a missing or corrupt
    file, an unknown model, or weights whose names or shapes do not match the config.
    """
    directory = Path(directory)
    config = read_config(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path}: missing")
    try:
        state = load_file(weights_path, device=str(map_location))
    except Exception as error:  # safetensors raises its own error types for truncated or garbled files
        raise ValueError(f"{weights_path}: cannot be read as safetensors ({error})") from error
    try:
        model = create_model(config["name"], config["num_classes"], **config["options"])
    except (ValueError, TypeError) as error:
        raise ValueError(f"{directory / CONFIG_FILE}: {error}") from error
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            problems.append(f"unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if mismatched:
            problems.append(f"shape mismatch {mismatched[:5]}{' ...' if len(mismatched) > 5 else ''}")
        raise ValueError(f"{weights_path} does not match {config['name']!r} in {CONFIG_FILE}: " + "; ".join(problems))
    model.load_state_dict(state)
    model.to(map_location)
    model.pixelwise_config = config
    return model.eval()
