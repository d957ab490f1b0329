"""The run card: everything a saved model carries besides its weights, as one typed object.

Like torchvision's weight enums, which hold the transforms and the metrics together with the weights, a
card holds what it takes to use a model correctly: its architecture (``name``, ``num_classes``,
``options``), its classes and their colours, the normalisation its inputs need, the ignore label, the
data set it was trained on, the dense-CRF settings of its run, the precision it was trained in, and its
scores. ``save_model`` writes it as ``config.json`` beside the weights and ``load_model`` reads it once,
into ``model.card``; the Segmenter, ``serve``, ``export`` and ``eval`` take it from there.

``config.json`` (format version 2)::

    {"format": "pixelwise-model", "version": 2,
     "name": "unet", "num_classes": 5, "options": {...},
     "class_names": [...], "palette": [[r, g, b], ...],
     "normalization": {"mean": [...], "std": [...]}, "ignore_index": 255,
     "data": {"name": "camvid", "root": "...", "options": {}, "val_options": {}, "val_split": "val"},
     "precision": "bf16", "crf": {"iterations": 5, ...},
     "step": 1600, "scores": {...}, "train_config": {...}, "metadata": {...}}

``RunCard.from_dict`` also reads version 1, in which everything but the architecture, the classes and the
palette sat in a free-form ``metadata`` dict (and the trainer's whole config inside it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pixelwise.crf.settings import CRFSettings
from pixelwise.data.base import IGNORE_INDEX, voc_palette
from pixelwise.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Normalization
from pixelwise.infer.options import PRECISIONS
from pixelwise.options import OptionError, check_fields

FORMAT = "pixelwise-model"
FORMAT_VERSION = 2
# Options that only say where the initial weights came from. A saved model's own weights replace them, so a
# card never keeps them: reloading never downloads or reads anything but the run's two files.
WEIGHT_SOURCE_OPTIONS = ("pretrained_backbone", "weights")
# A channel past RGB (alpha, near-infrared) has no ImageNet statistics: 0.5 +- 0.5 takes its [0, 1] to [-1, 1],
# the scale of the normalised RGB channels.
EXTRA_CHANNEL_MEAN, EXTRA_CHANNEL_STD = 0.5, 0.5
# Version 1 kept these in ``metadata``; version 2 has a field for each, so they may not hide in it.
CARD_KEYS_IN_V1_METADATA = ("normalization", "mean", "std", "ignore_index", "dataset", "train_config", "step",
                            "scores")


class CardError(ValueError):
    """A config.json that is not a valid run card; the message names the source and the field."""


@dataclass(frozen=True)
class DataSource:
    """The data set a model was trained on: enough to build its validation split again."""

    name: str
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    val_options: dict[str, Any] = field(default_factory=dict)
    val_split: str = "val"

    def __post_init__(self) -> None:
        check_fields(self)

    def split_options(self) -> dict[str, Any]:
        """The loader options of the validation split."""
        return {**self.options, **self.val_options}


@dataclass(frozen=True)
class RunCard:
    """A saved model's config: architecture, classes, preprocessing, provenance and CRF settings."""

    name: str
    num_classes: int
    options: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None
    palette: list[list[int]] | None = None
    normalization: Normalization = field(default_factory=Normalization)
    ignore_index: int = IGNORE_INDEX
    data: DataSource | None = None
    precision: str = "fp32"
    crf: CRFSettings = field(default_factory=CRFSettings)
    step: int | None = None
    scores: dict[str, Any] | None = None
    train_config: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # anything else the user wants kept

    def __post_init__(self) -> None:
        try:
            check_fields(self)
        except OptionError as error:
            raise CardError(str(error)) from error
        if self.num_classes < 1:
            raise CardError(f"num_classes must be a positive integer, got {self.num_classes!r}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise CardError(f"class_names has {len(self.class_names)} entries for a model with "
                            f"{self.num_classes} classes")
        if self.palette is not None and (
            len(self.palette) < self.num_classes or any(len(colour) != 3 for colour in self.palette)
        ):
            raise CardError(f"palette must hold at least {self.num_classes} [r, g, b] colours")
        if self.palette is not None and not all(0 <= value <= 255 for colour in self.palette for value in colour):
            raise CardError("palette colours must be [r, g, b] with values 0..255")
        if not 0 <= self.ignore_index <= 255:
            raise CardError(f"ignore_index must be 0..255 (masks are 8-bit), got {self.ignore_index}")
        if not all(isinstance(key, str) for key in self.metadata):
            raise CardError("metadata keys must be strings (config.json is JSON)")
        if self.in_channels > 3 and self.normalization.mean == IMAGENET_MEAN and self.normalization.std == IMAGENET_STD:
            # ImageNet's RGB statistics (the default) extended to the channels past RGB, so the card fits the model.
            extra = self.in_channels - 3
            object.__setattr__(self, "normalization", Normalization(
                IMAGENET_MEAN + (EXTRA_CHANNEL_MEAN,) * extra, IMAGENET_STD + (EXTRA_CHANNEL_STD,) * extra,
                self.normalization.intensity))
        if self.precision not in PRECISIONS:
            raise CardError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        hidden = sorted(set(self.metadata) & set(CARD_KEYS_IN_V1_METADATA))
        if hidden:
            raise CardError(f"metadata keys {hidden} are card fields now: pass them as fields "
                            "(e.g. save_model(..., normalization=Normalization(mean, std)))")

    # -- what consumers read ------------------------------------------------------------------------------

    @property
    def in_channels(self) -> int:
        """Channels of the model's input (every model takes ``in_channels``; 3 by default)."""
        return int(self.options.get("in_channels", 3))

    @property
    def classes(self) -> list[str]:
        """The class names, or "class i" where the run has none."""
        return list(self.class_names or [f"class {index}" for index in range(self.num_classes)])

    @property
    def colours(self) -> list[list[int]]:
        """The palette, or the PASCAL VOC colour map where the run has none."""
        return [list(colour) for colour in self.palette] if self.palette else voc_palette(self.num_classes)

    @property
    def input_normalization(self) -> Normalization:
        """The normalisation for the model's input channels (grey averages three-channel statistics)."""
        return self.normalization.for_channels(self.in_channels)

    def architecture(self) -> dict[str, Any]:
        """What ``create_model`` rebuilds the network from: ``{"name", "num_classes", "options"}``."""
        return {"name": self.name, "num_classes": self.num_classes, "options": dict(self.options)}

    def replace(self, **changes: Any) -> RunCard:
        """A copy with ``changes`` (field names) applied and checked."""
        return dataclasses.replace(self, **changes)

    # -- config.json --------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON data (format version 2)."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "num_classes": self.num_classes,
            "options": self.options,
            "class_names": self.class_names,
            "palette": self.palette,
            "normalization": {"mean": list(self.normalization.mean), "std": list(self.normalization.std),
                              "intensity": self.normalization.intensity},
            "ignore_index": self.ignore_index,
            "data": dataclasses.asdict(self.data) if self.data is not None else None,
            "precision": self.precision,
            "crf": self.crf.as_keywords(),
            "step": self.step,
            "scores": self.scores,
            "train_config": self.train_config,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, raw: Any, source: str = "config") -> RunCard:
        """Read a card written by any version of pixelwise; raises CardError naming ``source`` and the field."""
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise CardError(f"{source}: not a pixelwise model config (expected \"format\": \"{FORMAT}\")")
        version = raw.get("version")
        if type(version) is not int or version < 1:
            raise CardError(f"{source}: \"version\" must be a whole number (1 or {FORMAT_VERSION}), got {version!r}")
        for key in ("name", "num_classes", "options"):
            if key not in raw:
                raise CardError(f"{source}: missing field {key!r}")
        if not isinstance(raw["options"], dict):
            raise CardError(f"{source}: options must be a mapping, got {raw['options']!r}")
        try:
            if version == 1:
                return _from_v1(raw)
            if version == FORMAT_VERSION:
                return _from_v2(raw)
        except (TypeError, ValueError, KeyError, AttributeError) as error:
            raise CardError(f"{source}: {error}") from error
        raise CardError(f"{source}: format version {version!r} is newer than this pixelwise reads "
                        f"(up to {FORMAT_VERSION}); upgrade pixelwise")


