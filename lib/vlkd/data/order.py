"""The order training reads a split in: the paper's random minibatches (Sec. 3.2) from data stored in order.

A features artifact keeps each video's clips together, in clip order (HowTo100M: about 111 clips a video), and a
corpus keeps each article's sequences together. Read that way, a batch holds neighbouring clips of a few videos, and
most of L_CT's in-batch negatives (Eq. 3) are other moments of the anchor's own video: hard, often false negatives
that the paper's uniformly drawn x' and v' almost never are. So every pass over a split:
1. permutes the split's row groups, seeded by (seed, pass): the same order for the same seed and pass, so a resumed
   run reads what an uninterrupted one would, and a new order every pass;
2. cuts them into windows of `per_window` row groups (`windows`), which the training workers share out
   (`vlkd.data.ingest.SplitReader.epoch`);
3. orders each window's rows so that every row group's rows are spread evenly over the window (`spread`). A row
   group holds about one video (or a few articles); consecutive rows then come from different row groups, so a batch
   of up to `per_window` rows draws about one row per row group, that is from as many random places in the split:
   what a uniform shuffle of the whole split gives, for the memory of one window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pass_order(groups: int, seed: int, index: int) -> np.ndarray:
    """The row groups of a split of `groups` in the order pass `index` reads them: [groups] int64."""
    return np.random.default_rng([seed, index]).permutation(groups)


def windows(order: np.ndarray, per_window: int) -> list[np.ndarray]:
    """A pass's `order` of row groups cut into windows of `per_window` (the last may hold fewer)."""
    return [order[start : start + per_window] for start in range(0, len(order), per_window)]


def spread(sizes: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """The order of a window's rows (indices into its row groups' rows, concatenated), each group's `sizes[g]` rows
    in random order at evenly spaced places: the j-th row taken from group g sits at (j + u_g) / sizes[g] of the way
    through the window, u_g uniform in [0, 1). Two rows of one group are then about `len(sizes)` rows apart when the
    groups are of a size, so a batch of fewer rows than that holds at most one row of each group."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    group = np.repeat(np.arange(len(sizes)), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    place = np.arange(total) - starts[group]  # j: the group's j-th row taken
    rows = starts[group] + np.concatenate([rng.permutation(n) for n in sizes])  # which of its rows that is
    key = (place + rng.random(len(sizes))[group]) / sizes[group]
    return rows[np.lexsort((rng.random(total), key))]  # ties (groups of one size) in random order
