"""Multi-process training and evaluation (``torchrun``): every place where N processes differ from one.

torchrun starts one process per device and tells each where it stands through the environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). ``setup`` reads it and joins the process
group; without those variables (a plain ``pixelwise train``) it does nothing and every other function here
is the single-process identity, so the trainer runs the same code either way.

Sharding keeps resume exact: rank ``r`` of ``W`` takes every ``W``-th position of the one global sample
stream (``pixelwise.train.sampling``), so its shard is a pure function of (seed, epoch, rank, W) and the
images of one optimizer step over all ranks are those a single process with the whole batch would see.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pixelwise.device import resolve_device
from pixelwise.metrics import ConfusionMatrix
from pixelwise.train.sampling import SampleStream

TIMEOUT_ENV = "PIXELWISE_DIST_TIMEOUT"  # seconds; overrides train.dist_timeout (and serves ``pixelwise eval``)
DEFAULT_TIMEOUT_S = 600.0


def launched_world_size() -> int:
    """How many processes the launcher started (torchrun's ``WORLD_SIZE``); 1 for a plain run."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device_name: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> torch.device:
    """Join the process group when started by torchrun, and return the device this process computes on.

    The backend follows the device: nccl on CUDA, where rank ``LOCAL_RANK`` of each node takes
    ``cuda:LOCAL_RANK`` whatever index ``device_name`` names; gloo on CPU. A collective that waits more than
    ``timeout_s`` seconds for a peer fails instead of hanging (``$PIXELWISE_DIST_TIMEOUT`` overrides it).
    Calling it again once joined only returns the device.
    """
    device = resolve_device(device_name)
    if launched_world_size() == 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        exit_with_launcher()
        timeout = float(os.environ.get(TIMEOUT_ENV, timeout_s))
        if device.type == "cuda":
            dist.init_process_group("nccl", timeout=timedelta(seconds=timeout), device_id=device)
        else:
            dist.init_process_group("gloo", timeout=timedelta(seconds=timeout))
    return device


def exit_with_launcher(poll_s: float = 0.5) -> None:
    """Exit this process soon after the launcher that started it dies.

    torchrun starts each worker in a session of its own, so ``kill -9`` of torchrun (or of its process
    group) would leave the workers training, and writing into the run directory, as orphans.
    """
    launcher = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(poll_s)
        print(f"pixelwise: the launcher (pid {launcher}) of rank {os.environ.get('RANK')} is gone; exiting",
              file=sys.stderr, flush=True)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-launcher", daemon=True).start()


def shutdown() -> None:
    """Leave the process group (at the end of a command), if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_and_world_size() -> tuple[int, int]:
    """(this process's rank, number of processes): (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Only the main process (rank 0) writes files, logs and draws the progress bar."""
    return rank_and_world_size()[0] == 0


def from_main_process(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object), e.g. a run directory named after the clock."""
    if rank_and_world_size()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def train_sampler(num_samples: int, seed: int, start: int) -> SampleStream:
    """This process's share of the training sample stream, from global stream position ``start`` on.

    Rank ``r`` takes positions ``start + r, start + r + W, ...``: with a per-process batch ``b``, the
    ``W * b`` images of one step over all ranks are positions ``[start, start + W * b)``, exactly the batch
    one process with batch size ``W * b`` would draw.
    """
    rank, world_size = rank_and_world_size()
    return SampleStream(num_samples, seed, start, rank, world_size)


def eval_shard(num_samples: int) -> range:
    """Indices this process evaluates: ``r, r + W, r + 2W, ...``.

    No index is padded or repeated (unlike DistributedSampler's default), so the shards may differ in
    length by one and the summed confusion matrix counts every sample exactly once.
    """
    rank, world_size = rank_and_world_size()
    return range(rank, num_samples, world_size)


def wrap_model(model: nn.Module, device: torch.device, sync_batchnorm: bool = False) -> nn.Module:
    """The module the training loop calls: ``DistributedDataParallel(model)`` under torchrun.

    DDP averages the gradients of all ranks during ``backward``. With ``sync_batchnorm`` the BatchNorm
    layers are converted in place to SyncBatchNorm, whose statistics span the global batch; torch runs
    SyncBatchNorm on CUDA only. A single process is returned ``model`` itself (there is nothing to sync).
    """
    if rank_and_world_size()[1] == 1:
        return model
    if sync_batchnorm:
        if device.type != "cuda":
            raise ValueError("train.sync_batchnorm needs CUDA devices: torch's SyncBatchNorm does not run on CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside whatever ``wrap_model`` returned (for saving, evaluation and ``aux_outputs``)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def gradient_sync(model: nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """Context for one micro-batch's forward and backward: without ``enabled`` DDP skips its all-reduce.

    Gradient accumulation syncs only on the last micro-batch of a step; the others just add to ``.grad``.
    """
    if enabled or not isinstance(model, DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def collective_device() -> torch.device:
    """Where tensors for a collective must live: the process's GPU under nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_over_processes(value: float) -> float:
    """The mean of ``value`` over all ranks (the logged training loss covers the whole global batch)."""
    if rank_and_world_size()[1] == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=collective_device())
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.item() / dist.get_world_size()


def reduce_confusion(confusion: ConfusionMatrix) -> ConfusionMatrix:
    """Sum the confusion matrices of all processes into ``confusion`` (every rank gets the total)."""
    if rank_and_world_size()[1] == 1:
        return confusion
    matrix = confusion.matrix.to(collective_device())
    dist.all_reduce(matrix, op=dist.ReduceOp.SUM)
    confusion.matrix = matrix
    return confusion
