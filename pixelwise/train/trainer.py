"""The training loop: config in, run directory out.

A run directory holds::

    config.yaml            the full training config (``--resume`` reads it back)
    model.safetensors      latest weights  } loadable with pixelwise.load_model(run_dir); with
    config.json            and their config }   train.ema_decay, the moving average of the weights
    best/                  the same pair for the best validation mIoU so far
    state/                 the trainer state for an exact resume (see pixelwise.train.state)
    metrics.jsonl          one JSON row per log (step, loss, lr, images_per_s) or evaluation (step, miou, ...)
    *.png                  loss and mIoU curves, per-class IoU, validation overlays (written at the end)

Exact resume: the sample order and each sample's augmentation are pure functions of the seed and the
stream position (``pixelwise.train.sampling``), the learning rate a pure function of the step, and the
checkpoint holds the weights, optimizer, scheduler, grad scaler and torch RNG states of one step. In
deterministic mode on CPU a run killed at any moment and resumed ends with bit-identical weights.

Under ``torchrun`` the same function trains with DistributedDataParallel (``pixelwise.train.distributed``):
``train.batch_size`` is per process, each process draws its share of the one sample stream, and only
rank 0 writes the run directory, so the checkpoint format does not depend on the number of processes.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pixelwise.card import DataSource, RunCard
from pixelwise.checkpoint import CONFIG_FILE, load_model, read_card, save_model
from pixelwise.data import build_dataset, median_frequency_weights, resolve_root
from pixelwise.data.in_memory import InMemoryBatches, unsupported_augmentations
from pixelwise.data.transforms import Normalization, build_transforms
from pixelwise.fileio import atomic_write
from pixelwise.models import create_model, model_options
from pixelwise.train import plots
from pixelwise.train.config import Config, config_to_dict
from pixelwise.train.distributed import (
    eval_shard,
    from_main_process,
    gradient_sync,
    is_main_process,
    mean_over_processes,
    rank_and_world_size,
    setup,
    train_sampler,
    unwrap_model,
    wrap_model,
)
from pixelwise.train.ema import weight_average
from pixelwise.train.evaluate import evaluate, predict, refuse_label_mistakes
from pixelwise.train.losses import SegmentationLoss, crop_target_to
from pixelwise.train.runtime import autocast, make_reproducible
from pixelwise.train.sampling import SeededSamples
from pixelwise.train.schedules import build_optimizer, build_scheduler
from pixelwise.train.state import checkpoint_steps, load_state, rng_states, save_state, set_rng_states

CONFIG_YAML = "config.yaml"
METRICS_FILE = "metrics.jsonl"
BEST_DIR = "best"


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    scores: dict  # validation scores after the last step (pixelwise.metrics.ConfusionMatrix.compute)
    best_miou: float


def default_run_dir(name: str) -> Path:
    """``runs/<name>-<date>-<time>``: where a run goes when no directory is given."""
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_new_run_dir(run_dir: Path, init_from: str | None = None) -> None:
    """Refuse to start a run where it would replace files: ``run_dir`` must be new or an empty folder, and must not
    hold the saved model ``model.init_from`` names (a run rewrites its weights, best/, metrics and plots)."""
    if run_dir.is_file():
        raise ValueError(f"{run_dir} is a file; a run needs a folder")
    if init_from and run_dir.resolve() in (Path(resolve_root(init_from)).resolve(),
                                           *Path(resolve_root(init_from)).resolve().parents):
        raise ValueError(f"model.init_from {init_from} lies inside the run directory {run_dir}, which the run "
                         "would overwrite; pick another run directory")
    held = sorted(path.name for path in run_dir.iterdir()) if run_dir.is_dir() else []
    if not held:
        return
    shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
    if not (run_dir / CONFIG_YAML).is_file():
        raise ValueError(f"{run_dir} is not empty ({shown}); a new run needs a new or empty folder: pick another")
    if checkpoint_steps(run_dir):
        raise ValueError(f"{run_dir} already holds a run ({shown}); continue it with `pixelwise train --resume "
                         f"{run_dir}` or pick another folder")
    raise ValueError(f"{run_dir} holds a run that stopped before its first checkpoint, so there is nothing to "
                     f"resume ({shown}); delete that folder to start it again, or pick another")


def write_config(config: Config, run_dir: Path) -> None:
    with atomic_write(run_dir / CONFIG_YAML, "w") as handle:
        yaml.safe_dump(config_to_dict(config), handle, sort_keys=False)


def build_datasets(config: Config, transforms: bool = True, train_transforms: bool = True) -> tuple[Dataset, Dataset]:
    """(train set, val set); with ``transforms`` the train set augments (unless ``train_transforms`` is
    False: the in-memory path augments whole batches) and both normalise."""
    data = config.data
    root = resolve_root(data.root)
    train_transform = val_transform = None
    if transforms:
        crop = tuple(data.crop_size) if isinstance(data.crop_size, list) else data.crop_size
        train_transform = build_transforms(
            True, crop_size=crop, scale_range=tuple(data.scale_range) if data.scale_range else None,
            hflip=data.hflip, vflip=data.vflip, quarter_turns=data.quarter_turns, rotation=data.rotation,
            elastic=tuple(data.elastic) if isinstance(data.elastic, list) else data.elastic,
            elastic_grid=tuple(data.elastic_grid) if data.elastic_grid else None,
            color_jitter=tuple(data.color_jitter) if isinstance(data.color_jitter, list) else data.color_jitter,
            blur=data.blur, noise=data.noise, mean=data.mean, std=data.std, intensity=data.intensity,
        )
        val_transform = build_transforms(False, mean=data.mean, std=data.std, intensity=data.intensity)
    train_set = build_dataset(data.name, root, data.train_split, train_transform if train_transforms else None,
                              **data.options)
    val_set = build_dataset(data.name, root, data.val_split, val_transform, **{**data.options, **data.val_options})
    return train_set, val_set


def in_memory_batches(config: Config, train_set: Dataset, samples, device: torch.device) -> InMemoryBatches:
    """The training batches cut on ``device`` from a decoded copy of the train set (``data.in_memory``)."""
    data = config.data
    batches = InMemoryBatches(
        train_set, samples, device, config.train.batch_size,
        crop_size=tuple(data.crop_size) if isinstance(data.crop_size, list) else data.crop_size,
        scale_range=tuple(data.scale_range) if data.scale_range else None, hflip=data.hflip, vflip=data.vflip,
        normalization=Normalization(tuple(data.mean), tuple(data.std), data.intensity))
    if is_main_process():
        print(f"data.in_memory: {len(train_set)} training images decoded, {batches.nbytes / 2**20:.0f} MiB on {device}")
    return batches


def build_model(config: Config, dataset: Dataset) -> nn.Module:
    """The configured model with the data set's classes (and input channels, when the model takes them)."""
    options = dict(config.model.options)
    if "in_channels" in model_options(config.model.name):
        options.setdefault("in_channels", dataset.in_channels)
    return create_model(config.model.name, dataset.num_classes, **options)


