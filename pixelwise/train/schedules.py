"""Optimizers and learning-rate schedules, each schedule a pure function of the step.

The "poly" schedule of DeepLab and PSPNet, ``lr * (1 - step / steps) ** power`` with power 0.9, is the
default of the segmentation papers; cosine, step decay and constant are there for comparison.
Because the factor depends only on the step, a resumed run gets exactly the same learning rates.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pixelwise.train.config import OptimConfig


def lr_factor(step: int, total_steps: int, optim: OptimConfig) -> float:
    """The multiplier of ``optim.lr`` at optimizer step ``step`` (0-based) of ``total_steps``."""
    if step < optim.warmup_steps:
        # Linear warm-up from warmup_factor to 1: large early steps can wreck BatchNorm statistics.
        progress = step / optim.warmup_steps
        return optim.warmup_factor + (1 - optim.warmup_factor) * progress
    progress = min(step / total_steps, 1.0)
    if optim.schedule == "poly":
        return (1 - progress) ** optim.power
    if optim.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if optim.schedule == "step":
        return optim.gamma ** sum(step >= milestone for milestone in optim.milestones)
    if optim.schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {optim.schedule!r}")


def build_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """SGD (with momentum, as in FCN/DeepLab), Adam or AdamW over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if optim.optimizer == "sgd":
        return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, nesterov=optim.nesterov,
                               weight_decay=optim.weight_decay)
    betas = tuple(optim.betas)
    if optim.optimizer == "adam":
        return torch.optim.Adam(params, lr=optim.lr, betas=betas, weight_decay=optim.weight_decay)
    if optim.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=optim.lr, betas=betas, weight_decay=optim.weight_decay)
    raise ValueError(f"unknown optimizer {optim.optimizer!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int,
                    optim: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepping once per optimizer step with ``lr_factor``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, optim))
