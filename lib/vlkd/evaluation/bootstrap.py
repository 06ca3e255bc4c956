"""A model's difference from the baseline with a 95% interval that holds its 95% for 2 to 10 seeds per row.

The difference is the model's main metric averaged over its seeds minus the baseline's, in percentage points
(averaged over tasks for a table's Avg.). How far it can move by chance has two sources, and the interval adds both:
- the finetuning seeds: each row's per-run scores vary by seed. Their sample variance over the row's S seeds,
  divided by S, is the variance of the row's mean; it already holds each run's noise on the dev examples (which
  examples a run happens to get right), so that noise is not counted again;
- the dev examples: two rows can be equally good yet right on different examples, and another draw of the dev set
  would move their difference. This part is the variance over examples of the per-example difference (averaged
  over seeds) less what of it the runs' own noise explains (a two-way residual mean square per row, seeds x
  examples), over the number of examples; 0 when the runs' noise explains it all. Paired: the two rows answer the
  same questions, so what makes an example easy or hard for both cancels.
The interval is the difference +- a Student t quantile times the square root of the sum, with Welch-Satterthwaite
degrees of freedom (each row's seed part has S - 1; the example part N - 1). For a table's Avg. the tasks'
differences are averaged, their variance parts summed over the square of the task count, and the degrees of
freedom found the same way over all parts (the tasks' runs and dev sets are independent).

Why not a bootstrap over seeds (what vlkd did before): drawing 3 seeds with replacement gives their mean the
plug-in variance, (S - 1) / S of the unbiased one, and a percentile interval of a statistic from 3 values has no
small-sample widening; drawing the examples as well counts each run's noise on them twice, so it is too wide where
seeds vary little. In null simulations (`bench.calibration`: both rows from one distribution, 2,000 examples, seed
SD 0.3 to 3.5 points) its 95% interval excluded 0 in 0-1.5% of runs at seed SD 0.3 and 13-25% at 2-3 seeds and SD
2-3.5; this one stays at 2.2-5.6% over the whole grid, 2 to 10 seeds (the table is in bench/README.md, the check
in tests/test_evaluation_bootstrap.py). Below 5% at 2-3 seeds (2-4%) because Welch's degrees of freedom do not
assume the two rows' seed spreads equal; pooled ones would, and are exact when they are, but read 7.5% at 2-3 seeds
when one row's seed SD is 3x the other's.

With one seed in a row its seed variance is unknown: the task (and an average over it) falls back to a paired
bootstrap over dev examples (the same example draw for both rows, `RESAMPLES` replicates, a fixed `SEED`,
percentile interval), which does not cover seed noise; `Interval.over_seeds` says so and the report's legend too.
Neither covers pretraining: each row is one pretraining run. A difference whose interval contains 0 is within noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
_CELLS = 1 << 22
"""Bootstrap replicates are drawn in chunks of about this many example weights (32 MiB), whatever the dev set's size."""

Outcomes = Sequence[str]
"""A row's runs on one task, one string per seed: "1" per dev example it got right, "0" per one it got wrong."""

Parts = list[tuple[np.ndarray, int]]
"""The variance parts of a difference (each a fraction squared, any shape) with their degrees of freedom."""

SEED_INTERVAL_NOTE = (
    "Student's t over finetuning seeds (each run's noise on the dev examples included) and dev examples (the rows' "
    "disagreement, paired), Welch-Satterthwaite degrees of freedom."
)
EXAMPLES_ONLY_NOTE = (
    f"Where a row has one seed: paired bootstrap over dev examples ({RESAMPLES} resamples), which does not cover "
    "seed noise."
)
NOT_COVERED_NOTE = "Not covered: pretraining, each row being one pretraining run."


@dataclass(frozen=True)
class Interval:
    """A difference in percentage points and its interval; `over_seeds` False for the one-seed fallback."""

    difference: float
    low: float
    high: float
    over_seeds: bool = True

    @property
    def within_noise(self) -> bool:
        return self.low <= 0.0 <= self.high


