"""Predictions on a task's evaluation files scored the one way every predictor shares (a finetuned model, a
reference row): the task's metrics, and what the report needs beyond them to explain and compare runs: which
examples of the main evaluation file were right, how often each label was predicted, and how that file's examples
group (clusters, and the subsets a metric is a mean over).

Per-example outcomes are kept as one character per example ("1" right, "0" wrong) of the main evaluation file:
about 1 byte per dev example and run (MNLI-m's 9,815, QQP's 40,430), bounded by the size of a dev set; a subset
too (the diagnostic's four categories: 4 bytes per example, once per task). Where a metric is a correlation of
predicted with gold labels (`Task.correlations`), each run keeps its predicted label per example as a digit (the
label's index in `Task.labels`), and the gold labels once per task, the same way."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vlkd.evaluation.bootstrap import Clusters
from vlkd.evaluation.readers import Example
from vlkd.evaluation.task_scores import prefixed
from vlkd.evaluation.tasks import Task, example_clusters, example_subsets


@dataclass(frozen=True)
class Scored:
    """A predictor's scores on a task's evaluation files."""

    metrics: dict[str, float]
    """every metric, in percent, under its report name"""
    correct: str | None
    """main evaluation file: "1" per example right (`Task.example_correct`), "0" otherwise; None when no metric is
    a mean over examples"""
    predicted: dict[str, int] | None
    """main evaluation file: how many examples got each label (classification) or choice index (multiple
    choice), every possible one listed; extractive QA: `answer_counts`"""
    clusters: Clusters | None = None
    """main evaluation file: each example's cluster (`tasks.example_clusters`); None where they are independent"""
    subsets: dict[str, str] | None = None
    """main evaluation file: per metric that is a mean of `correct` over some examples (`tasks.example_subsets`),
    "1" per example in it; None where there is no such metric"""
    labels: str | None = None
    """main evaluation file: each example's predicted label (`label_digits`), where some metric is a correlation
    (`Task.correlations`); None elsewhere"""
    gold: str | None = None
    """main evaluation file: each example's gold label, as `labels` has the predicted ones"""

    def predictor_fields(self) -> dict[str, Any]:
        """What is the predictor's own (a reference row keeps these), not its evaluation file's, which every
        predictor on it shares."""
        return {"metrics": self.metrics, "correct": self.correct, "predicted": self.predicted}


def score_predictions(
    task: Task, predictions: Mapping[str, Sequence[object]], examples: Mapping[str, Sequence[Example]]
) -> Scored:
    """Score predictions of every evaluation file (by metric prefix) of `task`."""
    metrics: dict[str, float] = {}
    for prefix, file_examples in examples.items():
        metrics |= prefixed(prefix, task.score(predictions[prefix], file_examples))
    main, main_examples = predictions[task.main_eval], examples[task.main_eval]
    correct = None
    if task.example_correct is not None:
        correct = "".join("1" if task.example_correct(p, e) else "0" for p, e in zip(main, main_examples, strict=True))
    predicted = prediction_counts(task, main, main_examples)
    labels = gold = None
    if task.correlations:
        labels, gold = label_digits(task, main), label_digits(task, [e.label for e in main_examples])
    clusters, subsets = example_clusters(task, main_examples), example_subsets(task, main_examples)
    return Scored(metrics, correct, predicted, clusters, subsets, labels, gold)


def label_digits(task: Task, labels: Sequence[object]) -> str:
    """Each label's index in `task.labels`, a digit per example ("0" the first label): one byte per example, as
    `correct` is."""
    if len(task.labels) > 10:
        raise ValueError(f"{task.name}: {len(task.labels)} labels do not fit a digit each")
    index = {label: str(i) for i, label in enumerate(task.labels)}
    return "".join(index[label] for label in labels)


def main_score(task: Task, predictions: Sequence[object], examples: Sequence[Example]) -> float:
    """The task's main metric of predictions on its main evaluation file."""
    return prefixed(task.main_eval, task.score(predictions, examples))[task.main_metric]


NO_ANSWER, ONE_SPAN, OTHER_SPANS = "no answer", "most frequent span", "other spans"


def answer_counts(answers: Sequence[object]) -> dict[str, int]:
    """How many questions got no answer, the most frequent span, and any other span: three counts however large
    dev is, enough to show a run abstaining or answering one span everywhere."""
    spans = Counter(str(a) for a in answers if a)
    top = spans.most_common(1)[0][1] if spans else 0
    return {NO_ANSWER: len(answers) - spans.total(), ONE_SPAN: top, OTHER_SPANS: spans.total() - top}


def prediction_counts(task: Task, predictions: Sequence[object], examples: Sequence[Example]) -> dict[str, int] | None:
    """How many times each label (or choice index) was predicted, zero counts included: the histogram that shows
    a model answering one class for everything."""
    if task.kind == "extractive_qa":
        return answer_counts(predictions)
    if task.kind == "classification":
        possible = list(task.labels)
    else:
        possible = [str(i) for i in range(max(len(e.endings) for e in examples))]
    counts = Counter(str(p) for p in predictions)
    return {label: counts[label] for label in possible}
