"""Saving and loading models: ``model.safetensors`` plus ``config.json`` (the run card), no pickle anywhere."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from pixelwise.card import CardError, RunCard
from pixelwise.fileio import atomic_write
from pixelwise.models import create_model

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_model(model: nn.Module, directory: str | os.PathLike, card: RunCard | None = None, **fields: Any) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (the run card) into ``directory``, atomically.

    The card is ``card`` (default: the model's own, ``model.card``) with ``fields`` replaced: any
    ``RunCard`` field but the architecture, e.g. ``class_names=[...]``, ``palette=[[r, g, b], ...]``,
    ``normalization=Normalization(mean, std)`` or ``metadata={...}`` (any JSON of your own).
    """
    own = getattr(model, "card", None)
    if not isinstance(own, RunCard):
        raise ValueError("save_model needs a model built by pixelwise.create_model (it has no run card)")
    card = card or own
    if card.architecture() != own.architecture():
        raise ValueError(f"the card describes {card.architecture()} but the model is {own.architecture()}")
    architecture = sorted(set(fields) & {"name", "num_classes", "options"})
    if architecture:
        raise ValueError(f"{architecture} come from the model and cannot be changed when saving")
    unknown = sorted(set(fields) - {field.name for field in dataclasses.fields(RunCard)})
    if unknown:
        raise ValueError(f"save_model takes run card fields; {unknown} are not among them")
    card = card.replace(**fields)
    try:  # before any file is touched: a field that is not JSON fails here
        text = json.dumps(card.to_dict(), indent=2)
    except (TypeError, ValueError) as error:
        raise ValueError(f"the run card cannot be written as JSON ({error}): metadata, scores and train_config "
                         "must hold JSON values (str, numbers, lists, dicts)") from error
    directory = Path(directory)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    with atomic_write(directory / WEIGHTS_FILE) as handle:
        handle.write(safetensors_bytes(state))
    with atomic_write(directory / CONFIG_FILE, "w") as handle:
        handle.write(text)
    return directory


def read_card(directory: str | os.PathLike) -> RunCard:
    """The run card of a saved model (any format version), checked; raises naming the file and the problem."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (a saved model directory holds {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    return RunCard.from_dict(raw, str(path))


def load_model(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by ``save_model`` from its two files; returned in eval mode.

    The run card (classes, palette, normalisation, CRF settings, scores ...) is on ``model.card``.
    Raises FileNotFoundError or ValueError naming the file and the problem for a missing or corrupt
    file, an unknown model, or weights whose names or shapes do not match the config.
    """
    directory = Path(directory)
    card = read_card(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path}: missing")
    try:
        state = load_file(weights_path, device=str(map_location))
    except Exception as error:  # safetensors raises its own error types for truncated or garbled files
        raise ValueError(f"{weights_path}: cannot be read as safetensors ({error})") from error
    try:
        model = create_model(card.name, card.num_classes, **card.options)
    except (ValueError, TypeError) as error:
        raise CardError(f"{directory / CONFIG_FILE}: {error}") from error
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
        raise ValueError(f"{weights_path} does not match {card.name!r} in {CONFIG_FILE}: " + "; ".join(problems))
    model.load_state_dict(state)
    model.to(map_location)
    # The architecture as create_model resolved it: every option spelled out, defaults included.
    model.card = card.replace(options=model.card.options)
    return model.eval()
