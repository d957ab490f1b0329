"""OpenVINO, Intel's inference runtime, as a CPU backend and an export format.

The network goes through the checked ONNX export (``pixelwise.infer.export``: dynamic batch, height and
width, compared with PyTorch at a second size) and OpenVINO's ONNX reader, so both runtimes see one program.
On CPUs with AMX or AVX512-BF16, OpenVINO's default precision hint is bf16: it picks the fast units by
itself. ``precision="fp32"`` pins f32 (the parity tests), ``"bf16"`` asks for bf16 everywhere; the choice
that runs is read back from the compiled model and reported (``Segmenter`` repr, ``GET /v1/model``).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pixelwise.fileio import check_output_file
from pixelwise.infer.export import as_numpy, card_metadata, check_export, check_sizes, export_onnx

# pixelwise precision names -> OpenVINO's INFERENCE_PRECISION_HINT (None: the runtime's own choice).
PRECISION_HINTS = {None: None, "fp32": "f32", "bf16": "bf16"}
OPENVINO_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def require_openvino():
    """The ``openvino`` module, or an ImportError naming the extra that installs it."""
    try:
        import openvino
    except ImportError as error:
        raise ImportError('the openvino backend needs OpenVINO: pip install "pixelwise[openvino]"') from error
    return openvino


def openvino_model(model: nn.Module, check: bool = True):
    """``model`` as an ``openvino.Model`` (input "image" (N, C, H, W) -> "logits"), the card in its rt_info."""
    ov = require_openvino()
    converted = ov.convert_model(io.BytesIO(export_onnx(model, check=check)))
    for key, value in card_metadata(model).items():
        converted.set_rt_info(value, ["pixelwise", key])
    return converted


def compile_openvino(converted, precision: str | None = None, threads: int | None = None):
    """The model compiled for the CPU with the latency hint; ``precision`` None lets OpenVINO choose."""
    ov = require_openvino()
    if precision not in PRECISION_HINTS:
        raise ValueError(f"the openvino backend runs fp32 or bf16 (or None: OpenVINO's choice), got {precision!r}")
    config = {"PERFORMANCE_HINT": "LATENCY"}
    if PRECISION_HINTS[precision] is not None:
        config["INFERENCE_PRECISION_HINT"] = PRECISION_HINTS[precision]
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(converted, "CPU", config)


def compiled_precision(compiled) -> str:
    """The precision a compiled model runs its convolutions and matrix products in ("fp32", "bf16", ...)."""
    hint = str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
    return OPENVINO_PRECISIONS.get(hint, hint)


class OpenVINOForward:
    """(N, C, h, w) float32 -> (N, K, h', w') float32 logits with OpenVINO on the CPU.

    An input smaller than one of the network's pooling windows (a paper U-Net's 2^depth pixels) runs on the
    PyTorch model instead: OpenVINO's MaxPool refuses a window larger than its map, and with one thread it even
    returns the previous request's output, so every result's shape is checked before it is used.
    """

    def __init__(self, model: nn.Module, precision: str | None = None, threads: int | None = None) -> None:
        self.compiled = compile_openvino(openvino_model(model), precision, threads or torch.get_num_threads())
        self.precision = compiled_precision(self.compiled)
        self.chosen_by_runtime = precision is None
        self.model = model.eval()
        self.num_classes, self.output_margin = model.card.num_classes, model.output_margin

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        expected = (n, self.num_classes, h - 2 * self.output_margin, w - 2 * self.output_margin)
        try:
            logits = np.asarray(self.compiled.create_infer_request().infer(as_numpy(x))[0])
        except RuntimeError:
            logits = None
        if logits is None or logits.shape != expected:
            with torch.inference_mode():
                return self.model(x.float()).float()
        return torch.from_numpy(logits)


def export_openvino(model: nn.Module, path: str | os.PathLike, *, check: bool = True) -> None:
    """Write OpenVINO's IR: ``path`` (an .xml file, the graph) and the .bin beside it (the fp32 weights).

    With ``check``, the IR as written is compiled in f32 and compared with the model at a second size.
    Both files appear whole or not at all: they are saved in a temporary folder beside them, then moved.
    """
    ov = require_openvino()
    path = Path(path)
    if path.suffix != ".xml":
        raise ValueError(f"--out {path}: OpenVINO's IR is an .xml file (with a .bin beside it); name it *.xml")
    check_output_file(path, "--out", (".xml",))
    check_output_file(path.with_suffix(".bin"), "--out (its .bin)", (".bin",))
    converted = openvino_model(model, check=check)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.openvino-partial-") as folder:
        staged = Path(folder) / path.name
        ov.save_model(converted, staged, compress_to_fp16=False)
        if check:
            compiled = compile_openvino(ov.Core().read_model(staged), "fp32")
            check_export(model, lambda x: torch.from_numpy(np.asarray(compiled(as_numpy(x))[0])),
                         check_sizes(model)[1])
        os.replace(staged.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(staged, path)
