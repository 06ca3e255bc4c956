"""Optimiser and training-loop options shared by the teacher and student stages."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from vlkd.specs.base import StrictModel

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Compile = Literal[False, True, "reduce-overhead", "max-autotune"]
"""`train.compile`: off, torch.compile's default mode, or one of its modes with CUDA graphs"""

MAX_STEPS = 10**9
"""The most optimizer steps (or epochs, or steps between two logs) a run may ask for: far past any real run (the
paper's teacher trains 200K steps), so a typo such as 1e23 fails validation instead of the job, with an
OverflowError, once it starts."""
MAX_BATCH = 65_536
"""The most examples per worker per micro-step (and micro-steps per step): far past what a GPU holds of a BERT (the
paper's batches are 32 to 128)."""


def _at_most(limit: int) -> BeforeValidator:
    """Refuses a number past `limit` before it is read as an integer, so that a float such as 1.0e+23 is told the
    bound too (pydantic would say it cannot parse it)."""

    def check(value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool) and value > limit:
            raise ValueError(f"{value:.3g} is more than any run needs: at most {limit:,}")
        return value

    return BeforeValidator(check)


Steps = Annotated[int, Field(gt=0, le=MAX_STEPS), _at_most(MAX_STEPS)]
BatchSize = Annotated[int, Field(gt=0, le=MAX_BATCH), _at_most(MAX_BATCH)]


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

    batch_size: BatchSize = Field(32, description="examples per worker per micro-step")
    grad_accum_steps: BatchSize = 1
    max_steps: Steps = Field(200_000, description="optimizer steps")
    grad_clip: float | None = Field(1.0, gt=0, description="max gradient norm; null disables clipping")
    precision: Precision = Field("auto", description="auto: bf16 (or fp16) on GPU, fp32 on CPU")
    log_every: Steps = 50
    eval_every: Steps = 2000
    checkpoint_every: Steps = 2000
    keep_checkpoints: int = Field(2, gt=0)
    patience: int | None = Field(
        5, gt=0, description="stop after this many evaluations without improvement; null trains to max_steps"
    )
    val_size: int = Field(10_000, ge=0, description="held-out examples; the paper reserves 10K (Sec. 4.3)")
    max_failures: int = Field(3, ge=0, description="worker failures Ray Train recovers from")
    compile: Compile = Field(
        False,
        description="torch.compile the trained model with its losses (and a frozen teacher): faster steps, after a "
        "compile at the start. true: fused kernels (torch's default mode); reduce-overhead: and CUDA graphs, each "
        "step's kernels replayed in one launch, for a step the host cannot keep the GPU busy with (small batches; "
        "a graph per padded shape, `vlkd.data.buckets`, in GPU memory); max-autotune: and matmul kernels tuned at "
        "the start (minutes more). On a CPU every mode compiles without CUDA graphs",
    )
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
    peak_tflops: float | None = Field(
        None,
        gt=0,
        description="the device's dense peak TFLOP/s for the logged MFU; default: vlkd's table of GPUs (bf16), none "
        "on CPU (then only TFLOP/s is logged)",
    )

    @property
    def compile_mode(self) -> str | None:
        """torch.compile's `mode` for `compile`; None: not compiled."""
        return ("default" if self.compile is True else self.compile) or None

    @property
    def cuda_graphs(self) -> bool:
        """Whether a compiled step replays CUDA graphs (on a GPU): its outputs then live in the graphs' memory
        until the next step overwrites them."""
        return self.compile_mode in ("reduce-overhead", "max-autotune")
