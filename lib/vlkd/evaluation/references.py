"""Reference rows: what a task scores without a language model, so a report shows whether a model learnt more
than the label prior or word counts.

- `majority`: the training split's most frequent label (multiple choice: answer index), predicted everywhere.
- `bag_of_words`: scikit-learn's CountVectorizer over each text of a pair (one vocabulary per text, so a word in
  the premise and the same word in the hypothesis are different features) and a LogisticRegression, fit on the
  training split. Sentence (pair) classification only: multiple choice and extractive QA have no such cheap
  counterpart.
- `no_answer`: the empty answer to every question, extractive QA with unanswerable questions (SQuAD v2.0) only:
  what abstaining scores (about half of v2.0's dev questions have no answer), the floor a QA run must beat.

Both are scored on the dev files with the task's own scorer, so a reference cell reads like a model's. A task
scored with another task's model (GLUE's diagnostic) is referenced from that task's training split.

Cost: the regression on MNLI's size (393k pairs) took 4 minutes on 2 CPU cores in the worst case measured
(random labels, so lbfgs ran its 1,000 iterations); the majority class costs one pass over the labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vlkd.evaluation.readers import Example
from vlkd.evaluation.scoring import Scored, score_predictions
from vlkd.evaluation.tasks import Kind, Task, read_eval, read_train

Predict = Callable[[Sequence[Example]], list[object]]
"""A fitted reference: examples -> a prediction per example."""


def majority_class(task: Task, train: Sequence[Example]) -> Predict:
    """The most frequent training label for every example; a tie goes to the label listed first in the task's
    vocabulary (the lowest index for multiple choice), so the row does not depend on the file's order."""
    counts = Counter(e.label for e in train)
    possible = task.labels or sorted(counts)
    majority = max(possible, key=lambda label: counts[label])
    return lambda examples: [majority] * len(examples)


def always_no_answer(task: Task, train: Sequence[Example]) -> Predict:
    """The empty answer ("", as `qa.predict` abstains) to every question; nothing to fit."""
    return lambda examples: [""] * len(examples)


def bag_of_words(task: Task, train: Sequence[Example]) -> Predict:
    """A logistic regression over word counts of each text, fit on `train` (sklearn's defaults: L2, lbfgs)."""
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts = 1 if train[0].text_b is None else 2

    def table(rows: Sequence[Example]) -> np.ndarray:
        return np.array([[e.text_a, e.text_b][:texts] for e in rows], dtype=object)

    vectorizers = ColumnTransformer([(f"text_{i}", CountVectorizer(), i) for i in range(texts)])
    model = make_pipeline(vectorizers, LogisticRegression(max_iter=1000))
    model.fit(table(train), [e.label for e in train])
    return lambda examples: [str(label) for label in model.predict(table(examples))]


@dataclass(frozen=True)
class Reference:
    """A kind of reference row: its label in the report, how it is fit, and the tasks it applies to: their kinds
    and, with `unanswerable_only`, only those with unanswerable questions."""

    label: str
    fit: Callable[[Task, Sequence[Example]], Predict]
    kinds: tuple[Kind, ...]
    unanswerable_only: bool = False

    def applies_to(self, task: Task) -> bool:
        return task.kind in self.kinds and (task.unanswerable or not self.unanswerable_only)


REFERENCES: dict[str, Reference] = {
    "majority": Reference("majority class", majority_class, ("classification", "multiple_choice")),
    "bag_of_words": Reference("bag-of-words LR", bag_of_words, ("classification",)),
    "no_answer": Reference("always no answer", always_no_answer, ("extractive_qa",), unanswerable_only=True),
}
"""By the names `EvalSpec.references` lists."""


def fit_reference(name: str, task: Task, train_dir: Path) -> Predict:
    """Reference `name` fit on the training split of `task` in `train_dir`. A task scored with another task's
    model (GLUE's diagnostic) uses the reference fit for that task (MNLI)."""
    return REFERENCES[name].fit(task, read_train(task, train_dir))


def score_reference(predict: Predict, task: Task, eval_dir: Path) -> Scored:
    """A fitted reference scored on the evaluation files of `task` in `eval_dir`, as a model is."""
    examples = read_eval(task, eval_dir)
    return score_predictions(task, {prefix: predict(rows) for prefix, rows in examples.items()}, examples)
