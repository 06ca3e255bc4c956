"""What the training loop runs a model under (mixed precision, `torch.compile`, DDP) and how it reaches the model
beneath those wrappers: the step the loop (`vlkd.train_loop`) takes and the benchmarks (`bench/`) measure is this
one, so a benchmark's form is the loop's."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn


def autocast(precision: str, device: torch.device) -> tuple[AbstractContextManager[Any], bool]:
    """(context, needs a grad scaler): `auto` is bf16 on GPUs that have it, fp16 on older GPUs, fp32 on CPU."""
    if device.type != "cuda" or precision == "fp32":
        return nullcontext(), False
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype), dtype == torch.float16


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, under `torch.compile`'s and DDP's wrappers."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def eager(model: nn.Module) -> nn.Module:
    """The model without `torch.compile`'s wrapper, DDP's kept (its forward sets up the gradients' all-reduce): a
    compiled forward is one node of the autograd graph, so a loss cannot be differentiated by a tensor inside it."""
    return getattr(model, "_orig_mod", model)


def compile_model(model: nn.Module, mode: str = "default") -> nn.Module:
    """`torch.compile` for the training step (`train.compile`, `TrainSpec.compile_mode`): the same forward and
    backward, fused kernels (and CUDA graphs in the modes that have them). The wrapper shares the model's
    parameters, so optimizer, checkpoints and validation see the model itself."""
    return torch.compile(model, mode=mode)
