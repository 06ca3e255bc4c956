"""BERT's masked-language-model input (Sec. 3.2, "x^masked"), shared by the teacher and the students: the masking
of a batch, and the positions an MLM head scores, a fixed number per batch shape so a compiled step sees one shape.
The loss on them is `vlkd.losses.mlm_loss`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
"""Label of the positions a cross-entropy skips (PyTorch's and Hugging Face's convention)."""


@dataclass
class Masking:
    """One batch's MLM masking, with the positions the MLM head needs to score (`mlm_positions`)."""

    input_ids: torch.Tensor
    """[B, L] the masked input"""
    labels: torch.Tensor
    """[B, L] the original token where chosen, IGNORE_INDEX elsewhere"""
    positions: torch.Tensor
    """[C] flat indices into B * L: every chosen position, then filler (index 0) up to a capacity fixed by the
    batch's shape, so compiled steps see one shape"""
    position_labels: torch.Tensor
    """[C] `labels` at `positions`, IGNORE_INDEX at the filler"""


def draw_masking(
    input_ids: torch.Tensor,
    special_tokens_mask: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> Masking:
    """BERT's masking (Sec. 3.2, "x^masked"): choose `mlm_probability` of the non-special tokens; of the chosen,
    80% become [MASK], 10% a token drawn uniformly from the whole vocabulary, 10% stay as they are. input_ids [B, L]
    (long), special_tokens_mask [B, L] (true at special and padding tokens); the input is not modified.

    With the masking come the positions an MLM head must score: the head and its cross-entropy run there only
    (`mlm_positions`; the vocabulary projection at every position is a sixth of a BERT-base step). They are every
    position whose draw falls under `mlm_probability` (a superset of the chosen: special tokens are dropped by their
    label), padded to `prediction_capacity`, so every chosen position is scored, whatever the luck of the draw.

    Everything is drawn on the generator's device (the CPU by default), so a seeded generator reproduces a masking
    whatever device the batch is on, and which positions may be chosen is known on the host before any GPU work:
    nothing waits for the GPU, and the draws go to the batch's device as one pinned, non-blocking copy."""
    device = generator.device if generator is not None else torch.device("cpu")
    shape = input_ids.shape
    draws = torch.rand((2, *shape), generator=generator, device=device)
    random_tokens = torch.randint(vocab_size, shape, generator=generator, device=device)
    candidates = (draws[0] < mlm_probability).flatten().nonzero().squeeze(1)
    count = len(candidates)
    capacity = prediction_capacity(shape.numel(), mlm_probability, count)
    positions = F.pad(candidates, (0, capacity - count))
    filler = torch.arange(capacity, device=device) >= count
    chosen_draw, replace_draw, random_tokens, positions, filler = to_device(
        (draws[0], draws[1], random_tokens, positions, filler), input_ids.device
    )
    chosen = (chosen_draw < mlm_probability) & ~special_tokens_mask.bool()
    to_mask = chosen & (replace_draw < 0.8)
    to_random = chosen & (replace_draw >= 0.8) & (replace_draw < 0.9)
    masked = torch.where(to_mask, mask_token_id, torch.where(to_random, random_tokens.to(input_ids), input_ids))
    labels = torch.where(chosen, input_ids, IGNORE_INDEX)
    position_labels = torch.where(filler, IGNORE_INDEX, labels.flatten()[positions])
    return Masking(masked, labels, positions, position_labels)


def prediction_capacity(tokens: int, mlm_probability: float, drawn: int = 0) -> int:
    """How many positions a batch of `tokens` scores with its MLM head: the binomial mean plus 8 standard
    deviations, rounded up to a multiple of 64 (never above `tokens`), so nearly every batch of a shape has the
    same count and a compiled step one shape. A draw above it (`drawn`, about one in 10^15 batches) gets the next
    multiple of 64 that holds it: a new shape, never a dropped position."""
    mean = tokens * mlm_probability
    bound = math.ceil(mean + 8 * math.sqrt(mean * (1 - mlm_probability)))
    return min(tokens, 64 * math.ceil(max(bound, drawn, 1) / 64))


def to_device(tensors: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """CPU tensors on `device`: on a GPU through pinned memory without blocking, so the host goes on queueing."""
    if device.type != "cuda":
        return tuple(t.to(device) for t in tensors)
    return tuple(t.pin_memory().to(device, non_blocking=True) for t in tensors)


def mlm_positions(hidden: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """hidden [B, L, H] -> the states an MLM head scores: [C, H] at `positions` (`Masking.positions`), or all of
    them [B, L, H] when None (an objective that reads every position's logits, the soft labels)."""
    return hidden if positions is None else hidden.flatten(0, 1)[positions]
