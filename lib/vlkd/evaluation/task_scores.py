"""How a task's predictions become the numbers the paper's tables show: each task's official measures as
percentages (a Matthews correlation R3 of 0.53 is 53.0), what makes one example right for the measures that are
means over examples, and which examples share what makes their outcomes move together. The task registry
(`vlkd.evaluation.tasks`) names these for each task."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

from vlkd.evaluation import metrics
from vlkd.evaluation.readers import Example, Question, TextPair

DIAGNOSTIC_CATEGORIES = ("Lexical Semantics", "Predicate-Argument Structure", "Logic", "Knowledge")


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
