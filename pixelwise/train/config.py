"""The training config: nested dataclasses read from YAML, validated, with ``--set key=value`` overrides.

A recipe file is a YAML mapping with the sections below (every key optional, defaults shown in the
dataclasses). An unknown key is an error that names the file and suggests the closest valid key::

    name: camvid-unet
    model: {name: unet, options: {base_channels: 32}}
    data: {name: camvid, root: ../shared/data/camvid, crop_size: [352, 480]}
    optim: {optimizer: sgd, lr: 0.01, momentum: 0.9, schedule: poly, power: 0.9}
    train: {steps: 20000, batch_size: 8, precision: bf16}
    loss: {name: cross_entropy, class_weights: median_frequency}
    eval: {every: 1000}
    result: "val mIoU 0.61 after 20k steps: pixelwise train --config configs/camvid/unet.yaml"
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pixelwise.card import WEIGHT_SOURCE_OPTIONS
from pixelwise.crf.settings import CRFSettings
from pixelwise.data.transforms import IMAGENET_MEAN, IMAGENET_STD, INTENSITY_MODES, Normalization
from pixelwise.infer.options import PRECISIONS
from pixelwise.options import OptionError, coerce


@dataclass
class ModelConfig:
    """Which registered model to build; ``options`` are its own keywords (see ``pixelwise models``).

    ``num_classes`` and, when the model takes it, ``in_channels`` come from the data set.
    """

    name: str = "unet"
    options: dict[str, Any] = field(default_factory=dict)
    # A saved model (a run directory or its best/) whose weights start this run: a fine-tuning phase, e.g.
    # full-resolution crops or another loss after a run, with a fresh optimizer, schedule and EMA.
    init_from: str | None = None


@dataclass
class DataConfig:
    """The data set, its splits, and the training augmentation (``pixelwise.data.transforms``)."""

    name: str = "synthetic"
    root: str | None = None  # relative paths are resolved against the current directory, then the repo root
    train_split: str = "train"
    val_split: str = "val"
    options: dict[str, Any] = field(default_factory=dict)  # data set keywords, e.g. num_images for synthetic
    val_options: dict[str, Any] = field(default_factory=dict)  # overrides of ``options`` for the val split
    crop_size: int | list[int] | None = None
    scale_range: list[float] | None = field(default_factory=lambda: [0.5, 2.0])
    hflip: bool = True
    vflip: bool = False
    quarter_turns: bool = False  # random 0/90/180/270 degree turns (lossless; with both flips, all 8 symmetries)
    rotation: float = 0.0
    elastic: bool | list[float] | None = None  # torchvision's ElasticTransform: true, or [alpha, sigma]
    elastic_grid: list[float] | None = None  # the U-Net paper's deformation: [grid points, std px], e.g. [3, 10]
    color_jitter: float | list[float] | None = None
    blur: float | None = None  # Gaussian blur of half the images, sigma up to this many pixels
    noise: float | None = None  # additive Gaussian noise, std in units of the intensity range (0-1)
    # Per-image intensity stretch before mean/std: "minmax" or "percentile" (1st..99th) for 16-bit and
    # microscopy images whose range varies from image to image; kept in the run card, so inference repeats it.
    intensity: Literal[INTENSITY_MODES] = "none"
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    num_workers: int = 0
    # Decode the training images once and keep them (uint8) on the training device; augment whole batches
    # there (pixelwise.data.in_memory). For data sets that fit in memory; scale, crop and flips only.
    in_memory: bool = False
    # Read every training mask before the first step and refuse label mistakes that score IoU 0 or NaN
    # (pixelwise.data.check); false skips that pass for a large data set already checked with check-data.
    check_labels: bool = True


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule (``pixelwise.train.schedules``)."""

    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0005
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: Literal["poly", "cosine", "step", "constant"] = "poly"
    power: float = 0.9  # poly: lr * (1 - step / steps) ** power
    milestones: list[int] = field(default_factory=list)  # step: multiply by gamma at each of these steps
    gamma: float = 0.1
    warmup_steps: int = 0  # linear warm-up from lr * warmup_factor before the schedule starts
    warmup_factor: float = 0.1


@dataclass
class TrainConfig:
    """The loop: how many optimizer steps, batch size, precision and reproducibility."""

    steps: int = 1000  # optimizer steps (the papers' "iterations")
    batch_size: int = 8  # per process: under torchrun each step sees batch_size * accumulate * processes images
    accumulate: int = 1  # gradient accumulation: each step sees batch_size * accumulate images
    precision: Literal[PRECISIONS] = "fp32"  # bf16 autocast on CPU/CUDA; fp16 (+ scaler) on CUDA
    channels_last: bool = False
    seed: int = 0
    deterministic: bool = False  # deterministic kernels: a resumed run ends bit-identical on CPU
    device: str = "auto"  # "auto" picks cuda when available; under torchrun each rank takes cuda:LOCAL_RANK
    sync_batchnorm: bool = False  # under torchrun: BatchNorm statistics over all processes' batches (CUDA only)
    dist_timeout: float = 600.0  # seconds a process waits for its peers before failing; env PIXELWISE_DIST_TIMEOUT
    threads: int | None = None  # torch.set_num_threads; None keeps torch's default
    ema_decay: float | None = None  # validate and save an EMA of the weights (pixelwise.train.ema), e.g. 0.999
    ema_warmup: float = 10.0  # the decay is min(ema_decay, (1 + step) / (ema_warmup + step)): > 1, lower = longer
    log_every: int = 10
    checkpoint_every: int = 500
    progress: bool = True


