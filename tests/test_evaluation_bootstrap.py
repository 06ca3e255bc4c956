"""The paired bootstrap behind every difference from the baseline, on constructed outcomes whose answer is known."""

from __future__ import annotations

import random

import pytest

from vlkd.evaluation.bootstrap import Interval, paired_bootstrap


def _outcomes(right: int, wrong: int) -> str:
    return "1" * right + "0" * wrong


def _shuffled(outcome: str, seed: int) -> str:
    characters = list(outcome)
    random.Random(seed).shuffle(characters)
    return "".join(characters)


def test_identical_predictions_differ_by_zero_within_noise() -> None:
    runs = [_shuffled(_outcomes(60, 40), seed) for seed in range(3)]
    interval = paired_bootstrap([(runs, list(runs))])
    assert interval.difference == 0.0
    assert interval.low <= 0.0 <= interval.high and interval.within_noise


def test_a_model_right_everywhere_against_a_baseline_right_on_half_excludes_zero() -> None:
    model, baseline = [_outcomes(100, 0)] * 2, [_shuffled(_outcomes(50, 50), s) for s in range(2)]
    interval = paired_bootstrap([(model, baseline)])
    assert interval.difference == pytest.approx(50.0)
    assert 30.0 < interval.low < 50.0 < interval.high < 70.0  # 100 examples: about +-10 points at 95%
    assert not interval.within_noise


def test_pairing_cancels_what_both_rows_share() -> None:
    """Model and baseline agree on all but 5 of 200 examples, where the model is right: unpaired resampling
    would see two accuracies near 50%, their difference +-10 points at 95%; paired, the interval stays above 0."""
    shared = _shuffled(_outcomes(100, 95), 0)
    interval = paired_bootstrap([([shared + "11111"], [shared + "00000"])])
    assert interval.difference == pytest.approx(2.5)
    assert interval.low > 0.0 and interval.high <= 5.0


def test_a_gain_carried_by_one_lucky_seed_is_within_noise() -> None:
    """Seed 0 right everywhere, seed 1 wrong everywhere: averaged, 50% on every example, against a baseline at
    40%. Resampling the seeds, not only the examples, is what keeps one seed's luck from looking like a gain."""
    model = [_outcomes(100, 0), _outcomes(0, 100)]
    baseline = [_shuffled(_outcomes(40, 60), s) for s in range(2)]
    interval = paired_bootstrap([(model, baseline)])
    assert interval.difference == pytest.approx(10.0)
    assert interval.within_noise and interval.low < -30.0 and interval.high > 40.0


def test_the_average_over_tasks_is_the_mean_of_their_differences() -> None:
    better = ([_outcomes(80, 20)], [_outcomes(60, 40)])
    same = ([_outcomes(70, 30)], [_outcomes(70, 30)])
    interval = paired_bootstrap([better, same])
    assert interval.difference == pytest.approx(10.0)
    assert interval.low > 0.0  # the gain on one task, halved, is still clear of 0


def test_the_interval_is_reproducible() -> None:
    pair = ([_shuffled(_outcomes(55, 45), 1)], [_shuffled(_outcomes(50, 50), 2)])
    assert paired_bootstrap([pair]) == paired_bootstrap([pair])


def test_different_dev_sets_are_refused() -> None:
    with pytest.raises(ValueError, match="different dev sets: 3, 4"):
        paired_bootstrap([(["101"], ["1010"])])


@pytest.mark.parametrize(("low", "high", "within"), [(-1.0, 2.0, True), (0.0, 2.0, True), (0.5, 2.0, False)])
def test_within_noise_when_the_interval_contains_zero(low: float, high: float, within: bool) -> None:
    assert Interval(1.0, low, high).within_noise is within
