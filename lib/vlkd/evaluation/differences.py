"""Each model row's difference from the baseline row with its interval (`bootstrap.difference_interval`): per
task, on the task's main metric, and over the averaged layout's columns (Table 1's Avg.). What results.json's
`differences` holds and the report's difference tables show beside each number."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from vlkd.evaluation.bootstrap import Clusters, Outcomes, cluster_count, difference_interval
from vlkd.evaluation.layouts import LAYOUTS

AVERAGE = "average"
"""The key of the difference over the averaged layout's columns."""
_AVERAGED = next(layout for layout in LAYOUTS if layout.average)


def differences(
    runs: Sequence[Mapping[str, Any]], baseline: str | None, clusters: Mapping[str, Clusters] | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """row -> task (or `AVERAGE`) -> {"difference", "low", "high", "within_noise", "over_seeds"}, for every row but the
    baseline and every task both rows kept per-example outcomes of (results.json runs' `correct`) on the same
    dev set; the average only where the row has every column of the averaged layout that some row has.
    `clusters`: task -> its dev examples' clusters (results.json's `clusters`); a task absent has independent
    examples."""
    if baseline is None:
        return {}
    clusters = clusters or {}
    outcomes: dict[str, dict[str, list[str | None]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        outcomes[run["row"]][run["task"]].append(run.get("correct"))
    averaged = [c.task for c in _AVERAGED.columns if any(c.task in tasks for tasks in outcomes.values())]
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for row in outcomes:
        if row == baseline:
            continue
        pairs = {
            task: pair
            for task in outcomes[row]
            if (pair := _pair(outcomes[row], outcomes[baseline], task, clusters.get(task)))
        }
        entries = {task: _entry(pairs, clusters, [task]) for task in pairs}
        if averaged and all(task in pairs for task in averaged):
            entries[AVERAGE] = _entry(pairs, clusters, averaged) | {"tasks": averaged}
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


def _entry(
    pairs: Mapping[str, tuple[Outcomes, Outcomes]], clusters: Mapping[str, Clusters], tasks: Sequence[str]
) -> dict[str, Any]:
    """The difference over `tasks` (one, or the averaged layout's) with its interval, as results.json keeps it."""
    interval = difference_interval([pairs[task] for task in tasks], [clusters.get(task) for task in tasks])
    return {
        "difference": round(interval.difference, 4) + 0.0,  # + 0.0: never -0.0
        "low": round(interval.low, 4) + 0.0,
        "high": round(interval.high, 4) + 0.0,
        "within_noise": interval.within_noise,
        "over_seeds": interval.over_seeds,
    }
