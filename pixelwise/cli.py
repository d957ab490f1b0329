"""The ``pixelwise`` command: a thin layer over the functions a Python user calls.

Each subcommand lives in ``pixelwise/commands/<name>.py`` and defines ``register(subparsers)``,
which adds its parser and sets ``func`` to a function ``run(args) -> int`` (the exit code).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys

# Subcommand modules, in the order ``pixelwise --help`` lists them.
COMMAND_MODULES = (
    "pixelwise.commands.models",
    "pixelwise.commands.quickstart",
    "pixelwise.commands.train",
    "pixelwise.commands.eval",
    "pixelwise.commands.export",
    "pixelwise.commands.predict",
    "pixelwise.commands.serve",
    "pixelwise.commands.check_data",
    "pixelwise.commands.explain",
)


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line, as every other misuse is (argparse prints its usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="pixelwise", description="Semantic segmentation.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, OSError, MemoryError, ImportError, ArithmeticError) as error:
        # Bad input from the user (a value, a name, a file: missing, unreadable, in the way; a model that does not
        # export; a loss that diverged) or an optional extra not installed (the message names it): one line.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"pixelwise {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Outputs are written atomically, so what was finished is whole and nothing half-written is left.
        print(f"pixelwise {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a defect of ours: one line, and the traceback on request
        if os.environ.get("PIXELWISE_TRACEBACK"):
            raise
        print(f"pixelwise {args.command}: internal error: {type(error).__name__}: {error} (run again with "
              "PIXELWISE_TRACEBACK=1 for the traceback, and please report it)", file=sys.stderr)
        return 1
    finally:
        # The interpreter's last garbage collection walks every object torch and torchvision created, about a
        # second on a 2-core machine; frozen objects are skipped. Finalizers and atexit handlers still run.
        gc.freeze()

if __name__ == "__main__":
    sys.exit(main())
