"""``pixelwise export``: a saved run as an ONNX, TorchScript or OpenVINO file with dynamic batch, height and width."""

from __future__ import annotations

import argparse
import sys

from pixelwise.infer.options import EXPORT_FORMATS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export a saved model to ONNX, TorchScript or OpenVINO IR")
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="saved model directory")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="file to write (atomically; openvino: an .xml, with its .bin beside it)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip running the export at a second size to compare it with the model")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pixelwise.checkpoint import load_model
    from pixelwise.fileio import check_output_file
    from pixelwise.infer.export import EXPORT_SUFFIXES, ExportError, export_onnx, export_torchscript
    from pixelwise.infer.openvino import export_openvino

    check_output_file(args.out, "--out", EXPORT_SUFFIXES[args.format])
    model = load_model(args.checkpoint)
    exporter = {"onnx": export_onnx, "torchscript": export_torchscript, "openvino": export_openvino}[args.format]
    try:
        exporter(model, args.out, check=not args.no_check)
    except ExportError as error:
        print(f"pixelwise export: error: {error}", file=sys.stderr)
        return 1
    margin = model.output_margin
    size = f"H - {2 * margin}, W - {2 * margin}" if margin else "H, W"
    print(f"wrote {args.out} ({args.format}: image (N, {model.card.in_channels}, H, W) -> logits (N, "
          f"{model.card.num_classes}, {size}))")
    return 0
