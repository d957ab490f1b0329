"""The fast CPU path: fold BatchNorm into convolutions, channels-last memory, bf16, optional compile.

At inference a BatchNorm is a fixed per-channel affine map, y = gamma * (x - mean) / sqrt(var + eps) + beta.
Right after a convolution it can be folded into the convolution's weights and bias, which removes a
full pass over every feature map. Channels-last (N, H, W, C) is the layout oneDNN's convolutions are
fastest in, and bf16 halves memory traffic on CPUs with native bf16 instructions (AVX512-BF16, AMX).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from pixelwise.nn.atrous_taps import FasterAtrous, qualifies

# The precisions inference and training run in (``pixelwise.infer.options.PRECISIONS``), as torch dtypes.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (oneDNN's own check)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold an eval-mode BatchNorm into the convolution before it, in place."""
    inverse_std = torch.rsqrt(bn.running_var + bn.eps)
    scale = inverse_std * bn.weight.detach() if bn.affine else inverse_std
    shift = (bn.bias.detach() if bn.affine else 0) - bn.running_mean * scale
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bias * scale + shift)


def conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, batchnorm name) for every BatchNorm2d that reads a Conv2d's output directly.

    Found by running ``example`` once and watching which tensor each BatchNorm receives: this sees the
    real data flow whatever the forward code looks like (Sequential, attributes, functional glue).
    Modules called more than once are left alone.
    """
    produced_by: dict[int, str] = {}
    keep_alive: list[torch.Tensor] = []  # so no tensor id is reused while we watch
    calls: dict[str, int] = {}
    pairs: list[tuple[str, str]] = []

    def after_conv(name: str):
        def hook(module, inputs, output):
            calls[name] = calls.get(name, 0) + 1
            produced_by[id(output)] = name
            keep_alive.append(output)
        return hook

    def before_bn(name: str):
        def hook(module, inputs):
            calls[name] = calls.get(name, 0) + 1
            source = produced_by.get(id(inputs[0]))
            if source is not None:
                pairs.append((source, name))
        return hook

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(after_conv(name)))
        elif isinstance(module, nn.BatchNorm2d) and module.track_running_stats:
            handles.append(module.register_forward_pre_hook(before_bn(name)))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return [(conv, bn) for conv, bn in pairs if calls[conv] == 1 and calls[bn] == 1]


def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d into it (in place); returns how many.

    The model must be in eval mode. The folded model is checked against the original on ``example``
    (N, C, H, W): a convolution whose output also fed something besides its BatchNorm would differ,
    and raises RuntimeError instead of silently changing the predictions.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (BatchNorm uses running statistics)")
    with torch.no_grad():
        reference = model(example)
    pairs = conv_bn_pairs(model, example)
    for conv_name, bn_name in pairs:
        fold_conv_bn(model.get_submodule(conv_name), model.get_submodule(bn_name))
        parent_name, _, child = bn_name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, nn.Identity())
    with torch.no_grad():
        folded = model(example)
    tolerance = 1e-4 * max(1.0, reference.abs().max().item())
    if not torch.allclose(folded, reference, atol=tolerance, rtol=1e-4):
        raise RuntimeError("folding BatchNorm changed the model's output: a convolution feeds more than its BatchNorm")
    return len(pairs)


def optimize_for_cpu(
    model: nn.Module, example: torch.Tensor, dtype: torch.dtype = torch.float32, compile: bool = False
) -> nn.Module:
    """A copy of ``model`` for fast inference: BatchNorm folded, channels-last, cast to ``dtype``, compiled.

    Without ``compile``, each dilated convolution runs as a convolution or as one GEMM and shifted sums
    (``pixelwise.nn.atrous_taps``), whichever is faster here for its input's shape: oneDNN's bf16 kernels
    fall far below the machine's matrix rate at DeepLab's large rates on CPUs with AMX.
    Feed it channels-last inputs of ``dtype``: ``x.to(dtype, memory_format=torch.channels_last)``.
    """
    model = copy.deepcopy(model).eval()
    fold_batchnorm(model, example)
    model = model.to(dtype=dtype, memory_format=torch.channels_last)
    if compile:
        return torch.compile(model, dynamic=True)
    return swap_dilated_convolutions(model)


def swap_dilated_convolutions(model: nn.Module) -> nn.Module:
    """Wrap, in place, every convolution that :class:`~pixelwise.nn.atrous_taps.AtrousByTaps` reproduces in
    a :class:`~pixelwise.nn.atrous_taps.FasterAtrous`; returns ``model``."""
    for name, module in list(model.named_modules()):
        if qualifies(module):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, FasterAtrous(module))
    return model
