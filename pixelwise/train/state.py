"""The trainer's state on disk, without pickle: tensors in safetensors, everything else in JSON.

Layout inside a run directory::

    state/step-00000500.safetensors   model weights, optimizer buffers, RNG states
    state/step-00000500.json          step, scheduler, grad scaler, best score, ... (tensors by reference)
    state/latest.json                 {"step": 500}, written last

A checkpoint exists only once ``latest.json`` names it, and that file is replaced atomically after both
step files are complete, so a kill at any moment leaves either the previous checkpoint or the new one,
never a weights file from one step with an optimizer from another.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from pixelwise.fileio import atomic_write

STATE_DIR = "state"
LATEST_FILE = "latest.json"


def flatten_tensors(value: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able copy of ``value``: each tensor moves into ``tensors`` under a dotted name, leaving a reference.

    Dicts with non-string keys (the optimizer's ``{param index: state}``) become ``{"__items__": [[k, v]]}``
    so the keys come back with their type.
    """
    if isinstance(value, torch.Tensor):
        tensors[name] = value.detach().cpu().clone().contiguous()
        return {"__tensor__": name}
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            return {key: flatten_tensors(item, f"{name}.{key}", tensors) for key, item in value.items()}
        return {"__items__": [[key, flatten_tensors(item, f"{name}.{key}", tensors)] for key, item in value.items()]}
    if isinstance(value, list | tuple):
        return [flatten_tensors(item, f"{name}.{index}", tensors) for index, item in enumerate(value)]
    return value


def restore_tensors(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of ``flatten_tensors``."""
    if isinstance(value, dict):
        if set(value) == {"__tensor__"}:
            return tensors[value["__tensor__"]]
        if set(value) == {"__items__"}:
            return {key: restore_tensors(item, tensors) for key, item in value["__items__"]}
        return {key: restore_tensors(item, tensors) for key, item in value.items()}
    if isinstance(value, list):
        return [restore_tensors(item, tensors) for item in value]
    return value


def rng_states() -> dict[str, Any]:
    """The torch generators the training step draws from (dropout, ...): CPU and every CUDA device."""
    states: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_state(run_dir: str | os.PathLike, step: int, state: dict[str, Any]) -> Path:
    """Write ``state`` (nested dicts/lists of tensors and JSON values) as the checkpoint of ``step``.

    Older step files are removed once the new checkpoint is in place.
    """
    directory = Path(run_dir) / STATE_DIR
    stem = f"step-{step:08d}"
    tensors: dict[str, torch.Tensor] = {}
    document = {"step": step, "state": flatten_tensors(state, "state", tensors)}
    with atomic_write(directory / f"{stem}.safetensors") as handle:
        handle.write(safetensors_bytes(tensors))
    with atomic_write(directory / f"{stem}.json", "w") as handle:
        json.dump(document, handle)
    with atomic_write(directory / LATEST_FILE, "w") as handle:
        json.dump({"step": step}, handle)
    for old in directory.glob("step-*"):
        if not old.name.startswith(stem + "."):
            old.unlink(missing_ok=True)
    return directory / stem


def load_state(run_dir: str | os.PathLike) -> tuple[int, dict[str, Any]] | None:
    """(step, state) of the run's latest checkpoint, or None if it has none yet."""
    directory = Path(run_dir) / STATE_DIR
    latest = directory / LATEST_FILE
    if not latest.is_file():
        return None
    try:
        step = int(json.loads(latest.read_text())["step"])
        stem = directory / f"step-{step:08d}"
        document = json.loads(stem.with_suffix(".json").read_text())
        tensors = load_file(stem.with_suffix(".safetensors"))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{directory}: cannot read the trainer state ({error})") from error
    return step, restore_tensors(document["state"], tensors)
