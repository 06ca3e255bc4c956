"""The downstream tasks' measures, as their official evaluators compute them (numpy only, no sklearn).

Every function returns a fraction (accuracy in [0, 1], Matthews correlation in [-1, 1]); the task registry
turns them into the percentages the paper's tables show.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def accuracy(predictions: Sequence[object], labels: Sequence[object]) -> float:
    """Fraction of predictions equal to their label."""
    _same_length(predictions, labels)
    return sum(p == g for p, g in zip(predictions, labels, strict=True)) / len(labels)


def binary_f1(predictions: Sequence[object], labels: Sequence[object], positive: object) -> float:
    """F1 of the `positive` class (QQP's F1: positive = duplicate); 0 when there is no true positive."""
    _same_length(predictions, labels)
    true_positive = sum(p == positive and g == positive for p, g in zip(predictions, labels, strict=True))
    predicted = sum(p == positive for p in predictions)
    actual = sum(g == positive for g in labels)
    if true_positive == 0:
        return 0.0
    precision, recall = true_positive / predicted, true_positive / actual
    return 2 * precision * recall / (precision + recall)


def matthews_corrcoef(predictions: Sequence[object], labels: Sequence[object]) -> float:
    """Matthews correlation, for any number of classes: Gorodkin's R_K, which GLUE's diagnostic reports as R3.

    With C the confusion matrix, t the true counts per class, p the predicted counts, c the correct ones and s
    the total: (c*s - t.p) / sqrt((s^2 - p.p) (s^2 - t.t)); for two classes this is the usual MCC. When every
    prediction or every label is one class the denominator is 0 and the correlation is 0, as sklearn defines it.
    """
    _same_length(predictions, labels)
    classes = {value: index for index, value in enumerate(sorted(set(labels) | set(predictions), key=str))}
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)
    for p, g in zip(predictions, labels, strict=True):
        confusion[classes[g], classes[p]] += 1
    true_counts, predicted_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    correct, total = np.trace(confusion), confusion.sum()
    covariance = correct * total - true_counts @ predicted_counts
    denominator = np.sqrt((total**2 - predicted_counts @ predicted_counts) * (total**2 - true_counts @ true_counts))
    return 0.0 if denominator == 0 else float(covariance / denominator)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation (evaluate-v1.1.py and -v2.0.py): lower case, drop punctuation, drop the articles
    a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _answer_tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def _token_f1(prediction: str, gold: str) -> float:
    predicted, expected = _answer_tokens(prediction), _answer_tokens(gold)
    if not predicted or not expected:
        return float(predicted == expected)  # v2.0: an empty answer matches only an empty answer
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


def _golds(answers: Sequence[str]) -> list[str]:
    """evaluate-v2.0.py's gold answers: those that normalise to something, else the empty answer (a question
    without an answer). SQuAD v1.1 has no answer that normalises to nothing, so v1.1 scores are unchanged."""
    return [a for a in answers if normalize_answer(a)] or [""]


def squad_exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1 if the normalised prediction equals any normalised gold answer; an unanswerable question (no gold
    answer) scores 1 exactly when the prediction is empty."""
    return max(float(normalize_answer(prediction) == normalize_answer(gold)) for gold in _golds(answers))


def squad_f1(prediction: str, answers: Sequence[str]) -> float:
    """Token-overlap F1 of the normalised prediction, the best over the gold answers."""
    return max(_token_f1(prediction, gold) for gold in _golds(answers))


def _same_length(predictions: Sequence[object], labels: Sequence[object]) -> None:
    if len(predictions) != len(labels) or not labels:
        raise ValueError(f"need as many predictions as labels, at least one: got {len(predictions)}, {len(labels)}")
