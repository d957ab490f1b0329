"""Export a model to ONNX or TorchScript with dynamic batch, height and width.

The exported file carries what a client needs beside the weights (``card_metadata``): the class names,
palette and input normalisation, and the whole run card as JSON. In ONNX they are the model's
``metadata_props`` (onnxruntime: ``session.get_modelmeta().custom_metadata_map``); in TorchScript the extra
file ``pixelwise_card.json`` (``torch.jit.load(path, _extra_files={"pixelwise_card.json": ""})``).

Both exporters trace one forward pass. Python arithmetic on sizes (``math.ceil(h / 4)``) is frozen
into the trace as a constant, which would silently give wrong results at other sizes, so every export
is checked: the exported program is run at a second, different size and compared with the model.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from pixelwise.fileio import atomic_write, check_output_file

ONNX_OPSET = 17
# Largest |logit| difference an export may show against eager PyTorch (float32 reordering only).
TOLERANCE = 1e-3


# The names a TorchScript file goes by (torch.jit.save writes any name; these are the customary ones).
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")
EXPORT_SUFFIXES = {"onnx": (".onnx",), "torchscript": TORCHSCRIPT_SUFFIXES, "openvino": (".xml",)}


class ExportError(ValueError):
    """The model cannot be exported with dynamic sizes; the message says why."""


def check_sizes(model: nn.Module) -> tuple[tuple[int, int], tuple[int, int]]:
    """Two different (H, W) input sizes the model accepts: one to trace, one to check the export at.

    A model with an output margin takes the aligned inputs its contract gives for those output sizes.
    """
    return (model.input_size_for(64),) * 2, (model.input_size_for(77), model.input_size_for(93))


def export_onnx(model: nn.Module, path: str | os.PathLike | None = None, *, check: bool = True) -> bytes:
    """The ONNX program of ``model`` (input "image" (N, C, H, W) -> "logits"), written to ``path`` if given.

    Raises ExportError when export fails or the program disagrees with the model at a second size.
    """
    if path is not None:
        check_output_file(path, "path", (".onnx",))
    model = model.eval()
    trace_size, check_size = check_sizes(model)
    example = torch.randn(1, model.card.in_channels, *trace_size)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings: the check below is the real test
            torch.onnx.export(
                model, (example,), buffer, dynamo=False, opset_version=ONNX_OPSET,
                input_names=["image"], output_names=["logits"],
                dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                              "logits": {0: "batch", 2: "height", 3: "width"}},
            )
    except Exception as error:  # the exporter raises many types; all mean "this model does not export"
        raise ExportError(f"ONNX export of {model.card.name!r} failed: {error}") from error
    program = with_metadata(buffer.getvalue(), card_metadata(model))
    if check:
        session = onnx_session(program)
        check_export(model, lambda x: torch.from_numpy(session.run(None, {"image": as_numpy(x)})[0]), check_size)
    if path is not None:
        with atomic_write(path) as handle:
            handle.write(program)
    return program


def export_torchscript(model: nn.Module, path: str | os.PathLike | None = None, *, check: bool = True):
    """The traced TorchScript module of ``model``, saved to ``path`` if given (load with torch.jit.load)."""
    if path is not None:
        check_output_file(path, "path", TORCHSCRIPT_SUFFIXES)
    model = model.eval()
    trace_size, check_size = check_sizes(model)
    example = torch.randn(1, model.card.in_channels, *trace_size)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, example, check_trace=False)
    except Exception as error:
        raise ExportError(f"TorchScript trace of {model.card.name!r} failed: {error}") from error
    if check:
        check_export(model, traced, check_size)
    if path is not None:
        with atomic_write(path) as handle:
            torch.jit.save(traced, handle, _extra_files={CARD_FILE: card_metadata(model)[CARD_KEY]})
    return traced


CARD_KEY, CARD_FILE = "pixelwise_card", "pixelwise_card.json"


def card_metadata(model: nn.Module) -> dict[str, str]:
    """Strings to store beside an exported program: class names, palette, the input's normalisation (JSON
    lists, for ``pixel / 255 - mean) / std`` per input channel) and the whole run card."""
    card = model.card
    normalization = card.input_normalization
    return {
        "class_names": json.dumps(card.classes),
        "palette": json.dumps(card.colours[: card.num_classes]),
        "mean": json.dumps(list(normalization.mean)),
        "std": json.dumps(list(normalization.std)),
        CARD_KEY: json.dumps(card.to_dict()),
    }


def with_metadata(program: bytes, metadata: dict[str, str]) -> bytes:
    """An ONNX program with ``metadata`` added to its ``metadata_props``."""
    import onnx

    proto = onnx.load_from_string(program)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def check_export(model: nn.Module, exported: Callable[[torch.Tensor], torch.Tensor], size: tuple[int, int]) -> None:
    """Raise ExportError unless ``exported`` matches ``model`` on a random (2, C, *size) batch."""
    x = torch.randn(2, model.card.in_channels, *size)
    with torch.no_grad():
        expected = model(x)
        try:
            actual = exported(x)
        except Exception as error:
            raise ExportError(f"exported {model.card.name!r} fails at size {size}: {error}") from error
    if actual.shape != expected.shape:
        raise ExportError(
            f"exported {model.card.name!r} gives shape {tuple(actual.shape)} instead of {tuple(expected.shape)} "
            f"at size {size}: its forward computes sizes in Python, which tracing freezes"
        )
    difference = (actual - expected).abs().max().item()
    if not difference <= TOLERANCE:
        raise ExportError(
            f"exported {model.card.name!r} differs from the model by {difference:.3g} at size {size}: "
            "its forward computes sizes in Python, which tracing freezes"
        )


def onnx_session(program: bytes | str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU InferenceSession for an ONNX program (bytes or a file path)."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError("the onnxruntime backend needs the onnxruntime package: pip install onnxruntime") from error
    options = onnxruntime.SessionOptions()
    # onnxruntime's own log writes a coloured line to stderr before it raises; the raised error says the same.
    options.log_severity_level = 4  # fatal only
    if threads:
        options.intra_op_num_threads = threads
    program = os.fspath(program) if isinstance(program, os.PathLike) else program
    return onnxruntime.InferenceSession(program, options, providers=["CPUExecutionProvider"])


def as_numpy(x: torch.Tensor) -> np.ndarray:
    """A contiguous float32 numpy view of a CPU tensor, as onnxruntime wants its inputs."""
    return np.ascontiguousarray(x.detach().float().cpu().numpy())