def read_initial_model(directory: str) -> nn.Module:
    """The saved model ``model.init_from`` names, read before any data is."""
    path = Path(resolve_root(directory))  # found as data.root is: $VARS, ~, then cwd or the repository
    if path.is_file():
        raise ValueError(f"model.init_from: {path} is a file; give the directory that holds config.json and "
                         "model.safetensors (a run directory or its best/)")
    try:
        return load_model(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"model.init_from: {error}") from error


def start_from(model: nn.Module, source: nn.Module, card: RunCard, directory: Path) -> None:
    """Copy ``source``'s weights into ``model`` (whose run card is ``card``), refusing any model, classes or
    input normalisation other than the saved one's: each would train on silently misread weights."""
    saved = source.card
    mismatches = [
        f"{field} {mine!r} (saved {theirs!r})"
        for field, mine, theirs in (
            ("model", card.name, saved.name),
            ("classes", card.classes, saved.classes),
            ("data.mean", card.normalization.mean, saved.normalization.mean),
            ("data.std", card.normalization.std, saved.normalization.std),
            ("data.intensity", card.normalization.intensity, saved.normalization.intensity),
        )
        if mine != theirs
    ]
    if mismatches:
        raise ValueError(f"model.init_from: {directory} does not match this run: " + "; ".join(mismatches))
    load_weights(model, source.state_dict(), card.options, saved.options, f"model.init_from: {directory}")


