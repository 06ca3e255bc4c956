"""The downstream metrics against hand-computed values (SQuAD's official normalisation, GLUE's R3)."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import pytest

from vlkd.evaluation.metrics import (
    accuracy,
    binary_f1,
    matthews_corrcoef,
    normalize_answer,
    squad_exact_match,
    squad_f1,
)


def test_accuracy_is_the_share_of_right_predictions() -> None:
    assert accuracy(["a", "b", "b", "a"], ["a", "b", "a", "a"]) == 0.75


def test_metrics_refuse_unequal_lengths() -> None:
    with pytest.raises(ValueError, match="as many predictions as labels"):
        accuracy([1, 0], [1])


def test_binary_f1_of_the_positive_class() -> None:
    # TP = 2, FP = 1, FN = 1: precision = recall = 2/3.
    assert binary_f1([1, 1, 0, 0, 1], [1, 0, 0, 1, 1], positive=1) == pytest.approx(2 / 3)


def test_binary_f1_without_a_true_positive_is_zero() -> None:
    assert binary_f1(["0", "0"], ["1", "0"], positive="1") == 0.0


def test_matthews_binary_matches_the_textbook_formula() -> None:
    # TP = 2, TN = 1, FP = 1, FN = 1: (2*1 - 1*1) / sqrt(3 * 3 * 2 * 2) = 1/6.
    assert matthews_corrcoef([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(1 / 6)


def test_matthews_three_classes_is_gorodkins_r3() -> None:
    # Confusion (true rows, predicted columns): [[1,1,0],[0,2,0],[1,0,1]]; t = (2,2,2), p = (2,3,1), c = 4, s = 6:
    # (4*6 - 12) / sqrt((36 - 14) * (36 - 12)) = 12 / sqrt(528).
    labels = ["entailment", "entailment", "neutral", "neutral", "contradiction", "contradiction"]
    predictions = ["entailment", "neutral", "neutral", "neutral", "contradiction", "entailment"]
    assert matthews_corrcoef(predictions, labels) == pytest.approx(12 / math.sqrt(528))


def test_matthews_does_not_depend_on_class_names() -> None:
    rename = {"entailment": "z", "neutral": "a", "contradiction": "m"}
    labels = ["entailment", "neutral", "contradiction", "neutral", "entailment"]
    predictions = ["entailment", "contradiction", "contradiction", "neutral", "neutral"]
    renamed = matthews_corrcoef([rename[p] for p in predictions], [rename[g] for g in labels])
    assert renamed == pytest.approx(matthews_corrcoef(predictions, labels))


@pytest.mark.parametrize(
    ("predictions", "labels", "expected"),
    [
        (["a", "b", "c", "a"], ["a", "b", "c", "a"], 1.0),
        ([0, 1, 0, 1], [1, 0, 1, 0], -1.0),
        (["a", "a", "a"], ["a", "b", "c"], 0.0),  # one predicted class: no correlation
        (["a", "b", "c"], ["a", "a", "a"], 0.0),  # one true class
        (["a", "a"], ["a", "a"], 0.0),  # a single class everywhere: sklearn's 0, not NaN
    ],
)
def test_matthews_extremes_and_degenerate_cases(predictions: list, labels: list, expected: float) -> None:
    assert matthews_corrcoef(predictions, labels) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("predictions", "labels"),
    [(["a", "a"], ["a", "a"]), (["a", "a", "a"], ["a", "b", "c"]), (["b", "b"], ["a", "b"])],
)
def test_matthews_of_one_predicted_class_is_zero_without_warnings(predictions: list, labels: list) -> None:
    """A collapsed finetune that predicts one class is scored without warnings spilling into the job log."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert matthews_corrcoef(predictions, labels) == 0.0


def test_f1_when_the_positive_class_never_occurs_is_zero_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert binary_f1(["0", "0"], ["0", "0"], positive="1") == 0.0


def test_the_task_registry_loads_without_sklearn() -> None:
    """`vlkd report` reads the registry without scoring anything: sklearn's second of import is paid only to score."""
    probe = "import sys, vlkd.evaluation.tasks; print('sklearn' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("an apple, a pear and the plum.", "apple pear and plum"),
        ("  moves   to\tthe left\n", "moves to left"),
        ("theory of anthem", "theory of anthem"),  # articles are whole words only
        ("state-of-the-art", "stateoftheart"),  # punctuation is dropped, not turned into spaces
        ("A", ""),
    ],
)
def test_squad_normalisation(text: str, normalized: str) -> None:
    assert normalize_answer(text) == normalized


def test_exact_match_ignores_case_punctuation_and_articles() -> None:
    assert squad_exact_match("the Eiffel Tower.", ["Eiffel tower"]) == 1.0
    assert squad_exact_match("Eiffel", ["Eiffel tower"]) == 0.0


def test_exact_match_takes_the_best_gold_answer() -> None:
    assert squad_exact_match("1889", ["in 1889", "1889", "the year 1889"]) == 1.0


def test_f1_counts_overlapping_tokens() -> None:
    # prediction [red, circle, moves], gold [red, circle]: precision 2/3, recall 1 -> F1 0.8.
    assert squad_f1("a red circle moves", ["the red circle"]) == pytest.approx(0.8)


def test_f1_counts_repeated_tokens_once_per_match() -> None:
    # overlap: red min(2, 1) + blue min(1, 2) = 2 of 3 each side.
    assert squad_f1("red red blue", ["red blue blue"]) == pytest.approx(2 / 3)


def test_f1_takes_the_best_gold_answer() -> None:
    assert squad_f1("red circle", ["blue square", "red circle moves", "red"]) == pytest.approx(0.8)


def test_f1_without_overlap_is_zero() -> None:
    assert squad_f1("blue", ["red circle"]) == 0.0


def test_unanswerable_question_scores_one_only_for_an_empty_prediction() -> None:
    assert squad_exact_match("", []) == 1.0
    assert squad_f1("", []) == 1.0
    assert squad_exact_match("red", []) == 0.0
    assert squad_f1("red", []) == 0.0


def test_empty_prediction_on_an_answerable_question_scores_zero() -> None:
    assert squad_exact_match("", ["red"]) == 0.0
    assert squad_f1("", ["red"]) == 0.0


def test_gold_answers_that_normalise_to_nothing_count_as_no_answer() -> None:
    # evaluate-v2.0.py drops such golds; with none left the question is unanswerable.
    assert squad_exact_match("", ["the", "."]) == 1.0
    assert squad_f1("a", ["the"]) == 1.0  # "a" normalises to the empty answer too
