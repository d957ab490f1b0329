"""The lecture, runnable: each topic computes its figures and numbers from the library's own modules.

``pixelwise.explain.<topic>(...)`` returns an :class:`Explained` (numbers and matplotlib figures), for
notebooks; ``pixelwise explain`` (:func:`run_gallery`) writes them all as PNGs, ``numbers.json`` files and
one ``index.html``. Topics are imported on first use (PEP 562), so listing them imports no torch.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The gallery's topics in lecture order: the command-line name -> the module (and function) in this package.
TOPICS = {
    "convolutionalization": "convolutionalization",
    "upsampling": "upsampling",
    "fcn-skips": "fcn_skips",
    "atrous-receptive-fields": "atrous_receptive_fields",
    "separable-convolution": "separable_convolution",
    "aspp": "aspp",
    "unet-sizes": "unet_sizes",
    "overlap-tile": "overlap_tile",
    "hypercolumns": "hypercolumns",
    "deeplab-decoder": "deeplab_decoder",
    "dense-crf": "dense_crf",
}

__all__ = ["TOPICS", "Explained", "check_topics", "list_topics", "run_gallery", *TOPICS.values()]


def list_topics() -> list[tuple[str, str]]:
    """(name, one-line description) of each available topic, in lecture order.

    The description is the first line of the topic module's docstring, read from its source without
    importing it (and torch with it).
    """
    topics = []
    for name, module in TOPICS.items():
        spec = importlib.util.find_spec(f"{__name__}.{module}")
        if spec is None or spec.origin is None:
            continue
        docstring = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))) or ""
        topics.append((name, docstring.strip().splitlines()[0] if docstring.strip() else ""))
    return topics


def check_topics(topics: Sequence[str]) -> list[str]:
    """``topics`` checked against the available ones (all of them when empty), in the order given."""
    available = [name for name, _ in list_topics()]
    unknown = [name for name in topics if name not in available]
    if unknown:
        raise ValueError(f"unknown topic {', '.join(map(repr, unknown))}; choose from {', '.join(available)}")
    return list(dict.fromkeys(topics)) or available


class _TopicPackage(types.ModuleType):
    """This package, where a topic's name is its function even after its module of the same name is imported.

    Importing ``pixelwise.explain.aspp`` binds the package attribute ``aspp`` to the module; notebooks call
    ``pixelwise.explain.aspp(...)``, so the binding is replaced by the module's function.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in TOPICS.values() and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _TopicPackage


def __getattr__(name: str) -> Any:
    # pixelwise.explain.upsampling(...) imports the topic's module on first use; the import binds its function.
    if name in TOPICS.values():
        importlib.import_module(f"{__name__}.{name}")
        return globals()[name]
    if name == "Explained":
        from pixelwise.explain.base import Explained

        return Explained
    if name == "run_gallery":
        from pixelwise.explain.gallery import run_gallery

        return run_gallery
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
