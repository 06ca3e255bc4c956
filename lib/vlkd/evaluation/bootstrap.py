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

Clustered dev examples (`Clusters`). SQuAD asks about 5 questions per paragraph, TRACIE 12 statements per story: a
paragraph that one row reads better than the other lifts all its questions at once, and another dev set would draw
other paragraphs, not other questions on these. The dev set is then a sample of G clusters and the mean difference
a ratio of their totals, whose variance from the draw is (to first order) the sum over clusters of the squared
totals of centred differences, T_g = sum over i in g of (d_i - mean d), over N^2; G / (G - 1) x sum of T_g^2
estimates it (the cluster-robust variance of a mean). From it goes, as above, what the runs' own noise puts into
the T_g (already in the seed part), measured at the cluster level because a run's luck on a paragraph is shared by
its questions: per row, the two-way residuals summed within each cluster, R_sg, squared and summed, over (S - 1) S.
    examples' part = G / (G - 1) x [sum_g T_g^2 - sum over rows of sum_s,g R_sg^2 / ((S - 1) S)] / N^2,
with G - 1 degrees of freedom. Both sums have expectation (G - 1) / G of what they estimate when the clusters are
equally large (within O(1/G) otherwise); with every example its own cluster (G = N) this is the formula above,
exactly. Taking m correlated questions as independent understates the part by the design effect 1 + (m - 1) x
their intra-cluster correlation: in `bench.calibration`'s clustered nulls (200 paragraphs x 10 questions, ICC up
to 0.2) the interval then excluded 0 in up to 42% of runs, over paragraphs in 4.0-5.6% at 3 and 5 seeds.

Why not a bootstrap over seeds (what vlkd did before): drawing 3 seeds with replacement gives their mean the
plug-in variance, (S - 1) / S of the unbiased one, and a percentile interval of a statistic from 3 values has no
small-sample widening; drawing the examples as well counts each run's noise on them twice, so it is too wide where
seeds vary little. In null simulations (`bench.calibration`: both rows from one distribution, 2,000 examples, seed
SD 0.3 to 3.5 points) its 95% interval excluded 0 in 0-1.5% of runs at seed SD 0.3 and 13-25% at 2-3 seeds and SD
2-3.5; this one stays at 2.2-5.6% over the whole grid, 2 to 10 seeds (the table is in bench/README.md, the check
in tests/test_evaluation_bootstrap.py). Below 5% at 2-3 seeds (2-4%) because Welch's degrees of freedom do not
assume the two rows' seed spreads equal; pooled ones would, and are exact when they are, but read 7.5% at 2-3 seeds
when one row's seed SD is 3x the other's.

