"""The subcommands of ``pixelwise`` (one module each) and the argument types they share."""

import argparse


def parsed(text: str, kind: type, what: str):
    """``kind(text)``, or an argparse error saying what was expected."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    value = parsed(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    value = parsed(text, float, "a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535."""
    value = parsed(text, int, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 0 to 65535, got {value}")
    return value


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--precision``, as ``predict`` and ``serve`` share them."""
    from pixelwise.infer.options import BACKENDS, PRECISIONS

    parser.add_argument("--backend", choices=BACKENDS, default=BACKENDS[0],
                        help="torch (default), onnxruntime (CPU, fp32) or openvino (CPU; pip install "
                             "'pixelwise[openvino]')")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="default fp32; with --backend openvino, OpenVINO's choice for this CPU (bf16 with AMX)")