def _data_source(raw: Any) -> DataSource | None:
    if raw is not None and not isinstance(raw, dict):
        raise ValueError(f"data must be a mapping (name, root, options, ...), got {raw!r}")
    if not raw or not raw.get("name"):
        return None
    known = {f.name for f in dataclasses.fields(DataSource)}
    return DataSource(**{key: value for key, value in raw.items() if key in known})


def _architecture_options(raw: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in raw["options"].items() if key not in WEIGHT_SOURCE_OPTIONS}


def _from_v2(raw: dict[str, Any]) -> RunCard:
    normalization = raw.get("normalization") or {}
    if normalization and not {"mean", "std"} <= set(normalization):
        raise ValueError(f"normalization needs both mean and std, got {normalization!r}")
    return RunCard(
        name=raw["name"], num_classes=raw["num_classes"], options=_architecture_options(raw),
        class_names=raw.get("class_names"), palette=raw.get("palette"),
        normalization=Normalization(**normalization) if normalization else Normalization(),
        ignore_index=raw.get("ignore_index", IGNORE_INDEX), data=_data_source(raw.get("data")),
        precision=raw.get("precision", "fp32"), crf=CRFSettings.from_dict(raw.get("crf") or {}),
        step=raw.get("step"), scores=raw.get("scores"), train_config=raw.get("train_config"),
        metadata=raw.get("metadata") or {},
    )


def _from_v1(raw: dict[str, Any]) -> RunCard:
    """Version 1: the trainer's fields inside ``metadata`` (mean, std, ignore_index, train_config, ...)."""
    metadata = dict(raw.get("metadata") or {})
    statistics = metadata.get("normalization") or metadata
    mean, std = statistics.get("mean"), statistics.get("std")
    train_config = metadata.get("train_config") or {}
    options = _architecture_options(raw)
    if raw["name"] == "deeplabv3plus" and options.get("backbone", "xception65") == "xception65":
        # Version 1 recorded only the options a caller passed; the Xception-65 ASPP was not separable then.
        options.setdefault("separable_aspp", False)
    return RunCard(
        name=raw["name"], num_classes=raw["num_classes"], options=options,
        class_names=raw.get("class_names"), palette=raw.get("palette"),
        normalization=Normalization(mean, std) if mean and std else Normalization(),
        ignore_index=metadata.get("ignore_index", IGNORE_INDEX),
        data=_data_source(train_config.get("data")),
        precision=train_config.get("train", {}).get("precision", "fp32"),
        crf=CRFSettings.from_dict(train_config.get("crf") or {}, "the run's crf section"),
        step=metadata.get("step"), scores=metadata.get("scores"), train_config=train_config or None,
        metadata={key: value for key, value in metadata.items() if key not in CARD_KEYS_IN_V1_METADATA},
    )
