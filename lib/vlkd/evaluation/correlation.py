"""R3 (Gorodkin's R_K, the GLUE diagnostic's measure) written as a mean over dev examples, so that a difference in
it gets the interval a difference in accuracy gets (`bootstrap.difference_interval`).

R_K is no mean of per-example outcomes, but it is a smooth function of means over the examples: the fraction right
c, the fraction predicted as each class p_k and the fraction whose gold label is each class t_k,
    R = (c - sum_k p_k t_k) / sqrt((1 - sum_k p_k^2) (1 - sum_k t_k^2)).
To first order (the delta method) R moves with the mean over examples of its gradient times each example's own
(correct_i, one-hot predicted_i, one-hot gold_i) less those means: its empirical influence. Each example's
pseudo-value, R plus its influence, then has R as its mean exactly, and the spread of R (over another draw of the
dev set, over seeds through the runs' pseudo-values) as the spread of a mean. Every part of the interval (seeds,
examples, clusters, the one-seed bootstrap) applies unchanged. The approximation's error shrinks as 1/N; the check
that the interval holds 95% at the diagnostic's size and per category is in tests/test_evaluation_correlation.py.

Where every prediction or every gold label is one class R is undefined and counts as 0
(`metrics.matthews_corrcoef`); it has no gradient there, and its pseudo-values are all 0: such a run adds no
example noise, only its score, to the interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_DEGENERATE = 1e-12
"""1 - sum of squared class shares at or below which every label is one class (the correlation is undefined)"""


def r3_pseudo_values(predicted: np.ndarray, gold: np.ndarray, classes: int) -> np.ndarray:
    """[N] per-example values whose mean is R_K of `predicted` against `gold` ([N] label indices below
    `classes`) and whose spread is R_K's to first order (the module docstring)."""
    examples = len(gold)
    predicted_share = np.bincount(predicted, minlength=classes) / examples
    gold_share = np.bincount(gold, minlength=classes) / examples
    correct = (predicted == gold).astype(float)
    predicted_spread, gold_spread = 1.0 - predicted_share @ predicted_share, 1.0 - gold_share @ gold_share
    if predicted_spread <= _DEGENERATE or gold_spread <= _DEGENERATE:
        return np.zeros(examples)
    root = np.sqrt(predicted_spread * gold_spread)
    r = (correct.mean() - predicted_share @ gold_share) / root
    by_predicted = -gold_share / root + r * predicted_share / predicted_spread  # dR / d predicted_share
    by_gold = -predicted_share / root + r * gold_share / gold_spread  # dR / d gold_share
    influence = (
        (correct - correct.mean()) / root
        + by_predicted[predicted]
        - by_predicted @ predicted_share
        + by_gold[gold]
        - by_gold @ gold_share
    )
    return r + influence


def averaged_r3_pseudo_values(
    predicted: np.ndarray, gold: np.ndarray, classes: int, subsets: Sequence[np.ndarray]
) -> np.ndarray:
    """[N] pseudo-values of the mean over `subsets` ([N] boolean masks, each of some examples) of each subset's
    R_K: the diagnostic's `r3_average` over its categories. An example in subset k adds its pseudo-value's
    deviation there times N / N_k (its weight in the mean over all N), over the number of subsets."""
    examples = len(gold)
    total = np.zeros(examples)
    for mask in subsets:
        values = r3_pseudo_values(predicted[mask], gold[mask], classes)
        total += values.mean()
        total[mask] += (values - values.mean()) * examples / mask.sum()
    return total / len(subsets)
