"""The lecture, runnable: each topic computes its figures and numbers from the library's own modules.

``pixelwise.explain.<topic>(...)`` returns an :class:`Explained` (numbers and matplotlib figures), for
notebooks; ``pixelwise explain`` writes them all as PNGs, ``numbers.json`` files and one ``index.html``.
"""

from __future__ import annotations

from pixelwise.explain.base import Explained

__all__ = ["Explained"]
