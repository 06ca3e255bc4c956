"""Each model row's difference from the baseline row with its interval (`bootstrap.difference_interval`): per
task on its main metric, per metric that is a mean over some of a task's dev examples (the GLUE diagnostic's
per-category accuracies), per correlation through its pseudo-values (the diagnostic's R3s, `correlation`), and over
the averaged layout's columns (Table 1's Avg.). What results.json's `differences` holds and the report's difference
tables show beside each number."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlkd.evaluation.bootstrap import (
    Clusters,
    Outcomes,
    cluster_count,
    cluster_labels,
    difference_interval,
    digits,
)
from vlkd.evaluation.correlation import averaged_r3_pseudo_values, r3_pseudo_values
from vlkd.evaluation.layouts import LAYOUTS
from vlkd.evaluation.tasks import TASKS

AVERAGE = "average"
"""The key of the difference over the averaged layout's columns."""
_AVERAGED = next(layout for layout in LAYOUTS if layout.average)
_CORRELATION_BOUND = 2.0
"""The largest difference of two correlations, as a fraction."""


@dataclass(frozen=True)
class Compared:
    """What one difference compares: (the model row's runs, the baseline row's) on the examples its metric is a
    mean over, those examples' clusters, and the largest difference the metric allows (a fraction)."""

    runs: tuple[Outcomes, Outcomes]
    clusters: Clusters | None
    bound: float = 1.0


def difference_key(task: str, metric: str) -> str:
    """Where `differences` keeps a metric's difference: under the task for its main metric, `task/metric` for
    another (`glue_diagnostic/acc_logic`)."""
    return task if metric == TASKS[task].main_metric else f"{task}/{metric}"


