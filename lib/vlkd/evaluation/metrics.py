"""The downstream tasks' measures, as their official evaluators compute them.

Accuracy, F1 and Matthews correlation are scikit-learn's, the functions Hugging Face's GLUE metric calls; sklearn is
imported inside them because it takes about a second to load and `vlkd report` imports this module (through the
task registry) without scoring anything. SQuAD's exact match and F1 are its official script's, written out here:
Hugging Face `evaluate` would download the metric's code from the Hub at run time, which fails on an offline cluster.

Every function returns a fraction (accuracy in [0, 1], Matthews correlation in [-1, 1]); the task registry
turns them into the percentages the paper's tables show.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def accuracy(predictions: Sequence[object], labels: Sequence[object]) -> float:
    """Fraction of predictions equal to their label."""
    from sklearn.metrics import accuracy_score

    _same_length(predictions, labels)
    return float(accuracy_score(labels, predictions))


def binary_f1(predictions: Sequence[object], labels: Sequence[object], positive: object) -> float:
    """F1 of the `positive` class (QQP's F1: positive = duplicate); 0 when there is no true positive."""
    from sklearn.metrics import f1_score

    _same_length(predictions, labels)
    return float(f1_score(labels, predictions, pos_label=positive, average="binary", zero_division=0.0))


def matthews_corrcoef(predictions: Sequence[object], labels: Sequence[object]) -> float:
    """Matthews correlation, for any number of classes: Gorodkin's R_K, which GLUE's diagnostic reports as R3.

    When every prediction or every label is one class the correlation is undefined and counts as 0, as sklearn
    defines it; one class everywhere is answered here, before sklearn's confusion matrix warns about it."""
    from sklearn.metrics import matthews_corrcoef as sklearn_matthews

    _same_length(predictions, labels)
    if len(set(labels) | set(predictions)) == 1:
        return 0.0
    return float(sklearn_matthews(labels, predictions))


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
