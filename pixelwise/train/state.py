"""The trainer's state on disk, without pickle: tensors in safetensors, everything else in JSON.

Layout inside a run directory::

    state/step-00000500.safetensors   model weights, optimizer buffers, RNG states
    state/step-00000500.json          step, scheduler, grad scaler, best score, ... (tensors by reference),
                                      and the SHA-256 of the tensors file and of itself
    state/latest.json                 {"step": 500}, written last

A checkpoint exists only once ``latest.json`` names it, and that file is replaced atomically after both
step files are complete, so a kill at any moment leaves either the previous checkpoint or the new one,
never a weights file from one step with an optimizer from another. The previous checkpoint is kept too:
when the latest one is damaged (a truncated or garbled file fails its checksum), resuming falls back to
it and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes

from pixelwise.fileio import atomic_write

STATE_DIR = "state"
LATEST_FILE = "latest.json"
KEEP = 2  # checkpoints kept: the latest and the one before, to fall back to


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

    Step files older than the previous checkpoint are removed once the new checkpoint is in place.
    """
    directory = Path(run_dir) / STATE_DIR
    stem = f"step-{step:08d}"
    tensors: dict[str, torch.Tensor] = {}
    flat = flatten_tensors(state, "state", tensors)
    weights = safetensors_bytes(tensors)
    document = {"step": step, "state": flat, "tensors_sha256": sha256(weights)}
    document["sha256"] = document_sha256(document)
    with atomic_write(directory / f"{stem}.safetensors") as handle:
        handle.write(weights)
    with atomic_write(directory / f"{stem}.json", "w") as handle:
        json.dump(document, handle)
    with atomic_write(directory / LATEST_FILE, "w") as handle:
        json.dump({"step": step}, handle)
    kept = sorted({path.name.split(".")[0] for path in directory.glob("step-*")}, reverse=True)[:KEEP]
    for old in directory.glob("step-*"):
        if old.name.split(".")[0] not in kept:
            old.unlink(missing_ok=True)
    return directory / stem


def checkpoint_steps(run_dir: str | os.PathLike) -> list[int]:
    """The steps the run has checkpoint files of (intact or not), newest first; read from the names alone."""
    names = (path.stem.removeprefix("step-") for path in (Path(run_dir) / STATE_DIR).glob("step-*.json"))
    return sorted((int(name) for name in names if name.isdigit()), reverse=True)


def load_state(run_dir: str | os.PathLike) -> tuple[int, dict[str, Any]] | None:
    """(step, state) of the run's latest intact checkpoint, or None if it has none yet.

    A damaged latest checkpoint (unreadable, truncated, garbled: its checksums disagree) is passed over for
    the previous one, with a warning on stderr naming what was wrong; when no checkpoint is intact the
    ValueError names the damaged files.
    """
    directory = Path(run_dir) / STATE_DIR
    latest = directory / LATEST_FILE
    if not latest.is_file() and not any(directory.glob("step-*.json")):
        return None
    try:
        steps, problems = [int(json.loads(latest.read_text())["step"])], []
    except (OSError, ValueError, KeyError, TypeError) as error:
        steps, problems = [], [f"{latest}: cannot be read ({error})"]
    older = checkpoint_steps(run_dir)
    steps += [step for step in older if step not in steps and (not steps or step < steps[0])]
    for step in steps:
        try:
            state = read_checkpoint(directory / f"step-{step:08d}")
        except ValueError as error:
            problems.append(str(error))
            continue
        if problems:
            print(f"warning: {'; '.join(problems)}. Resuming from the older checkpoint of step {step}.",
                  file=sys.stderr)
        return step, state
    raise ValueError(f"{directory}: no intact checkpoint to resume from: {'; '.join(problems)}")


def read_checkpoint(stem: Path) -> dict[str, Any]:
    """The state saved as ``stem.json`` + ``stem.safetensors``, checked against their SHA-256."""
    json_path, tensors_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    try:
        document = json.loads(json_path.read_text())
        recorded = document.pop("sha256", None)
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"{json_path}: cannot be read ({error})") from error
    if recorded is not None and recorded != document_sha256(document):
        raise ValueError(f"{json_path}: damaged (its checksum does not match its content)")
    try:
        weights = tensors_path.read_bytes()
    except OSError as error:
        raise ValueError(f"{tensors_path}: cannot be read ({error})") from error
    if "tensors_sha256" in document and document["tensors_sha256"] != sha256(weights):
        raise ValueError(f"{tensors_path}: damaged (its SHA-256 differs from the one recorded in {json_path.name})")
    try:
        tensors = safetensors_load(weights)
        return restore_tensors(document["state"], tensors)
    except Exception as error:  # safetensors and a garbled document raise many types
        raise ValueError(f"{tensors_path}: cannot be read ({error})") from error


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def document_sha256(document: dict[str, Any]) -> str:
    """The SHA-256 of a step document as JSON with sorted keys (the ``sha256`` field itself left out)."""
    return sha256(json.dumps({k: v for k, v in document.items() if k != "sha256"}, sort_keys=True).encode())