@dataclass
class LossConfig:
    """The loss (``pixelwise.train.losses``); ``aux_weights`` weigh a model's ``aux_outputs``, in order."""

    name: Literal["cross_entropy", "focal", "dice", "lovasz", "ohem"] = "cross_entropy"
    class_weights: str | list[float] | None = None  # None, "median_frequency" (SegNet) or one weight per class
    focal_gamma: float = 2.0
    ohem_threshold: float = 0.7  # OHEM keeps pixels whose true-class probability is below this ...
    ohem_min_kept: int = 100_000  # ... and at least this many of the hardest pixels per batch
    aux_weights: list[float] = field(default_factory=list)


@dataclass
class EvalConfig:
    """Validation during training (the last step always validates) and what the end-of-run plots show."""

    every: int = 500
    batch_size: int = 1
    plot_images: int = 4


@dataclass
class Config:
    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # The dense CRF that ``eval --crf`` and ``predict --crf`` apply after the model (kept in the run card).
    crf: CRFSettings = field(default_factory=CRFSettings)
    result: str | None = None  # what this recipe reached and the command that reproduces it (free text)


class ConfigError(ValueError):
    """A config problem; the message names the source and the offending key."""


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a plain dict (as parsed from YAML) into a ``Config``; raises ``ConfigError``."""
    config = _build(Config, raw, source, "")
    _check_values(config, source)
    return config


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as plain JSON/YAML data (round-trips through ``config_from_dict``)."""
    return dataclasses.asdict(config)


def load_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML recipe, apply ``key=value`` overrides, validate. ``name`` defaults to the file's stem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError as error:  # an image or other binary file given as the recipe
        raise ConfigError(f"{path}: not a YAML text file (byte {error.start} is not UTF-8); give a recipe "
                          "from configs/") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    raw.setdefault("name", path.stem)
    return config_from_dict(apply_overrides(raw, overrides), str(path))


def parse_assignment(text: str, flag: str) -> tuple[str, Any]:
    """``"key=value"`` -> (key, value parsed as YAML: numbers, booleans, lists, null); ``flag`` names the option."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"{flag} {text!r}: expected key=value (the value in YAML: 3, 0.5, true, [8, 16])")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise ConfigError(f"{flag} {text!r}: value is not valid YAML ({error})") from error


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``"a.b.c=value"`` set; values are parsed as YAML scalars/lists."""
    raw = copy.deepcopy(raw)
    for override in overrides:
        key, value = parse_assignment(override, "--set")
        *parents, leaf = key.split(".")
        node = raw
        for depth, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {override!r}: {'.'.join(parents[: depth + 1])} is not a section")
            node = child
        node[leaf] = value
    return raw


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(fields)}"
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'{hint}")
        values[key] = _coerce(value, hints[key], source, f"{prefix}{key}")
    return cls(**values)


def _coerce(value: Any, hint: Any, source: str, key: str) -> Any:
    """Check ``value`` against the type ``hint``; returns it converted (int -> float, nested dataclasses)."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, f"{key}.")
    try:
        return coerce(value, hint, key)
    except OptionError as error:
        raise ConfigError(f"{source}: {error}") from error


def _check_values(config: Config, source: str) -> None:
    """Range checks the types alone cannot express."""
    positive = {
        "train.steps": config.train.steps,
        "train.batch_size": config.train.batch_size,
        "train.accumulate": config.train.accumulate,
        "train.log_every": config.train.log_every,
        "train.checkpoint_every": config.train.checkpoint_every,
        "eval.every": config.eval.every,
        "eval.batch_size": config.eval.batch_size,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{source}: {key} must be >= 1, got {value}")
    if config.train.dist_timeout <= 0:
        raise ConfigError(f"{source}: train.dist_timeout must be > 0 seconds, got {config.train.dist_timeout}")
    if config.train.ema_decay is not None and not 0 < config.train.ema_decay < 1:
        raise ConfigError(f"{source}: train.ema_decay must be in (0, 1), got {config.train.ema_decay}")
    if config.train.ema_warmup <= 1:
        raise ConfigError(f"{source}: train.ema_warmup must be > 1, got {config.train.ema_warmup}")
    given = [key for key in WEIGHT_SOURCE_OPTIONS if config.model.options.get(key)]
    if config.model.init_from and given:
        raise ConfigError(f"{source}: model.init_from and model.options.{given[0]} both give the starting weights; "
                          "keep one")
    if config.optim.lr <= 0:
        raise ConfigError(f"{source}: optim.lr must be > 0, got {config.optim.lr}")
    try:
        Normalization(tuple(config.data.mean), tuple(config.data.std), config.data.intensity)
    except ValueError as error:
        raise ConfigError(f"{source}: data.mean, data.std: {error}") from error
    weights = config.loss.class_weights
    if isinstance(weights, str) and weights != "median_frequency":
        raise ConfigError(f"{source}: loss.class_weights = {weights!r}: use \"median_frequency\" or a list")