def differences(
    runs: Sequence[Mapping[str, Any]],
    baseline: str | None,
    clusters: Mapping[str, Clusters] | None = None,
    subsets: Mapping[str, Mapping[str, str]] | None = None,
    gold: Mapping[str, str] | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """row -> `difference_key` (or `AVERAGE`) -> {"difference", "low", "high", "within_noise", "over_seeds"}, for
    every row but the baseline and every metric that is a mean over (some of) a task's dev examples, where both
    rows kept per-example outcomes (results.json runs' `correct`) on the same dev set, and every correlation, where
    both kept their predicted labels (runs' `labels`) on the dev set `gold` labels; the average only where the row
    has every column of the averaged layout that some row has. `clusters`: task -> its dev examples' clusters
    (results.json's `clusters`); a task absent has independent examples. `subsets`: task -> metric -> which dev
    examples it is a mean over (results.json's `subsets`). `gold`: task -> its dev examples' gold labels
    (results.json's `gold`)."""
    if baseline is None:
        return {}
    clusters, subsets, gold = clusters or {}, subsets or {}, gold or {}
    outcomes: dict[str, dict[str, list[str | None]]] = defaultdict(lambda: defaultdict(list))
    labels: dict[str, dict[str, list[str | None]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        outcomes[run["row"]][run["task"]].append(run.get("correct"))
        labels[run["row"]][run["task"]].append(run.get("labels"))
    averaged = [c.task for c in _AVERAGED.columns if any(c.task in tasks for tasks in outcomes.values())]
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for row in outcomes:
        if row == baseline:
            continue
        compared: dict[str, Compared] = {}
        for task in outcomes[row]:
            if pair := _pair(outcomes[row], outcomes[baseline], task, clusters.get(task)):
                compared |= _metrics(task, pair, clusters.get(task), subsets.get(task, {}))
            predicted = _pair(labels[row], labels[baseline], task, clusters.get(task))
            if predicted and len(gold.get(task, "")) == len(predicted[0][0]):
                compared |= _correlations(task, predicted, gold[task], clusters.get(task), subsets.get(task, {}))
        entries = {key: _entry([compared[key]]) for key in compared}
        if averaged and all(task in compared for task in averaged):
            entries[AVERAGE] = _entry([compared[task] for task in averaged]) | {"tasks": averaged}
        if entries:
            table[row] = entries
    return table


def _pair(
    model: Mapping[str, list[str | None]],
    baseline: Mapping[str, list[str | None]],
    task: str,
    clusters: Clusters | None,
) -> tuple[Outcomes, Outcomes] | None:
    """Both rows' runs on `task`, where all kept outcomes on one dev set (the one `clusters` numbers, if any)."""
    runs = [*model.get(task, []), *baseline.get(task, [])]
    if not model.get(task) or not baseline.get(task) or None in runs or len({len(r) for r in runs}) != 1:
        return None
    if clusters is not None and cluster_count(clusters) != len(runs[0]):
        return None
    return model[task], baseline[task]


def _metrics(
    task: str, pair: tuple[Outcomes, Outcomes], clusters: Clusters | None, subsets: Mapping[str, str]
) -> dict[str, Compared]:
    """`difference_key` -> what its difference compares: the task's main metric where it is a mean over the dev
    examples, and each metric that is a mean over some of them (on the dev set the runs scored)."""
    compared = {task: Compared(pair, clusters)} if TASKS[task].main_is_mean else {}
    examples = len(pair[0][0])
    for metric, members in subsets.items():
        chosen = [i for i, member in enumerate(members) if member == "1"]
        if len(members) == examples and chosen:
            model, base = (["".join(run[i] for i in chosen) for run in runs] for runs in pair)
            compared[difference_key(task, metric)] = Compared((model, base), _subset_clusters(clusters, chosen))
    return compared


def _correlations(
    task: str, pair: tuple[Outcomes, Outcomes], gold: str, clusters: Clusters | None, subsets: Mapping[str, str]
) -> dict[str, Compared]:
    """`difference_key` -> what its difference compares, for each correlation of `task` (`Task.correlations`) on
    the examples it is over, and for a main metric that averages those over subsets (the diagnostic's
    `r3_average`, as `task_scores.score_diagnostic` defines it): the runs' pseudo-values (`correlation`), given the
    rows' predicted labels (`pair`) and the dev examples' `gold` ones."""
    definition = TASKS[task]
    classes, truth = len(definition.labels), digits(gold)
    model, base = ([digits(run) for run in runs] for runs in pair)
    masks: dict[str, np.ndarray] = {}
    for metric, subset in definition.correlations.items():
        members = "1" * len(gold) if subset is None else subsets.get(subset, "")
        if len(members) == len(gold) and "1" in members:
            masks[metric] = digits(members).astype(bool)

    def compare(pseudo_values: Callable[[np.ndarray], np.ndarray], mask: np.ndarray) -> Compared:
        runs = tuple(np.array([pseudo_values(run) for run in rows]) for rows in (model, base))
        return Compared((runs[0], runs[1]), _subset_clusters(clusters, np.flatnonzero(mask)), _CORRELATION_BOUND)

    compared = {
        difference_key(task, metric): compare(lambda run, m=mask: r3_pseudo_values(run[m], truth[m], classes), mask)
        for metric, mask in masks.items()
    }
    if definition.main_is_mean:
        return compared
    averaged = [mask for metric, mask in masks.items() if definition.correlations[metric] is not None]
    overall = [metric for metric in masks if definition.correlations[metric] is None]
    if averaged:
        everyone = np.ones(len(truth), dtype=bool)
        compared[task] = compare(lambda run: averaged_r3_pseudo_values(run, truth, classes, averaged), everyone)
    elif overall:  # no example in any subset: the main metric is the correlation over all of them
        compared[task] = compared[difference_key(task, overall[0])]
    return compared


def _subset_clusters(clusters: Clusters | None, chosen: Iterable[int]) -> Clusters | None:
    """The clusters of the `chosen` examples, numbered afresh: a metric over some of the dev examples draws its own
    examples' clusters whole (None where every example is its own)."""
    if clusters is None:
        return None
    cluster_of = clusters.split()
    return cluster_labels([cluster_of[i] for i in chosen])


def _entry(compared: Sequence[Compared]) -> dict[str, Any]:
    """The difference over one or more compared metrics (the averaged layout's) with its interval, as results.json
    keeps it."""
    interval = difference_interval(
        [c.runs for c in compared], [c.clusters for c in compared], max(c.bound for c in compared)
    )
    return {
        "difference": round(interval.difference, 4) + 0.0,  # + 0.0: never -0.0
        "low": round(interval.low, 4) + 0.0,
        "high": round(interval.high, 4) + 0.0,
        "within_noise": interval.within_noise,
        "over_seeds": interval.over_seeds,
    }
