"""Several captions to a row: a padded batch of short sequences packed into fewer full rows for the encoder.

HowTo100M's ASR captions are a dozen tokens or so, with a long tail; a batch padded to its longest (`buckets`) is
then mostly padding (38% real tokens for HowTo100M-shaped captions padded to 32), and an encoder computes every
padded position as a real one. Packed, the encoder reads rows holding one caption after another, each caption
attending only to itself (a block-diagonal attention mask) and numbered from position 0, which is the computation
each caption gets alone; its states are then put back in the padded [B, L] layout that the losses read. Rows are as
long as the padded batch's, so attention costs no more per row than padded. The layout is computed here, on the
host, from the lengths alone: the device only gathers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlkd.data.buckets import ROWS


@dataclass(frozen=True)
class Packing:
    """Where the tokens of a padded batch [B, L] go in packed rows [R, L], and back."""

    gather: np.ndarray
    """[R, L] int64: the flat index (b * L + i) in the padded batch of each packed slot; B * L for an empty slot"""
    scatter: np.ndarray
    """[B, L] int64: the flat index (r * L + j) in the packed rows of each padded position; R * L for padding"""
    positions: np.ndarray
    """[R, L] int64: each slot's position in its own sequence (its position embedding)"""
    segments: np.ndarray
    """[R, L] int64: the sequence (b) each slot holds; -1 for an empty slot (empty slots attend to each other, so
    no attention row is empty: an empty row's softmax would be NaN, and NaN times a zero gradient is NaN)"""


def pack(lengths: np.ndarray, length: int) -> Packing:
    """The packing of sequences of `lengths` (a padded batch [B, `length`]) into rows as long as the batch's
    (`length`, its `buckets` length): first fit, longest first (within a few rows of the fewest), the rows counted
    up to a multiple of `buckets.ROWS` (a compiled step sees few shapes) but never past B, so a packed batch is
    never larger than the padded one."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.max(initial=0) > length:
        raise ValueError(f"a sequence of {lengths.max()} tokens does not fit a row of {length}")
    free: list[int] = []  # room left in each row
    placed = np.zeros((len(lengths), 2), np.int64)  # (row, offset) of each sequence
    for b in np.argsort(-lengths, kind="stable"):
        n = int(lengths[b])
        row = next((r for r, room in enumerate(free) if room >= n), len(free))
        if row == len(free):
            free.append(length)
        placed[b] = row, length - free[row]
        free[row] -= n
    batch = len(lengths)
    rows = min(-(-len(free) // ROWS) * ROWS, batch)
    gather = np.full((rows, length), batch * length, np.int64)
    for b, (row, offset) in enumerate(placed):
        gather[row, offset : offset + lengths[b]] = b * length + np.arange(lengths[b])
    # The rest follows from where each token went.
    real = gather < batch * length
    slots = np.flatnonzero(real)
    scatter = np.full(batch * length, rows * length, np.int64)
    scatter[gather.reshape(-1)[slots]] = slots
    segments = np.where(real, gather // length, -1)
    positions = np.where(real, gather % length, 0)
    return Packing(gather, scatter.reshape(batch, length), positions, segments)