A metric that is no mean over examples but a smooth function of such means (the diagnostic's R3, a correlation)
comes in as its pseudo-values (`correlation`: per example, the metric plus the example's first-order influence), a
mean over examples like any other: every part above applies to it unchanged.

With one seed in a row its seed variance is unknown: the task (and an average over it) falls back to a paired
bootstrap over dev examples (the same draw for both rows, whole clusters where examples are clustered, `RESAMPLES`
replicates, a fixed `SEED`, percentile interval), which does not cover seed noise; `Interval.over_seeds` says so
and the report's legend too. Neither covers pretraining: each row is one pretraining run. A difference whose
interval contains 0 is within noise.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
_CELLS = 1 << 22
"""Bootstrap replicates are drawn in chunks of about this many example weights (32 MiB), whatever the dev set's size."""

Outcomes = Sequence[str] | np.ndarray
"""A row's runs on one task, one string per seed: "1" per dev example it got right, "0" per one it got wrong; or
[S, N] values per seed and example whose mean over the examples is the run's metric (a correlation's pseudo-values,
`correlation`)."""

Clusters = str
"""Each dev example's cluster, the examples whose outcomes move together (SQuAD's questions on one paragraph,
TRACIE's statements about one story, the GLUE diagnostic's pair of sentences asked both ways): one number per
example, space-separated, numbered in order of first appearance ("0 0 0 1 1 2 ..."; `cluster_labels`). None where
every example is its own cluster."""

Parts = list[tuple[np.ndarray, int]]
"""The variance parts of a difference (each a fraction squared, any shape) with their degrees of freedom."""

SEED_INTERVAL_NOTE = (
    "Student's t over finetuning seeds (each run's noise on the dev examples included) and dev examples (the rows' "
    "disagreement, paired; over SQuAD's paragraphs, TRACIE's stories and the diagnostic's sentence pairs, not their "
    "questions), Welch-Satterthwaite degrees of freedom."
)
EXAMPLES_ONLY_NOTE = (
    f"Where a row has one seed: paired bootstrap over dev examples ({RESAMPLES} resamples, paragraphs, stories and "
    "sentence pairs drawn whole), which does not cover seed noise."
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


@dataclass(frozen=True)
class _Task:
    """One task's outcomes, [S, N] per row, and each example's cluster [N], numbered 0 to `clusters` - 1."""

    model: np.ndarray
    baseline: np.ndarray
    cluster: np.ndarray
    clusters: int

    def cluster_sums(self, values: np.ndarray) -> np.ndarray:
        """[..., G] sums over each cluster's examples of [..., N] values."""
        rows = values.reshape(-1, values.shape[-1])
        flat = (self.cluster + self.clusters * np.arange(len(rows))[:, None]).ravel()
        sums = np.bincount(flat, weights=rows.ravel(), minlength=len(rows) * self.clusters)
        return sums.reshape(*values.shape[:-1], self.clusters)


def cluster_labels(keys: Sequence[Hashable]) -> Clusters:
    """The `Clusters` of examples with these cluster keys (a paragraph's text, a story's), in dev order."""
    numbers: dict[Hashable, int] = {}
    return " ".join(str(numbers.setdefault(key, len(numbers))) for key in keys)


def cluster_count(clusters: Clusters) -> int:
    """How many examples `clusters` numbers."""
    return clusters.count(" ") + 1 if clusters else 0


def difference_interval(
    tasks: Sequence[tuple[Outcomes, Outcomes]], clusters: Sequence[Clusters | None] | None = None, bound: float = 1.0
) -> Interval:
    """The mean over `tasks` of (model's metric - baseline's), each task given as (model's runs, baseline's
    runs) over the same dev examples, with its `LEVEL` interval. `clusters`: each task's, in the same order
    (None, or none given: independent examples). `bound`: the largest difference the metric allows, as a fraction
    (1 for accuracies, 2 for correlations)."""
    each = [None] * len(tasks) if clusters is None else clusters
    parsed = [_task(model, baseline, labels) for (model, baseline), labels in zip(tasks, each, strict=True)]
    if any(len(task.model) < 2 or len(task.baseline) < 2 for task in parsed):
        return _examples_bootstrap(parsed)
    difference = np.mean([task.model.mean() - task.baseline.mean() for task in parsed])
    parts = [(variance / len(parsed) ** 2, df) for task in parsed for variance, df in _task_parts(task)]
    low, high = t_interval(difference, parts)
    # A t interval over two or three seeds can reach past what a difference of two scores can be.
    return Interval(float(difference) * 100, max(float(low), -bound) * 100, min(float(high), bound) * 100)


def _task(model: Outcomes, baseline: Outcomes, clusters: Clusters | None) -> _Task:
    model_runs, baseline_runs = _matrix(model), _matrix(baseline)
    examples = model_runs.shape[1]
    if baseline_runs.shape[1] != examples:
        raise ValueError(f"model and baseline scored different dev sets: {examples}, {baseline_runs.shape[1]}")
    if clusters is None:
        return _Task(model_runs, baseline_runs, np.arange(examples), examples)
    labels = np.array(clusters.split(), dtype=np.int64)
    if len(labels) != examples:
        raise ValueError(f"clusters number {len(labels)} dev examples, the runs scored {examples}")
    numbers, cluster = np.unique(labels, return_inverse=True)
    return _Task(model_runs, baseline_runs, cluster, len(numbers))


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


def _task_parts(task: _Task) -> Parts:
    """The seeds' and the examples' variance parts of one task's difference (the module docstring's formula)."""
    examples, clusters = task.model.shape[1], task.clusters
    per_example = task.model.mean(axis=0) - task.baseline.mean(axis=0)
    spread = (task.cluster_sums(per_example - per_example.mean()) ** 2).sum()
    explained = sum(
        (task.cluster_sums(_residuals(runs)) ** 2).sum() / ((len(runs) - 1) * len(runs))
        for runs in (task.model, task.baseline)
    )
    disagreement = max(0.0, spread - explained) * clusters / (clusters - 1) / examples**2 if clusters > 1 else 0.0
    seeds = seed_parts(task.model.mean(axis=1), task.baseline.mean(axis=1))
    return [*seeds, (np.asarray(disagreement), max(1, clusters - 1))]


def _residuals(runs: np.ndarray) -> np.ndarray:
    """[S, N] seeds x examples residuals of [S, N] outcomes: each run's own noise on an example, once the seed's and
    the example's means are taken out (summed over all, squared, over (S - 1)(N - 1): its variance under a two-way
    random-effects model)."""
    return runs - runs.mean(axis=1, keepdims=True) - runs.mean(axis=0, keepdims=True) + runs.mean()


def _examples_bootstrap(tasks: list[_Task]) -> Interval:
    """The one-seed fallback: a percentile interval of the mean per-example difference over resampled clusters
    of examples (each example its own where they are independent)."""
    rng = np.random.default_rng(SEED)
    point, replicates = 0.0, np.zeros(RESAMPLES)
    for task in tasks:
        per_example = task.model.mean(axis=0) - task.baseline.mean(axis=0)
        point += per_example.mean()
        replicates += _replicates(task.cluster_sums(per_example), np.bincount(task.cluster), rng)
    scale = 100.0 / len(tasks)
    low, high = np.quantile(replicates * scale, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Interval(float(point * scale), float(low), float(high), over_seeds=False)


def _matrix(runs: Outcomes) -> np.ndarray:
    """[S, N] outcomes of S seeds on N examples."""
    if isinstance(runs, np.ndarray):
        return runs.astype(float)
    return np.array([digits(run) for run in runs], dtype=float)


def digits(text: str) -> np.ndarray:
    """[N] integers from a string of one digit per example (results.json's `correct`, `labels`, `gold`)."""
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64) - ord("0")


def _replicates(totals: np.ndarray, sizes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[RESAMPLES] mean differences over resampled clusters, from each cluster's [G] total difference and [G]
    size: a draw's clusters' totals over their examples."""
    clusters = len(totals)
    chunk = max(1, _CELLS // clusters)
    out = []
    for start in range(0, RESAMPLES, chunk):
        counts = _draw_counts(rng, clusters, min(chunk, RESAMPLES - start))
        out.append(counts @ totals / (counts @ sizes))
    return np.concatenate(out)


def _draw_counts(rng: np.random.Generator, items: int, draws: int) -> np.ndarray:
    """[draws, items]: how often each item comes up in each of `draws` samples of `items` with replacement (a
    multinomial draw; counted with one bincount, several times faster than numpy's multinomial at 40k items)."""
    picked = rng.integers(0, items, (draws, items)) + items * np.arange(draws)[:, None]
    return np.bincount(picked.ravel(), minlength=draws * items).reshape(draws, items)
