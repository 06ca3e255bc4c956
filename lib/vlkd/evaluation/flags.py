"""Flags on finetuning runs whose number alone would mislead: a run that did not learn, one that answers one
class for (nearly) all of dev (extractive QA: abstains, or answers one span), one no better than always answering
the training split's majority class.

Thresholds (stated in the report beside the flags):
- did not learn: the mean training loss over the last tenth of the logged points stays above `LOSS_FRACTION`
  (90%) of its mean over the first tenth. Means over a tenth, not single points: one lucky batch of a run that
  learnt nothing dips well below 90% of a two-class start (ln 2 = 0.693) on a batch of 16.
- one class: `ONE_CLASS_SHARE` (90%) or more of the main dev file gets one label (or choice index); for extractive
  QA, no answer, or one and the same span (`scoring.answer_counts`).
- majority: the run's main metric is at or below the majority-class reference row's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from vlkd.evaluation.scoring import NO_ANSWER, ONE_SPAN
from vlkd.evaluation.tasks import Task

LOSS_FRACTION = 0.9
LOSS_SPAN = 0.1
ONE_CLASS_SHARE = 0.9

THRESHOLDS = (
    f"did not learn: training loss over the last {LOSS_SPAN:.0%} of the run above {LOSS_FRACTION:.0%} of its "
    f"first {LOSS_SPAN:.0%}; one class: one answer (extractive QA: no answer, or one span) for "
    f"{ONE_CLASS_SHARE:.0%} or more of dev; majority: main metric at or below the majority-class reference"
)


def did_not_learn(loss_curve: Sequence[Sequence[float]]) -> str | None:
    """'did not learn: loss 0.695 -> 0.694' when the loss never fell to `LOSS_FRACTION` of its start."""
    losses = [loss for _, loss in loss_curve]
    if len(losses) < 2:
        return None
    span = max(1, round(len(losses) * LOSS_SPAN))
    start, end = math.fsum(losses[:span]) / span, math.fsum(losses[-span:]) / span
    if end <= LOSS_FRACTION * start:
        return None
    return f"did not learn: loss {start:.3f} -> {end:.3f}"


def one_class(predicted: Mapping[str, int] | None, task: Task) -> str | None:
    """ "predicts 'positive' for 97% of dev" when one answer takes `ONE_CLASS_SHARE` of the main dev file."""
    total = sum((predicted or {}).values())
    if not total:
        return None
    answers = {k: predicted.get(k, 0) for k in (NO_ANSWER, ONE_SPAN)} if task.kind == "extractive_qa" else predicted
    answer, count = max(answers.items(), key=lambda item: item[1])
    if count / total < ONE_CLASS_SHARE:
        return None
    share = f"{math.floor(100 * count / total)}% of dev"
    if task.kind == "extractive_qa":
        return f"abstains on {share}" if answer == NO_ANSWER else f"answers one and the same span for {share}"
    what = f"choice {answer}" if task.kind == "multiple_choice" else repr(answer)
    return f"predicts {what} for {share}"


def at_or_below_majority(value: float | None, majority: float | None, task: Task) -> str | None:
    """'at or below the majority class: 50.0 <= 50.0 accuracy'."""
    if value is None or majority is None or value > majority:
        return None
    return f"at or below the majority class: {value:.1f} <= {majority:.1f} {task.main_metric.replace('_', ' ')}"


def run_flags(run: Mapping[str, Any], task: Task, majority: float | None) -> list[str]:
    """Every flag of one run (a results.json run), given its task's majority-class main metric, if any."""
    flags = (
        did_not_learn(run.get("loss_curve") or []),
        one_class(run.get("predicted"), task),
        at_or_below_majority(run["metrics"].get(task.main_metric), majority, task),
    )
    return [flag for flag in flags if flag]
