"""Exponential moving average (EMA) of the weights: evaluate and ship the average, not the last step.

With small batches the weights (and BatchNorm's running statistics) after any one step are noisy; their
moving average ``ema = decay * ema + (1 - decay) * weights`` is a smoother model that usually validates
better and without the step-to-step jumps. Parameters and buffers are both averaged (torch's
``AveragedModel`` with ``use_buffers=True``), integer buffers such as BatchNorm's batch counter are copied.

The decay warms up as ``min(decay, (1 + n) / (warmup + n))`` after ``n`` updates (TensorFlow's
``ExponentialMovingAverage(num_updates=...)`` with ``warmup = 10``), so the first, random weights are forgotten
within a few hundred steps instead of weighing on the average for thousands. Until the cap binds, the average
spans about the last ``n / (warmup - 1)`` steps: a smaller ``warmup`` averages longer stretches of a short run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

TensorGroupUpdate = Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]


def warmed_up_ema(decay: float, warmup: float = 10.0) -> TensorGroupUpdate:
    """An ``AveragedModel`` ``multi_avg_fn``: one EMA update of a group of same-dtype tensors, in place."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        if not (torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0])):
            torch._foreach_copy_(averaged, current)  # counters: an average of step counts means nothing
            return
        updates = int(num_averaged.item())
        step_decay = min(decay, (1 + updates) / (warmup + updates))
        torch._foreach_lerp_(averaged, current, 1 - step_decay)

    return update


def weight_average(model: nn.Module, decay: float, warmup: float = 10.0) -> AveragedModel:
    """An EMA copy of ``model``; call ``.update_parameters(model)`` after each optimizer step.

    ``.module`` is the averaged model (same class, loadable where ``model`` is); ``.state_dict()`` also holds
    the update count, so a resumed run continues the same average.
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
    if warmup <= 1:
        raise ValueError(f"EMA warm-up must be > 1 (it would never move), got {warmup}")
    return AveragedModel(model, multi_avg_fn=warmed_up_ema(decay, warmup), use_buffers=True)
