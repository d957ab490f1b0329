"""``pixelwise serve``: the HTTP API and web page for a saved run, on uvicorn (loopback by default)."""

from __future__ import annotations

import argparse
import socket

from pixelwise.commands import add_runtime_options, port_number, positive_float, positive_int
from pixelwise.infer.options import MODES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve a saved model over HTTP, with a web page")
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="saved model directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    parser.add_argument("--port", type=port_number, default=8000)
    parser.add_argument("--mode", choices=MODES, default=MODES[0])
    add_runtime_options(parser)
    parser.add_argument("--fast", action="store_true", help="fold BatchNorm and use channels-last")
    parser.add_argument("--max-request-mb", type=positive_float, default=1024.0,
                        help="memory one request may take, in MiB (default 1024); capped by the machine's free memory")
    parser.add_argument("--max-pixels", type=positive_int,
                        help="largest image accepted, in pixels (default: what --max-request-mb allows)")
    parser.add_argument("--max-body-mb", type=positive_float, default=32.0, help="largest request body, in MiB")
    parser.add_argument("--max-concurrent", type=positive_int,
                        help="inferences running at once (default 2, or 1 when memory allows only one)")
    parser.add_argument("--max-queue", type=positive_int, default=64, help="requests waiting; beyond, 503")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from pixelwise.infer.memory import plan_memory
    from pixelwise.infer.segmenter import Segmenter
    from pixelwise.serve.app import create_app

    check_address(args.host, args.port)  # before the model loads: a taken port is one line, not a late crash
    segmenter = Segmenter(args.checkpoint, mode=args.mode, precision=args.precision, backend=args.backend,
                          fast=args.fast)
    print(segmenter)
    memory = plan_memory(segmenter, int(args.max_request_mb * (1 << 20)), args.max_concurrent, args.max_pixels)
    print(f"memory per request: up to {memory.request_bytes / 2**20:.0f} MiB; images up to "
          f"{memory.whole_up_to / 1e6:.1f} MP of network input (padding included) run whole, larger ones window "
          f"by window, up to {memory.max_pixels / 1e6:.1f} MP and {memory.max_computed_pixels / 1e6:.0f} MP of "
          f"network input; {memory.max_concurrent} at once")
    app = create_app(segmenter, max_body_bytes=int(args.max_body_mb * (1 << 20)), max_queue=args.max_queue,
                     memory=memory)
    uvicorn.run(app, host=args.host, port=args.port)
    return 0


def check_address(host: str, port: int) -> None:
    """Raise ValueError unless this process can listen on ``host``:``port`` now."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            probe.bind(address)
    except OSError as error:
        raise ValueError(f"cannot listen on {host}:{port}: {error.strerror or error}") from error
