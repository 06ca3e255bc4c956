"""The downstream tasks of Sec. 4.1 by name: where their files are, what kind of head they need, their label
vocabulary and how they are scored.

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

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

from vlkd.errors import VlkdError
from vlkd.evaluation import metrics
from vlkd.evaluation.bootstrap import Clusters, cluster_labels
from vlkd.evaluation.readers import (
    Example,
    Question,
    TextPair,
    read_diagnostic,
    read_glue_pairs,
    read_piqa,
    read_squad,
    read_swag,
    read_tracie,
    task_file,
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
DIAGNOSTIC_CATEGORIES = ("Lexical Semantics", "Predicate-Argument Structure", "Logic", "Knowledge")


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


def prefixed(prefix: str, scores: dict[str, float]) -> dict[str, float]:
    """Metrics of the evaluation file with metric prefix `prefix` under their report names."""
    return {f"{prefix}_{name}" if prefix else name: value for name, value in scores.items()}


def _percent(value: float) -> float:
    return 100.0 * value


def label_matches(prediction: object, example: Example) -> bool:
    """A predicted label or choice index is right when it is the gold one (accuracy's unit)."""
    return prediction == example.label


def answer_matches(prediction: str, question: Question) -> bool:
    """An answer is right when it matches a gold answer exactly after SQuAD's normalisation (exact match's unit)."""
    return metrics.squad_exact_match(prediction, [text for text, _ in question.answers]) == 1.0


def paragraph_of(question: Question) -> str:
    """A SQuAD question's cluster: its paragraph, by its text (v1.1's dev set asks 5.1 questions per paragraph)."""
    return question.context


def sentence_pair_of(pair: TextPair) -> str:
    """A diagnostic example's cluster: its two sentences in either order. `diagnostic-full.tsv` asks pairs both
    ways, one after the other (its first rows: "The cat sat on the mat." / "The cat did not sit on the mat.", then
    the same two the other way round), and a model that misreads one direction tends to misread the other; a pair
    asked once is a cluster of its own."""
    return "\t".join(sorted((pair.text_a, pair.text_b or "")))


def diagnostic_categories(pair: TextPair) -> list[str]:
    """The coarse categories a diagnostic example is tagged with (its fine-grained tags' cells not empty)."""
    return [category for category in DIAGNOSTIC_CATEGORIES if pair.meta[category].strip()]


def category_accuracies(pair: TextPair) -> list[str]:
    """The diagnostic's per-category accuracies an example counts in (`Task.example_subsets`)."""
    return [category_key("acc", category) for category in diagnostic_categories(pair)]


def story_of(statement: TextPair) -> str:
    """A TRACIE statement's cluster: its story, the premise (the test file has 12.4 statements per story)."""
    return statement.text_a


def score_accuracy(predictions: Sequence[object], examples: Sequence[Example]) -> dict[str, float]:
    return {"accuracy": _percent(metrics.accuracy(predictions, [e.label for e in examples]))}


def score_accuracy_f1(predictions: Sequence[object], examples: Sequence[Example], positive: str) -> dict[str, float]:
    labels = [e.label for e in examples]
    return {
        "accuracy": _percent(metrics.accuracy(predictions, labels)),
        "f1": _percent(metrics.binary_f1(predictions, labels, positive)),
    }


def _squad_means(predictions: Sequence[str], questions: Sequence[Question], prefix: str) -> dict[str, float]:
    golds = [[text for text, _ in q.answers] for q in questions]
    pairs = list(zip(predictions, golds, strict=True))
    return {
        f"{prefix}exact_match": _percent(sum(metrics.squad_exact_match(p, g) for p, g in pairs) / len(pairs)),
        f"{prefix}f1": _percent(sum(metrics.squad_f1(p, g) for p, g in pairs) / len(pairs)),
    }


def score_squad(predictions: Sequence[str], questions: Sequence[Question]) -> dict[str, float]:
    """Exact match and F1 over all questions; with unanswerable questions (v2.0), also over the answerable
    (`has_answer_`) and unanswerable (`no_answer_`) ones, as evaluate-v2.0.py reports HasAns and NoAns."""
    scores = _squad_means(predictions, questions, "")
    if any(not q.answers for q in questions):
        for prefix, answerable in (("has_answer_", True), ("no_answer_", False)):
            chosen = [(p, q) for p, q in zip(predictions, questions, strict=True) if bool(q.answers) == answerable]
            if chosen:
                scores |= _squad_means(*zip(*chosen, strict=True), prefix)
    return scores


def score_tracie(predictions: Sequence[str], examples: Sequence[TextPair]) -> dict[str, float]:
    """TRACIE's evaluator: accuracy over all statements, over `starts before|after` ones, over the others
    (`ends`), and story exact match (the share of stories whose statements are all right)."""
    right = [p == e.label for p, e in zip(predictions, examples, strict=True)]
    starts = [("starts before" in e.text_b or "starts after" in e.text_b) for e in examples]
    stories: dict[str, bool] = defaultdict(lambda: True)
    for ok, example in zip(right, examples, strict=True):
        stories[story_of(example)] &= ok
    scores = {"accuracy": _percent(sum(right) / len(right))}
    for name, wanted in (("start_accuracy", True), ("end_accuracy", False)):
        chosen = [ok for ok, start in zip(right, starts, strict=True) if start == wanted]
        if chosen:
            scores[name] = _percent(sum(chosen) / len(chosen))
    scores["story_exact_match"] = _percent(sum(stories.values()) / len(stories))
    return scores


DiagnosticMeasure = Literal["r3", "acc"]
"""what the diagnostic reports per category: R3 (GLUE's official measure) and accuracy"""


def category_key(measure: DiagnosticMeasure, category: str) -> str:
    """(`r3`, `Predicate-Argument Structure`) -> `r3_predicate_argument_structure`."""
    return f"{measure}_" + re.sub(r"[^a-z0-9]+", "_", category.lower()).strip("_")


def _r3_and_accuracy(predictions: Sequence[str], labels: Sequence[str]) -> dict[DiagnosticMeasure, float]:
    return {
        "r3": _percent(metrics.matthews_corrcoef(predictions, labels)),
        "acc": _percent(metrics.accuracy(predictions, labels)),
    }


def score_diagnostic(predictions: Sequence[str], examples: Sequence[TextPair]) -> dict[str, float]:
    """GLUE's diagnostic: R3 and accuracy over all examples (`r3`, GLUE's headline number, and `accuracy`) and per
    coarse category over the examples tagged with it (`r3_<category>`, `acc_<category>`). The main metric,
    `r3_average`, is the mean R3 of the categories present: R3 is GLUE's official measure. The accuracies are
    there because the paper's Table 7 most likely reports accuracy (the reasons are in `vlkd.evaluation.layouts`)."""
    labels = [e.label for e in examples]
    overall = _r3_and_accuracy(predictions, labels)
    scores = {"r3": overall["r3"], "accuracy": overall["acc"]}
    for category in DIAGNOSTIC_CATEGORIES:
        tagged = zip(predictions, labels, examples, strict=True)
        chosen = [(p, g) for p, g, e in tagged if category in diagnostic_categories(e)]
        if chosen:
            for measure, value in _r3_and_accuracy(*zip(*chosen, strict=True)).items():
                scores[category_key(measure, category)] = value
    present = [scores[category_key("r3", c)] for c in DIAGNOSTIC_CATEGORIES if category_key("r3", c) in scores]
    scores["r3_average"] = sum(present) / len(present) if present else scores["r3"]
    return scores


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
