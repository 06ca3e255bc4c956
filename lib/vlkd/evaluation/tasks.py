"""The downstream tasks of Sec. 4.1 by name: where their files are, what kind of head they need, their label
vocabulary and how they are scored (the scorers are in `vlkd.evaluation.task_scores`).

Every metric is a percentage, as in the paper's tables (a Matthews correlation R3 of 0.53 is 53.0). A task with
several evaluation files prefixes its metrics with the file's role (MNLI: `matched_accuracy`,
`mismatched_accuracy`). `main_metric` is the number a report's table shows for the task; `example_correct` says
whether one example counts as right for it, when it is a mean over examples (accuracy, exact match), which is what
lets the report compare two models example by example; `example_subsets` names the other metrics that are such a
mean over some of the examples (the diagnostic's per-category accuracies), compared the same way; `correlations`
names the metrics that are R_K correlations of predicted with gold labels (the diagnostic's R3s), compared through
their pseudo-values (`evaluation.correlation`); `example_cluster` says which examples share what makes their
outcomes move together (SQuAD's paragraph, TRACIE's story, the diagnostic's sentence pair), which the comparison's
interval draws whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

from vlkd.errors import VlkdError
from vlkd.evaluation.bootstrap import Clusters, cluster_labels
from vlkd.evaluation.readers import (
    Example,
    read_diagnostic,
    read_glue_pairs,
    read_piqa,
    read_squad,
    read_swag,
    read_tracie,
    task_file,
)
from vlkd.evaluation.task_scores import (
    DIAGNOSTIC_CATEGORIES,
    answer_matches,
    category_accuracies,
    category_key,
    label_matches,
    paragraph_of,
    score_accuracy,
    score_accuracy_f1,
    score_diagnostic,
    score_squad,
    score_tracie,
    sentence_pair_of,
    story_of,
)

Kind = Literal["classification", "extractive_qa", "multiple_choice"]
Reader = Callable[[Path], list[Example]]
Scorer = Callable[[Sequence[object], Sequence[Example]], dict[str, float]]
"""(predictions: a label for classification, a choice index, an answer text; the examples) -> metrics."""
ExampleCorrect = Callable[[object, Example], bool]
"""(one prediction, its example) -> whether it counts as right for the task's metrics that are means over examples."""
ExampleSubsets = Callable[[Example], list[str]]
"""(one example) -> the metrics, besides the main one, that are a mean of `ExampleCorrect` counting this example."""
ExampleCluster = Callable[[Example], str]
"""(one example) -> the key of its cluster: what it shares with the examples whose outcomes move with its own."""

NLI_LABELS = ("entailment", "neutral", "contradiction")


@dataclass(frozen=True)
class Task:
    """One downstream task. `evals` maps a metric prefix ("" for none) to the reader of an evaluation file;
    `trained_as` names the task whose finetuned model scores this one (GLUE's diagnostic: MNLI's)."""

    name: str
    title: str
    kind: Kind
    train: Reader | None
    evals: dict[str, Reader]
    score: Scorer
    main_metric: str
    metric_label: str
    example_correct: ExampleCorrect | None = None
    """None when no metric is a mean over examples"""
    main_is_mean: bool = True
    """False when the main metric is no mean of `example_correct` over examples (the diagnostic's R3, a correlation)"""
    example_subsets: ExampleSubsets | None = None
    """None when no other metric is a mean of `example_correct` over some of the examples"""
    labels: tuple[str, ...] = ()
    trained_as: str | None = None
    unanswerable: bool = False
    """extractive QA: questions may have no answer in the passage (SQuAD 2.0)"""
    example_cluster: ExampleCluster | None = None
    """None when the examples are independent (each its own cluster)"""
    correlations: dict[str, str | None] = field(default_factory=dict)
    """metric -> the `example_subsets` metric whose examples it is over (None: all), for each metric that is an R_K
    correlation of the predicted with the gold labels (classification). A main metric that is no mean is the mean
    of those over subsets that some example counts in (the diagnostic's `r3_average`)."""

    @property
    def trained_on(self) -> str:
        """The task whose training set the scoring model was finetuned on."""
        return self.trained_as or self.name

    @property
    def main_eval(self) -> str:
        """The metric prefix of the evaluation file the main metric is measured on (MNLI: `matched`)."""
        return next(p for p in self.evals if not p or self.main_metric.startswith(f"{p}_"))


def _in(name: str, reader: Callable[..., list[Example]], *args: object) -> Reader:
    """A reader of the file `name` in the task's folder."""
    return lambda folder: reader(task_file(folder, name), *args)


def _glue(
    name: str,
    title: str,
    texts: tuple[str, ...],
    label: str,
    labels: tuple[str, ...],
    score: Scorer = score_accuracy,
    evals: dict[str, Reader] | None = None,
    main_metric: str = "accuracy",
) -> Task:
    skip_short = name == "qqp"
    return Task(
        name=name,
        title=title,
        kind="classification",
        train=_in("train.tsv", read_glue_pairs, texts, label, skip_short),
        evals=evals or {"": _in("dev.tsv", read_glue_pairs, texts, label, skip_short)},
        score=score,
        main_metric=main_metric,
        metric_label="Acc",
        example_correct=label_matches,
        labels=labels,
    )


