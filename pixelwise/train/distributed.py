"""The seams where multi-process (DDP) training plugs in; single-process versions today.

Everything that differs between one process and ``torchrun`` lives here, so adding
``torch.distributed`` means changing these few functions and nothing in the trainer's logic.
"""

from __future__ import annotations

from torch import nn

from pixelwise.metrics import ConfusionMatrix
from pixelwise.train.sampling import SampleStream


def rank_and_world_size() -> tuple[int, int]:
    """(this process's rank, number of processes): (0, 1) without torch.distributed."""
    return 0, 1


def is_main_process() -> bool:
    """Only the main process writes files, logs and draws the progress bar."""
    return rank_and_world_size()[0] == 0


def train_sampler(num_samples: int, seed: int, start_step: int, images_per_step: int) -> SampleStream:
    """The training sample stream of this process, starting at optimizer step ``start_step``.

    ``images_per_step`` counts the images of one optimizer step over all processes.
    """
    rank, world_size = rank_and_world_size()
    return SampleStream(num_samples, seed, start_step * images_per_step, rank, world_size)


def wrap_model(model: nn.Module) -> nn.Module:
    """The module the training loop calls (DistributedDataParallel(model) under DDP).

    Under DDP with ``train.accumulate > 1``, ``train_step`` should also skip the gradient all-reduce of
    all but the last micro-batch (``model.no_sync()``); today it has nothing to skip.
    """
    return model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside whatever ``wrap_model`` returned (for saving and ``aux_outputs``)."""
    return getattr(model, "module", model)


def reduce_confusion(confusion: ConfusionMatrix) -> ConfusionMatrix:
    """Sum the confusion matrices of all processes (all_reduce of ``confusion.matrix`` under DDP)."""
    return confusion
