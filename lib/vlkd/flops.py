"""What a training step computes, in FLOPs, and how much of a device it uses (MFU).

Two counts, because they answer different questions. The *counted* one is the convention papers and NVIDIA's
BERT report: 6 x trainable parameters x tokens, comparable across codebases but blind to what the step really
runs (it charges the MLM head at every token, charges nothing for attention scores or a frozen teacher). The
*achieved* one adds up the matrix products the step actually runs, 2 FLOPs per multiply-add, with backward at
twice the forward for what is trained: encoder layers at every position of the padded batch (padding is computed
too), attention scores, the MLM head at the positions it scores (`vlkd.masking.Masking.positions`), a frozen
teacher's forward. Elementwise work, softmaxes and embedding lookups are left out: they are memory-bound, and
small next to the products.
"""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING

from vlkd.specs.shapes import ModelShape

if TYPE_CHECKING:
    import torch
    from torch import nn

# Dense bf16 peak TFLOP/s by device name fragment (NVIDIA's data sheets, SXM parts, no sparsity). A GPU not
# listed, or a CPU, has no peak unless the spec states one (`train.peak_tflops`).
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "V100": 125.0,
}
TRAINED = 3
"""forward + backward (twice the forward: gradients of the inputs and of the weights) of what is trained"""


def device_peak_tflops(device: torch.device, stated: float | None = None) -> float | None:
    """The peak MFU divides by: `stated` if given, else the GPU's from `PEAK_TFLOPS`; None for a CPU or an
    unlisted GPU (then no MFU is reported, only TFLOP/s)."""
    import torch

    if stated is not None:
        return stated
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def counted_flops(parameters: int, tokens: float) -> float:
    """The conventional training FLOPs of `tokens` tokens: 6 x parameters x tokens."""
    return 6.0 * parameters * tokens


def encoder_forward_flops(shape: ModelShape, batch: int, length: int) -> float:
    """A BERT encoder's forward over a [batch, length] input, padding included: per layer and position, the
    Q, K, V and output projections (4 H^2), the feed-forward (2 H I) and the attention scores and their use on
    the values (2 L H), each product 2 FLOPs per multiply-add."""
    h, i = shape.hidden_size, shape.intermediate_size
    per_position = shape.num_layers * (2 * 4 * h * h + 2 * 2 * h * i + 2 * 2 * length * h)
    return float(batch * length * per_position)


def mlm_head_forward_flops(shape: ModelShape, vocab_size: int, positions: int) -> float:
    """BERT's MLM head at `positions` positions: the transform (H x H) and the decoder (H x V)."""
    h = shape.hidden_size
    return float(positions * 2 * (h * h + h * vocab_size))


def linear_forward_flops(rows: int, *widths: int) -> float:
    """A stack of linear layers over `rows` vectors, widths[0] -> widths[1] -> ... (a projection, an MLP)."""
    return float(sum(2 * rows * a * b for a, b in pairwise(widths)))