def _squad(name: str, title: str, suffix: str, unanswerable: bool) -> Task:
    return Task(
        name=name,
        title=title,
        kind="extractive_qa",
        train=_in(f"train-{suffix}.json", read_squad),
        evals={"": _in(f"dev-{suffix}.json", read_squad)},
        score=score_squad,
        main_metric="exact_match",
        metric_label="EM",
        example_correct=answer_matches,
        unanswerable=unanswerable,
        example_cluster=paragraph_of,
    )


def _choice(name: str, title: str, train: Reader, dev: Reader) -> Task:
    return Task(name, title, "multiple_choice", train, {"": dev}, score_accuracy, "accuracy", "Acc", label_matches)


_MNLI_TEXTS = ("sentence1", "sentence2")


def _piqa(split: str) -> Reader:
    return lambda folder: read_piqa(task_file(folder, f"{split}.jsonl"), task_file(folder, f"{split}-labels.lst"))


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        _glue("sst2", "SST-2", ("sentence",), "label", ("0", "1")),
        _glue("qnli", "QNLI", ("question", "sentence"), "label", ("entailment", "not_entailment")),
        _glue(
            "qqp",
            "QQP",
            ("question1", "question2"),
            "is_duplicate",
            ("0", "1"),
            score=partial(score_accuracy_f1, positive="1"),
        ),
        _glue(
            "mnli",
            "MNLI",
            _MNLI_TEXTS,
            "gold_label",
            NLI_LABELS,
            main_metric="matched_accuracy",
            evals={
                "matched": _in("dev_matched.tsv", read_glue_pairs, _MNLI_TEXTS, "gold_label"),
                "mismatched": _in("dev_mismatched.tsv", read_glue_pairs, _MNLI_TEXTS, "gold_label"),
            },
        ),
        _squad("squad_v1", "SQuAD v1.1", "v1.1", unanswerable=False),
        _squad("squad_v2", "SQuAD v2.0", "v2.0", unanswerable=True),
        _choice("swag", "SWAG", _in("train.csv", read_swag), _in("val.csv", read_swag)),
        Task(
            name="glue_diagnostic",
            title="GLUE diagnostics",
            kind="classification",
            train=None,
            evals={"": _in("diagnostic-full.tsv", read_diagnostic, DIAGNOSTIC_CATEGORIES)},
            score=score_diagnostic,
            main_metric="r3_average",
            metric_label="R3",
            example_correct=label_matches,
            main_is_mean=False,
            example_subsets=category_accuracies,
            labels=NLI_LABELS,
            trained_as="mnli",
            example_cluster=sentence_pair_of,
            correlations={
                "r3": None,
                **{category_key("r3", c): category_key("acc", c) for c in DIAGNOSTIC_CATEGORIES},
            },
        ),
        _choice("piqa", "PIQA", _piqa("train"), _piqa("valid")),
        # TRACIE has no dev split; its test file is the evaluation set (as in the paper's Table 7).
        Task(
            name="tracie",
            title="TRACIE",
            kind="classification",
            train=_in("tracie_train.txt", read_tracie),
            evals={"": _in("tracie_test.txt", read_tracie)},
            score=score_tracie,
            main_metric="accuracy",
            metric_label="Acc",
            example_correct=label_matches,
            labels=("positive", "negative"),
            example_cluster=story_of,
        ),
    )
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise VlkdError(f"unknown task {name!r}; available: {', '.join(TASKS)}") from None


def read_eval(task: Task, folder: Path) -> dict[str, list[Example]]:
    """The task's evaluation examples by metric prefix, each label checked against the task's vocabulary."""
    return {prefix: check_labels(task, reader(folder), folder) for prefix, reader in task.evals.items()}


def example_clusters(task: Task, examples: Sequence[Example]) -> Clusters | None:
    """Each example's cluster (`bootstrap.Clusters`) for the task's interval; None where examples are independent."""
    if task.example_cluster is None:
        return None
    return cluster_labels([task.example_cluster(example) for example in examples])


def example_subsets(task: Task, examples: Sequence[Example]) -> dict[str, str] | None:
    """metric -> "1" per example it is a mean over, "0" per other, for each metric of `Task.example_subsets` that
    some example counts in (in the order examples first name them); None where the task has no such metric."""
    if task.example_subsets is None:
        return None
    each = [task.example_subsets(example) for example in examples]
    metrics = dict.fromkeys(metric for named in each for metric in named)
    return {metric: "".join("1" if metric in named else "0" for named in each) for metric in metrics}


def read_train(task: Task, folder: Path) -> list[Example]:
    if task.train is None:
        raise VlkdError(
            f"task {task.name} has no training set: it is scored with the model finetuned on {task.trained_on}"
        )
    return check_labels(task, task.train(folder), folder)


def check_labels(task: Task, examples: list[Example], folder: Path) -> list[Example]:
    if not examples:
        raise VlkdError(f"task {task.name}: no examples in {folder}; check the files are the official ones")
    if task.kind == "multiple_choice":
        wrong = [e.label for e in examples if not 0 <= e.label < len(e.endings)]
        if wrong:
            raise VlkdError(f"task {task.name} ({folder}): answer indices {wrong[:5]} point at no choice")
    if task.labels:
        unknown = sorted({e.label for e in examples} - set(task.labels))
        if unknown:
            raise VlkdError(
                f"task {task.name} ({folder}): labels {unknown} are not in its vocabulary {list(task.labels)}"
            )
    return examples
