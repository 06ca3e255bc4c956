"""A model's difference from the baseline with a 95% interval: a paired bootstrap over dev examples and seeds.

The difference is the model's main metric averaged over its seeds minus the baseline's, in percentage points
(averaged over tasks for a table's Avg.). Each of `RESAMPLES` replicates (a fixed `SEED`, so a report is
reproducible) draws with replacement
- the dev examples, the same draw for model and baseline (paired: the two answer the same questions, so the
  examples' difficulty cancels out of the difference), independently per task;
- each row's finetuning seeds, independently (seed 3 of two different encoders shares nothing but its number).
The interval holds the middle 95% of the replicates' differences (percentile bootstrap). Drawing the seeds too,
not only averaging over them, is the one deviation from a plain paired bootstrap over examples: finetuning
from the same encoder varies across seeds by about as much as the differences between encoders (Dodge et al.
2020; Mosbach et al. 2021), and an interval over examples alone would call one lucky seed's gain real. With one
seed per row it is the plain paired bootstrap.

A difference whose interval contains 0 is within noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
_CELLS = 1 << 22
"""Replicates are drawn in chunks of about this many example weights (32 MiB), whatever the dev set's size."""

Outcomes = Sequence[str]
"""A row's runs on one task, one string per seed: "1" per dev example it got right, "0" per one it got wrong."""


@dataclass(frozen=True)
class Interval:
    """A difference in percentage points and its interval."""

    difference: float
    low: float
    high: float

    @property
    def within_noise(self) -> bool:
        return self.low <= 0.0 <= self.high


def paired_bootstrap(tasks: Sequence[tuple[Outcomes, Outcomes]], resamples: int = RESAMPLES) -> Interval:
    """The mean over `tasks` of (model's metric - baseline's), each task given as (model's runs, baseline's
    runs) over the same dev examples, with its `LEVEL` interval."""
    rng = np.random.default_rng(SEED)
    point, replicates = 0.0, np.zeros(resamples)
    for model_runs, baseline_runs in tasks:
        model, baseline = _matrix(model_runs), _matrix(baseline_runs)
        if model.shape[1] != baseline.shape[1]:
            raise ValueError(f"model and baseline scored different dev sets: {model.shape[1]}, {baseline.shape[1]}")
        point += model.mean() - baseline.mean()
        replicates += _replicates(model, baseline, resamples, rng)
    scale = 100.0 / len(tasks)
    low, high = np.quantile(replicates * scale, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Interval(point * scale, float(low), float(high))


def _matrix(runs: Outcomes) -> np.ndarray:
    """[S, N] 0/1 outcomes of S seeds on N examples."""
    return np.array([np.frombuffer(run.encode("ascii"), dtype=np.uint8) - ord("0") for run in runs], dtype=float)


def _replicates(model: np.ndarray, baseline: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[resamples] bootstrap differences (fractions) of one task."""
    examples = model.shape[1]
    chunk = max(1, _CELLS // examples)
    out = []
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        weights = _draw_counts(rng, examples, count) / examples  # [k, N]
        out.append(_resampled_means(model, weights, rng) - _resampled_means(baseline, weights, rng))
    return np.concatenate(out)


def _resampled_means(runs: np.ndarray, example_weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[k] means of the [S, N] `runs` over the drawn examples ([k, N] weights) and a draw of the seeds."""
    seeds = runs.shape[0]
    seed_weights = _draw_counts(rng, seeds, len(example_weights)) / seeds  # [k, S]
    per_seed = example_weights @ runs.T  # [k, S]
    return (seed_weights * per_seed).sum(axis=1)


def _draw_counts(rng: np.random.Generator, items: int, draws: int) -> np.ndarray:
    """[draws, items]: how often each item comes up in each of `draws` samples of `items` with replacement (a
    multinomial draw; counted with one bincount, several times faster than numpy's multinomial at 40k items)."""
    picked = rng.integers(0, items, (draws, items)) + items * np.arange(draws)[:, None]
    return np.bincount(picked.ravel(), minlength=draws * items).reshape(draws, items)
