"""The optimizer and learning-rate schedule of every training run: the teacher's and the student's (Sec. 4.3) and
downstream finetuning (`vlkd.evaluation.finetune`). Kept apart from the Ray Train loop, so that finetuning, which
runs its own loop, does not import it."""

from __future__ import annotations

import torch
from torch import nn

from vlkd.specs import OptimSpec


def build_optimizer(optim: OptimSpec, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW (Sec. 4.3); no weight decay on biases and LayerNorm weights, as in BERT."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 or "LayerNorm" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    params = decay + no_decay
    # One kernel for all parameters, not torch's default on a CPU (a Python loop over them): bench/optimizer.py.
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, fused=fused or None)


def build_scheduler(
    optim: OptimSpec, optimizer: torch.optim.Optimizer, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Hugging Face's linear warm-up from 0 over `warmup_fraction` of `max_steps`, then linear decay to 0 at
    `max_steps` (`schedule: linear`, BERT's) or the peak rate kept (`schedule: constant`)."""
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    warmup = int(optim.warmup_fraction * max_steps)
    if optim.schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    return get_linear_schedule_with_warmup(optimizer, warmup, max_steps)
