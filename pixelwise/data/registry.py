"""The plain dict of data set loaders and ``build_dataset``."""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset

from pixelwise.data.ade20k import ADE20K
from pixelwise.data.base import SegmentationDataset
from pixelwise.data.camvid import CamVid
from pixelwise.data.cityscapes import Cityscapes
from pixelwise.data.folder import FolderDataset
from pixelwise.data.isbi2012 import ISBI2012
from pixelwise.data.synthetic import SyntheticShapes
from pixelwise.data.voc import SBDSegmentation, VOCSegmentation
from pixelwise.options import check_options

REPO_ROOT = Path(__file__).resolve().parents[2]

# Name -> loader class. File-based loaders take (root, split, transform, **options); the synthetic set
# is generated and takes no root.
DATASETS: dict[str, type[SegmentationDataset]] = {
    "synthetic": SyntheticShapes,
    "camvid": CamVid,
    "isbi2012": ISBI2012,
    "folder": FolderDataset,
    "voc": VOCSegmentation,
    "voc_aug": SBDSegmentation,
    "cityscapes": Cityscapes,
    "ade20k": ADE20K,
}


def build_dataset(name: str, root: str | os.PathLike | None, split: str, transform=None, **options) -> Dataset:
    """The ``split`` of data set ``name`` stored under ``root`` (None for ``synthetic``)."""
    if name not in DATASETS:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    loader = DATASETS[name]
    options = check_options(f"data set {name!r}", loader, options, exclude=("root", "split", "transform"))
    if loader is SyntheticShapes:
        if root is not None:
            raise ValueError("the synthetic data set is generated and takes no root")
        return loader(split, transform, **options)
    if root is None:
        raise ValueError(f"data set {name!r} needs a root directory")
    return loader(root, split, transform, **options)


def resolve_root(root: str | None) -> str | None:
    """A data root (or a saved model, ``model.init_from``) with ``$VARS`` and ``~`` expanded; a relative path is
    tried from the current directory, then the repo."""
    if root is None:
        return None
    path = Path(os.path.expandvars(root)).expanduser()
    if path.is_absolute() or path.exists() or not (REPO_ROOT / path).exists():
        return str(path)
    return str(REPO_ROOT / path)


def parse_data_source(text: str) -> tuple[str, str | None]:
    """``"NAME:ROOT"`` (``"synthetic"`` alone: it takes no root) -> (name, resolved root or None)."""
    name, _, root = text.partition(":")
    if not name:
        raise ValueError(f"expected NAME:ROOT (e.g. camvid:data/camvid), got {text!r}")
    return name, resolve_root(root or None)