def load_weights(model: nn.Module, weights: dict, options: dict, saved_options: dict, source: str) -> None:
    """``model.load_state_dict(weights)``, or a ValueError naming the model options (width, depth, in_channels
    ...) that differ between ``options`` (the model's) and ``saved_options`` (those the weights were made with)."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        differences = [f"model.options.{key} {options.get(key)!r} (saved {saved_options.get(key)!r})"
                       for key in sorted(set(options) | set(saved_options))
                       if options.get(key) != saved_options.get(key)]
        # torch's message lists every mismatched tensor, dozens of lines: the first one is enough.
        reason = "; ".join(differences) or (str(error).splitlines()[1:2] or [str(error)])[0].strip()
        raise ValueError(f"{source} holds other weights than this run's model: {reason}") from None


def class_weights(config: Config, num_classes: int, image_class_counts: torch.Tensor | None = None
                  ) -> torch.Tensor | None:
    """The loss's class weights: None, the configured list, or SegNet's median-frequency balancing.

    Median frequencies are counted on the un-augmented training split (crops and padding would skew them):
    ``image_class_counts`` (N, C) when the caller has them from its label check, else by reading it.
    """
    weights = config.loss.class_weights
    if weights is None:
        return None
    if weights == "median_frequency":
        counts = build_datasets(config, transforms=False)[0] if image_class_counts is None else image_class_counts
        return torch.as_tensor(median_frequency_weights(counts), dtype=torch.float32)
    if len(weights) != num_classes:
        raise ValueError(f"loss.class_weights has {len(weights)} entries for {num_classes} classes")
    return torch.tensor(weights, dtype=torch.float32)


def check_train_labels(config: Config, train_set: Dataset) -> torch.Tensor:
    """Read every training mask once, before the first step, and refuse the label mistakes that would make a
    class score IoU 0 or NaN (pixelwise.data.check); returns the (N, C) class pixels of each mask."""
    data = config.data
    scan = refuse_label_mistakes(train_set, data.train_split,
                                 data.name if data.root is None else f"{data.name}:{data.root}", data.options,
                                 how_to_skip="; data.check_labels: false skips this check",
                                 split_field="data.train_split")
    return scan.image_class_counts


class MetricsLog:
    """``metrics.jsonl``, rewritten atomically on every append (rows past a resumed step are dropped)."""

    def __init__(self, path: Path, keep_until_step: int) -> None:
        self.path = path
        self.rows: list[dict] = []
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            self.rows = [row for row in rows if row["step"] <= keep_until_step]

    def append(self, row: dict) -> None:
        self.rows.append(row)
        if is_main_process():
            with atomic_write(self.path, "w") as handle:
                handle.writelines(json.dumps(row) + "\n" for row in self.rows)


def tensorboard_writer(run_dir: Path):
    """A TensorBoard SummaryWriter when the ``tensorboard`` package is installed, else None."""
    if not is_main_process():
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def train(config: Config, run_dir: str | os.PathLike, resume: bool = False) -> TrainResult:
    """Train ``config`` into ``run_dir``; with ``resume``, continue from the run's latest checkpoint.

    A new run needs a new or empty ``run_dir`` (``check_new_run_dir``): nothing of an earlier run is replaced.
    """
    run_dir = Path(run_dir)
    settings = config.train
    if not resume and is_main_process():
        check_new_run_dir(run_dir, config.model.init_from)
    resizes = config.data.scale_range is not None and tuple(config.data.scale_range) != (1.0, 1.0)
    if resizes and config.data.crop_size is None and settings.batch_size > 1:
        # Caught before anything is written: the first batch would fail to stack images of different sizes.
        raise ValueError(f"data.scale_range resizes each image by its own factor, so batches of train.batch_size "
                         f"{settings.batch_size} need data.crop_size to give them one size (or data.scale_range: null)")
    if config.data.in_memory and unsupported_augmentations(config.data):
        raise ValueError(f"data.in_memory augments by scale, crop and flips only; turn off "
                         f"{', '.join('data.' + name for name in unsupported_augmentations(config.data))} "
                         "or data.in_memory")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = setup(settings.device, settings.dist_timeout)
    autocast(device, settings.precision)  # fp16 without CUDA is refused here, before any file is written
    # The same seed on every rank: identical initial weights and dropout streams (rank 0's RNG is saved).
    make_reproducible(settings.seed, settings.deterministic)

    # A resumed run's state holds its weights; a new one reads init_from before the (slow) data.
    initial = read_initial_model(config.model.init_from) if config.model.init_from and not resume else None
    train_set, val_set = build_datasets(config, train_transforms=not config.data.in_memory)
    image_class_counts = check_train_labels(config, train_set) if config.data.check_labels else None
    model = build_model(config, train_set)
    if initial is not None:
        source = Path(resolve_root(config.model.init_from))
        start_from(model, initial, run_card(config, train_set, model), source)
        if is_main_process():
            miou = (initial.card.scores or {}).get("miou")
            scores = f", val mIoU {miou:.4f}" if miou is not None else ""
            print(f"model.init_from: starting from {source} (step {initial.card.step}{scores})")
    model = model.to(device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    network = wrap_model(model, device, settings.sync_batchnorm)
    model = unwrap_model(network)  # the plain module (SyncBatchNorm inside under DDP) for saving and evaluation
    weights = class_weights(config, train_set.num_classes, image_class_counts)
    criterion = SegmentationLoss(config.loss, weights, train_set.ignore_index).to(device)
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, settings.steps, config.optim)
    scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "fp16")
    # What is validated, kept as best and shipped: the model itself, or the moving average of its weights.
    average = (weight_average(model, settings.ema_decay, settings.ema_warmup) if settings.ema_decay is not None
               else None)
    shipped = average.module if average is not None else model

    world_size = rank_and_world_size()[1]
    images_per_step = settings.batch_size * settings.accumulate * world_size  # over all processes
    start_step, best_miou, stream_start = 0, -math.inf, 0
    saved = load_state(run_dir) if resume else None
    if resume and saved is None:
        # Starting again from step 0 would overwrite the run's weights and best/ without a word.
        raise ValueError(f"{run_dir}: nothing to resume ({run_dir / 'state' / 'latest.json'} is missing); the run "
                         "never reached its first checkpoint or its state/ was removed. Start a new run instead")
    if saved is not None:
        start_step, state = saved
        # Every rank loads the same state, so no broadcast is needed (DDP's own one at wrap time came first).
        saved_options = read_card(run_dir).options if (run_dir / CONFIG_FILE).is_file() else {}
        load_weights(model, state["model"], model.card.options, saved_options,
                     f"{run_dir / 'state'} (config.yaml edited since the run started?)")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if average is not None:
            if "ema" not in state:
                raise ValueError(f"{run_dir}: the run was started without train.ema_decay; resume it without")
            average.load_state_dict(state["ema"])
        try:
            set_rng_states(state["rng"])
        except (RuntimeError, KeyError, TypeError) as error:
            raise ValueError(f"{run_dir / 'state'}: the saved random number generator states are invalid ({error})") \
                from error
        best_miou = state["best_miou"]
        # The stream continues where it stopped even if the number of processes changed since.
        stream_start = state.get("samples_seen", start_step * images_per_step)
        if is_main_process():
            print(f"{run_dir}: resuming after step {start_step} of {settings.steps}")
    main_start_step = from_main_process(start_step)
    if main_start_step != start_step:
        raise ValueError(f"{run_dir}: rank {rank_and_world_size()[0]} resumes at step {start_step} but rank 0 at "
                         f"step {main_start_step}: every node must see the same run directory")
    if is_main_process():
        write_config(config, run_dir)
    log = MetricsLog(run_dir / METRICS_FILE, keep_until_step=start_step)
    writer = tensorboard_writer(run_dir)

    samples = train_sampler(len(train_set), settings.seed, stream_start)
    if config.data.in_memory:
        batches = in_memory_batches(config, train_set, samples, device)
    else:
        batches = iter(DataLoader(
            SeededSamples(train_set), batch_size=settings.batch_size, sampler=samples,
            num_workers=config.data.num_workers, pin_memory=device.type == "cuda",
            # Its own generator: creating the loader must not draw from the global RNG the model uses.
            generator=torch.Generator(),
        ))
    val_loader = DataLoader(val_set, batch_size=config.eval.batch_size, sampler=eval_shard(len(val_set)),
                            num_workers=config.data.num_workers)
    card = run_card(config, train_set, model)

    progress = tqdm(total=settings.steps, initial=start_step, disable=not (is_main_process() and settings.progress),
                    dynamic_ncols=True, unit="step")
    window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
    scores: dict = {}
    for step in range(start_step + 1, settings.steps + 1):  # ``step`` counts completed optimizer steps
        network.train()
        lr = optimizer.param_groups[0]["lr"]
        loss = train_step(network, criterion, optimizer, scaler, islice(batches, settings.accumulate), device,
                          settings.precision, settings.channels_last, settings.accumulate)
        scheduler.step()
        if average is not None:
            average.update_parameters(model)
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {step}: lower optim.lr or check the data")
        window_loss, window_steps = window_loss + loss, window_steps + 1
        progress.update()
        if step % settings.log_every == 0 or step == settings.steps:
            seconds = time.perf_counter() - window_start
            row = {"step": step, "loss": mean_over_processes(window_loss / window_steps), "lr": lr,
                   "images_per_s": window_steps * images_per_step / max(seconds, 1e-9)}
            log.append(row)
            progress.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}", img_s=f"{row['images_per_s']:.1f}")
            if writer is not None:
                for key in ("loss", "lr", "images_per_s"):
                    writer.add_scalar(f"train/{key}", row[key], step)
            window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
        if step % config.eval.every == 0 or step == settings.steps:
            scores = evaluate(shipped, val_loader, train_set.num_classes, train_set.ignore_index,
                              settings.precision, settings.channels_last).compute()
            log.append({"step": step, **scores})
            if writer is not None:
                for key in ("miou", "pixel_accuracy", "mdice"):
                    writer.add_scalar(f"val/{key}", scores[key], step)
            if scores["miou"] > best_miou:
                best_miou = scores["miou"]
                if is_main_process():
                    save_model(shipped, run_dir / BEST_DIR, card, step=step, scores=scores)
            window_start = time.perf_counter()  # evaluation time is not training throughput
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            samples_seen = stream_start + (step - start_step) * images_per_step
            checkpoint(run_dir, step, model, optimizer, scheduler, scaler, best_miou, samples_seen, card,
                       scores, average)
    progress.close()
    if writer is not None:
        writer.close()
    if is_main_process() and scores:
        write_plots(config, run_dir, log.rows, scores, shipped, train_set)
    return TrainResult(run_dir, settings.steps, scores, best_miou)


def train_step(model: nn.Module, criterion: SegmentationLoss, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, batches, device: torch.device, precision: str,
               channels_last: bool, accumulate: int) -> float:
    """One optimizer step over ``accumulate`` batches (gradients summed); returns the mean batch loss.

    Under DDP the gradients are all-reduced once, during the last micro-batch's backward.
    """
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for index, (images, masks) in enumerate(batches):
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with gradient_sync(model, enabled=index == accumulate - 1):
            with autocast(device, precision):
                logits = model(images)
            aux_outputs = getattr(unwrap_model(model), "aux_outputs", None) or ()
            loss = criterion(logits, masks, aux_outputs) / accumulate
            scaler.scale(loss).backward()
        total += loss.item()
    scaler.step(optimizer)
    scaler.update()
    return total


def run_card(config: Config, dataset: Dataset, model: nn.Module) -> RunCard:
    """The card of the run's checkpoints: the model's architecture with what inference needs to repeat the
    input (classes, palette, normalisation), where the data came from, the precision and the CRF settings."""
    data = config.data
    return model.card.replace(
        class_names=list(dataset.class_names),
        palette=[list(colour) for colour in dataset.palette],
        normalization=Normalization(tuple(data.mean), tuple(data.std), data.intensity),
        ignore_index=dataset.ignore_index,
        data=DataSource(data.name, data.root, dict(data.options), dict(data.val_options), data.val_split),
        precision=config.train.precision,
        crf=config.crf,
        train_config=config_to_dict(config),
    )


def checkpoint(run_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler, best_miou: float,
               samples_seen: int, card: RunCard, scores: dict, average: AveragedModel | None = None
               ) -> None:
    """Latest weights for users (``load_model(run_dir)``), then the trainer state (``latest`` pointer last).

    ``samples_seen`` is the global sample-stream position after ``step`` (all processes together). With a
    weight ``average`` (EMA) users get the average, and the state keeps both it and the raw weights.
    """
    if not is_main_process():
        return
    save_model(average.module if average is not None else model, run_dir, card, step=step, scores=scores)
    extra = {"ema": average.state_dict()} if average is not None else {}
    save_state(run_dir, step, {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_states(),
        "best_miou": best_miou,
        "samples_seen": samples_seen,
        **extra,
    })


def write_plots(config: Config, run_dir: Path, rows: list[dict], scores: dict, model: nn.Module,
                train_set: Dataset) -> None:
    plots.plot_curves(rows, run_dir)
    plots.plot_class_iou(scores, train_set.class_names, run_dir / "class_iou.png")
    count = config.eval.plot_images
    if count < 1:
        return
    raw_val = build_datasets(config, transforms=False)[1]
    normalise = build_transforms(False, mean=config.data.mean, std=config.data.std, intensity=config.data.intensity)
    device = next(model.parameters()).device
    examples = []
    for index in range(min(count, len(raw_val))):
        image, mask = raw_val[index]
        labels = predict(model.eval(), normalise(image, mask)[0][None].to(device), config.train.precision)[0].cpu()
        examples.append((crop_target_to(labels, image), crop_target_to(labels, mask), labels))
    plots.plot_examples(examples, train_set.palette, run_dir / "examples.png", train_set.ignore_index)
