"""Optimiser and training-loop options shared by the teacher and student stages."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vlkd.specs.base import StrictModel

Precision = Literal["auto", "fp32", "bf16", "fp16"]


class OptimSpec(StrictModel):
    """AdamW with warm-up and linear decay."""

    lr: float = Field(2e-4, gt=0, description="Sec. 4.3")
    weight_decay: float = Field(0.01, ge=0, description="Sec. 4.3")
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="share of max_steps spent warming up")
    schedule: Literal["linear", "constant"] = "linear"


class TrainSpec(StrictModel):
    """How long and how a Ray Train run goes; the effective batch is batch_size x workers x grad_accum_steps."""

    batch_size: int = Field(32, gt=0, description="examples per worker per micro-step")
    grad_accum_steps: int = Field(1, gt=0)
    max_steps: int = Field(200_000, gt=0, description="optimizer steps")
    grad_clip: float | None = Field(1.0, gt=0, description="max gradient norm; null disables clipping")
    precision: Precision = Field("auto", description="auto: bf16 (or fp16) on GPU, fp32 on CPU")
    log_every: int = Field(50, gt=0)
    eval_every: int = Field(2000, gt=0)
    checkpoint_every: int = Field(2000, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    patience: int | None = Field(
        5, gt=0, description="stop after this many evaluations without improvement; null trains to max_steps"
    )
    val_size: int = Field(10_000, ge=0, description="held-out examples; the paper reserves 10K (Sec. 4.3)")
    max_failures: int = Field(3, ge=0, description="worker failures Ray Train recovers from")
    compile: bool = Field(False, description="torch.compile the model: faster steps, after a compile at the start")
    shuffle_window: int = Field(
        4096,
        gt=0,
        description="rows a read task mixes at once, from that many rows' worth of row groups drawn across the whole "
        "split: a batch of up to window/group-size rows takes about one row per row group (README: how batches are "
        "drawn); memory is one window per read task",
    )
    prefetch_batches: int = Field(
        4, ge=0, description="batches collated and copied to the device ahead of the step, in background threads"
    )
