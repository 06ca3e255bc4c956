"""Each model row's difference from the baseline row with its interval (`bootstrap.difference_interval`): per
task, on the task's main metric, and over the averaged layout's columns (Table 1's Avg.). What results.json's
`differences` holds and the report's difference tables show beside each number."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from vlkd.evaluation.bootstrap import Outcomes, difference_interval
from vlkd.evaluation.layouts import LAYOUTS

AVERAGE = "average"
"""The key of the difference over the averaged layout's columns."""
_AVERAGED = next(layout for layout in LAYOUTS if layout.average)


def differences(runs: Sequence[Mapping[str, Any]], baseline: str | None) -> dict[str, dict[str, dict[str, Any]]]:
    """row -> task (or `AVERAGE`) -> {"difference", "low", "high", "within_noise", "over_seeds"}, for every row but the
    baseline and every task both rows kept per-example outcomes of (results.json runs' `correct`) on the same
    dev set; the average only where the row has every column of the averaged layout that some row has."""
    if baseline is None:
        return {}
    outcomes: dict[str, dict[str, list[str | None]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        outcomes[run["row"]][run["task"]].append(run.get("correct"))
    averaged = [c.task for c in _AVERAGED.columns if any(c.task in tasks for tasks in outcomes.values())]
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for row in outcomes:
        if row == baseline:
            continue
        pairs = {task: _pair(outcomes[row], outcomes[baseline], task) for task in outcomes[row]}
        entries = {task: _entry([pair]) for task, pair in pairs.items() if pair}
        if averaged and all(pairs.get(task) for task in averaged):
            entries[AVERAGE] = _entry([pairs[task] for task in averaged]) | {"tasks": averaged}
        if entries:
            table[row] = entries
    return table


def _pair(
    model: Mapping[str, list[str | None]], baseline: Mapping[str, list[str | None]], task: str
) -> tuple[Outcomes, Outcomes] | None:
    runs = [*model.get(task, []), *baseline.get(task, [])]
    if not model.get(task) or not baseline.get(task) or None in runs or len({len(r) for r in runs}) != 1:
        return None
    return model[task], baseline[task]


def _entry(pairs: list[tuple[Outcomes, Outcomes]]) -> dict[str, Any]:
    interval = difference_interval(pairs)
    return {
        "difference": round(interval.difference, 4) + 0.0,  # + 0.0: never -0.0
        "low": round(interval.low, 4) + 0.0,
        "high": round(interval.high, 4) + 0.0,
        "within_noise": interval.within_noise,
        "over_seeds": interval.over_seeds,
    }
