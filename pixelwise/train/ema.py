"""Exponential moving average (EMA) of the weights: evaluate and ship the average, not the last step.

With small batches the weights (and BatchNorm's running statistics) after any one step are noisy; their
moving average ``ema = decay * ema + (1 - decay) * weights`` is a smoother model that usually validates
better and without the step-to-step jumps. Parameters and buffers are both averaged (torch's
``AveragedModel`` with ``use_buffers=True``), integer buffers such as BatchNorm's batch counter are copied.

The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (as timm's ModelEma and
TensorFlow's ``num_updates`` do), so the first, random weights are forgotten within a few hundred steps
instead of weighing on the average for thousands.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def warmed_up_ema(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """An ``AveragedModel`` ``multi_avg_fn``: one EMA update of a group of same-dtype tensors, in place."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        if not (torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0])):
            torch._foreach_copy_(averaged, current)  # counters: an average of step counts means nothing
            return
        updates = int(num_averaged.item())
        step_decay = min(decay, (1 + updates) / (10 + updates))
        torch._foreach_lerp_(averaged, current, 1 - step_decay)

    return update


def weight_average(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA copy of ``model``; call ``.update_parameters(model)`` after each optimizer step.

    ``.module`` is the averaged model (same class, loadable where ``model`` is); ``.state_dict()`` also holds
    the update count, so a resumed run continues the same average.
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
    return AveragedModel(model, multi_avg_fn=warmed_up_ema(decay), use_buffers=True)