def difference_interval(tasks: Sequence[tuple[Outcomes, Outcomes]]) -> Interval:
    """The mean over `tasks` of (model's metric - baseline's), each task given as (model's runs, baseline's
    runs) over the same dev examples, with its `LEVEL` interval."""
    matrices = [(_matrix(model), _matrix(baseline)) for model, baseline in tasks]
    for model, baseline in matrices:
        if model.shape[1] != baseline.shape[1]:
            raise ValueError(f"model and baseline scored different dev sets: {model.shape[1]}, {baseline.shape[1]}")
    if any(len(model) < 2 or len(baseline) < 2 for model, baseline in matrices):
        return _examples_bootstrap(matrices)
    difference = np.mean([model.mean() - baseline.mean() for model, baseline in matrices])
    parts = [(variance / len(matrices) ** 2, df) for pair in matrices for variance, df in _task_parts(*pair)]
    low, high = t_interval(difference, parts)
    # A t interval over two or three seeds can reach past what a difference of two scores in [0, 1] can be.
    return Interval(float(difference) * 100, max(float(low), -1.0) * 100, min(float(high), 1.0) * 100)


def seed_parts(model_scores: np.ndarray, baseline_scores: np.ndarray) -> Parts:
    """The variance of each row's mean score over its seeds, from per-run scores [..., S] (S >= 2)."""
    return [
        (scores.var(axis=-1, ddof=1) / scores.shape[-1], scores.shape[-1] - 1)
        for scores in (model_scores, baseline_scores)
    ]


def t_interval(difference: np.ndarray | float, parts: Parts) -> tuple[np.ndarray, np.ndarray]:
    """difference -+ the t quantile at `LEVEL` times the root of the summed `parts`, its degrees of freedom by
    Welch-Satterthwaite; a point where every part is 0 (identical runs)."""
    variance = sum(part for part, _ in parts)
    spread = sum(part**2 / df for part, df in parts)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(spread > 0, variance**2 / np.where(spread > 0, spread, 1.0), np.inf)
    half = stats.t.ppf((1 + LEVEL) / 2, df) * np.sqrt(variance)
    return difference - half, difference + half


def _task_parts(model: np.ndarray, baseline: np.ndarray) -> Parts:
    """The seeds' and the examples' variance parts of one task's difference, from [S, N] outcomes per row."""
    examples = model.shape[1]
    per_example = model.mean(axis=0) - baseline.mean(axis=0)
    explained = _residual_mean_square(model) / len(model) + _residual_mean_square(baseline) / len(baseline)
    disagreement = max(0.0, per_example.var(ddof=1) - explained) / examples if examples > 1 else 0.0
    return [*seed_parts(model.mean(axis=1), baseline.mean(axis=1)), (np.asarray(disagreement), max(1, examples - 1))]


def _residual_mean_square(runs: np.ndarray) -> float:
    """The seeds x examples residual of [S, N] outcomes: each run's own noise on an example, once the seed's and
    the example's means are taken out (its expectation under a two-way random-effects model)."""
    seeds, examples = runs.shape
    if examples < 2:
        return 0.0
    residual = runs - runs.mean(axis=1, keepdims=True) - runs.mean(axis=0, keepdims=True) + runs.mean()
    return float((residual**2).sum() / ((seeds - 1) * (examples - 1)))


def _examples_bootstrap(matrices: list[tuple[np.ndarray, np.ndarray]]) -> Interval:
    """The one-seed fallback: a percentile interval of the mean per-example difference over resampled examples."""
    rng = np.random.default_rng(SEED)
    point, replicates = 0.0, np.zeros(RESAMPLES)
    for model, baseline in matrices:
        per_example = model.mean(axis=0) - baseline.mean(axis=0)
        point += per_example.mean()
        replicates += _replicates(per_example, rng)
    scale = 100.0 / len(matrices)
    low, high = np.quantile(replicates * scale, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Interval(float(point * scale), float(low), float(high), over_seeds=False)


def _matrix(runs: Outcomes) -> np.ndarray:
    """[S, N] 0/1 outcomes of S seeds on N examples."""
    return np.array([np.frombuffer(run.encode("ascii"), dtype=np.uint8) - ord("0") for run in runs], dtype=float)


def _replicates(per_example: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[RESAMPLES] means of the [N] per-example differences over resampled examples."""
    examples = len(per_example)
    chunk = max(1, _CELLS // examples)
    out = []
    for start in range(0, RESAMPLES, chunk):
        count = min(chunk, RESAMPLES - start)
        out.append(_draw_counts(rng, examples, count) @ per_example / examples)
    return np.concatenate(out)


def _draw_counts(rng: np.random.Generator, items: int, draws: int) -> np.ndarray:
    """[draws, items]: how often each item comes up in each of `draws` samples of `items` with replacement (a
    multinomial draw; counted with one bincount, several times faster than numpy's multinomial at 40k items)."""
    picked = rng.integers(0, items, (draws, items)) + items * np.arange(draws)[:, None]
    return np.bincount(picked.ravel(), minlength=draws * items).reshape(draws, items)
