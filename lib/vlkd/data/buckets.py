"""The lengths a batch is padded to: a few fixed ones, not each batch's longest.

A compiled step (`train.compile`) traces a graph per input shape; padded to each batch's longest, captions and
clips give a new length at almost every batch (a recompile, then dynamic shapes, which compile to slower kernels
and rule out CUDA graphs). Rounded up to a multiple (16 tokens, 4 frames) and capped at the spec's maximum, a run
sees at most max / multiple lengths, and pads at most multiple - 1 positions more than the longest; a multiple of
8 also keeps bf16 matrix products on the tensor cores' tile sizes.
"""

from __future__ import annotations

TOKENS = 16
"""captions and text sequences are padded to a multiple of this many tokens"""
FRAMES = 4
"""clips are padded to a multiple of this many frames"""
ROWS = 8
"""packed rows of captions (`vlkd.data.packing`) are counted up to a multiple of this many"""


def padded_length(longest: int, cap: int, multiple: int) -> int:
    """The length a batch whose longest item has `longest` positions is padded to: the next multiple of
    `multiple`, at most `cap` (the spec's maximum, which truncation already holds every item to), at least 1."""
    return max(1, min(cap, -(-longest // multiple) * multiple))
