"""R3 as a mean over dev examples (`vlkd.evaluation.correlation`): its pseudo-values add up to GLUE's R3, each is
the example's influence on it, and the interval built on them holds its 95% on data shaped like the diagnostic."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import matthews_corrcoef

from vlkd.evaluation.bootstrap import cluster_labels
from vlkd.evaluation.correlation import averaged_r3_pseudo_values, r3_pseudo_values
from vlkd.evaluation.differences import differences

# The GLUE diagnostic's shape: 1,104 examples, each sentence pair asked both ways (552 clusters of 2), NLI's three
# labels at about its shares (entailment 42%, neutral 32%, contradiction 26%), four coarse categories that overlap,
# each tagging about a quarter to two fifths of the pairs.
PAIRS = 552
LABEL_SHARES = (0.42, 0.32, 0.26)
CATEGORY_SHARES = {"lexical_semantics": 0.33, "predicate_argument_structure": 0.38, "logic": 0.33, "knowledge": 0.26}


def _predictions(rng: np.random.Generator, gold: np.ndarray, right: float) -> np.ndarray:
    """Each example right with probability `right`, else one of the two wrong labels (the next one more often)."""
    wrong = (gold + 1 + (rng.random(len(gold)) < 0.35)) % 3
    return np.where(rng.random(len(gold)) < right, gold, wrong)


@pytest.mark.parametrize(("classes", "right"), [(2, 0.7), (3, 0.55), (3, 0.2), (4, 0.9)])
def test_the_pseudo_values_mean_is_the_r3_glue_scores(classes: int, right: float) -> None:
    rng = np.random.default_rng(classes)
    gold = rng.choice(classes, 500, p=np.linspace(2, 1, classes) / np.linspace(2, 1, classes).sum())
    predicted = np.where(rng.random(500) < right, gold, rng.integers(0, classes, 500))
    values = r3_pseudo_values(predicted, gold, classes)
    assert values.mean() == pytest.approx(matthews_corrcoef(gold, predicted), abs=1e-12)


def test_one_predicted_class_everywhere_is_r3_0_with_no_spread() -> None:
    """Undefined, 0 as `metrics.matthews_corrcoef` counts it: no gradient, so no example moves it."""
    gold = np.array([0, 1, 2, 0, 1, 2])
    assert np.array_equal(r3_pseudo_values(np.zeros(6, dtype=np.int64), gold, 3), np.zeros(6))


def test_each_pseudo_value_is_its_examples_influence_on_r3() -> None:
    """R3 plus what leaving the example out takes away from it, scaled to the dev set's size (the jackknife's
    influence), to within the approximation's O(1/N)."""
    rng = np.random.default_rng(0)
    gold = rng.choice(3, 400, p=LABEL_SHARES)
    predicted = _predictions(rng, gold, 0.6)
    full = matthews_corrcoef(gold, predicted)
    left_out = np.array([matthews_corrcoef(np.delete(gold, i), np.delete(predicted, i)) for i in range(len(gold))])
    jackknife = (len(gold) - 1) * (full - left_out)
    influence = r3_pseudo_values(predicted, gold, 3) - full
    assert np.abs(influence - jackknife).max() < 0.02 * np.abs(jackknife).max()


def test_the_averaged_pseudo_values_mean_is_the_mean_of_the_subsets_r3() -> None:
    rng = np.random.default_rng(1)
    gold = rng.choice(3, 300, p=LABEL_SHARES)
    predicted = _predictions(rng, gold, 0.5)
    subsets = [rng.random(300) < share for share in CATEGORY_SHARES.values()]
    values = averaged_r3_pseudo_values(predicted, gold, 3, subsets)
    expected = np.mean([matthews_corrcoef(gold[mask], predicted[mask]) for mask in subsets])
    assert values.mean() == pytest.approx(expected, abs=1e-12)


def _null_run(rng: np.random.Generator, gold: np.ndarray, favour: np.ndarray, row: int) -> tuple[str, str]:
    """One finetuning run of a row: its seed's skill, then each example right with the chance its pair gives this
    row (`favour`: 0 alike, 1 the model's, 2 the baseline's). Returns (labels, correct) as results.json keeps them."""
    chance = np.select([favour == 0, favour == 1 + row], [0.7, 0.9], default=0.45) + rng.normal(0, 0.01)
    predicted = _predictions(rng, gold, 0.0)
    right = rng.random(len(gold)) < chance
    predicted = np.where(right, gold, predicted)
    return "".join(map(str, predicted)), "".join("1" if r else "0" for r in right)


@pytest.mark.parametrize("seeds", [2, 3, 5])
def test_under_the_null_an_r3_interval_excludes_zero_about_5_percent_of_the_time(seeds: int) -> None:
    """A fresh diagnostic-shaped dev set each time, on which the two rows are equally good yet right on different
    pairs (a tenth of the pairs favour the model, a tenth the baseline, both directions alike), seeds varying a
    point: through `differences`, as results.json gets it, R3 over all examples, one category's and the main metric
    (their mean) each exclude 0 about 5% of the time, as the categories' accuracies do on the same runs (1,000
    repetitions: R3s 3.1-6.0%, accuracies 3.7-6.4% over 2, 3 and 5 seeds). 500 repetitions here: the binomial SD
    near 5% is 1.0 point, and the bounds are 3 SDs off."""
    rng, reps = np.random.default_rng(seeds), 500
    clusters = cluster_labels((np.arange(2 * PAIRS) // 2).tolist())
    watched = ("glue_diagnostic", "glue_diagnostic/r3", "glue_diagnostic/r3_logic")
    excluded = dict.fromkeys(watched, 0)
    for _ in range(reps):
        gold = np.repeat(rng.choice(3, PAIRS, p=LABEL_SHARES), 2)
        favour = np.repeat(rng.choice(3, PAIRS, p=[0.8, 0.1, 0.1]), 2)
        subsets = {
            f"acc_{name}": "".join("1" if tagged else "0" for tagged in np.repeat(rng.random(PAIRS) < share, 2))
            for name, share in CATEGORY_SHARES.items()
        }
        runs = []
        for row, name in enumerate(("M", "BASE")):
            for _ in range(seeds):
                labels, correct = _null_run(rng, gold, favour, row)
                runs.append({"row": name, "task": "glue_diagnostic", "labels": labels, "correct": correct})
        gold_labels = {"glue_diagnostic": "".join(map(str, gold))}
        table = differences(runs, "BASE", {"glue_diagnostic": clusters}, {"glue_diagnostic": subsets}, gold_labels)
        for key in watched:
            excluded[key] += not table["M"][key]["within_noise"]
    rates = {key: count / reps for key, count in excluded.items()}
    print(f"\n{seeds} seeds: % excluding 0", {key: f"{rate:.1%}" for key, rate in rates.items()})
    assert all(0.02 <= rate <= 0.08 for rate in rates.values()), rates
