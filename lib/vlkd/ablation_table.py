"""An ablation table of a pipeline (Tables 2-7 of the paper): which stages make each cell, and how its row reads.

The same description serves the pipeline's progress (`vlkd pipeline status`: cells done per axis value, each
cell's state, from its stages' states) and the report (`table_results`: the eval results cut down to the table's
rows and relabelled, which the report's own table functions lay out as the paper does: the baseline first, then a
row per cell, a column per task). A table with two axes is laid out as the paper's Table 6: a row per cell, the
teacher's axis outermost, so the cells sharing a teacher form a block and the label names both values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DONE = ("skipped", "succeeded")


@dataclass(frozen=True)
class TableCell:
    label: str
    """its row label in this table: the values of the table's axes, in the paper's words (`+ KD-NST (Video)`)"""
    row: str
    """its student's row in the eval results (one row per student, however many tables show it)"""
    values: dict[str, str]
    """axis (`teacher.visual_input`) -> the value's words (`Video`)"""
    stages: tuple[str, ...]
    """the keys of the pipeline stages that make it: its teacher's, its student's"""


@dataclass(frozen=True)
class AblationTable:
    name: str
    title: str
    axes: tuple[str, ...]
    baseline: str | None
    """the eval row every table starts with (the text-only student), if the pipeline evaluates one and the table
    does not list it among its rows"""
    cells: tuple[TableCell, ...]
    baseline_label: str | None = None
    """the baseline's label in the table, as the paper's (`BERT6L/512H`); default: its eval row"""
    tasks: tuple[str, ...] | None = None
    """the tasks whose columns the table shows; None: all"""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AblationTable:
        cells = tuple(TableCell(**{**c, "stages": tuple(c["stages"])}) for c in data["cells"])
        tasks = tuple(data["tasks"]) if data.get("tasks") is not None else None
        return cls(
            data["name"], data["title"], tuple(data["axes"]), data["baseline"], cells, data.get("baseline_label"), tasks
        )

    def rows(self) -> list[tuple[str, str]]:
        """(eval row, label in this table), the baseline first unless the table lists it."""
        listed = self.baseline is None or self.baseline in {cell.row for cell in self.cells}
        first = [] if listed else [(self.baseline, self.baseline_label or self.baseline)]
        return first + [(cell.row, cell.label) for cell in self.cells]


def cell_state(cell: TableCell, states: Mapping[str, str]) -> str:
    """done (every stage published), failed, running (one of its stages runs) or pending; `states`: stage key ->
    state, as `vlkd.pipeline.StageRun` keeps it."""
    mine = [states.get(key, "pending") for key in cell.stages]
    if all(state in DONE for state in mine):
        return "done"
    return next((state for state in ("failed", "running") if state in mine), "pending")


def axis_progress(table: AblationTable, states: Mapping[str, str]) -> list[tuple[str, list[tuple[str, int, int]]]]:
    """Per axis, per value (in the table's order): (value, cells done, cells)."""
    progress = []
    for axis in table.axes:
        counts: dict[str, list[int]] = {}
        for cell in table.cells:
            count = counts.setdefault(cell.values[axis], [0, 0])
            count[0] += cell_state(cell, states) == "done"
            count[1] += 1
        progress.append((axis, [(value, done, total) for value, (done, total) in counts.items()]))
    return progress


def progress_lines(table: AblationTable, states: Mapping[str, str]) -> list[str]:
    """The table's progress as `vlkd pipeline status` prints it: cells done, then per axis the cells done of each
    value, then each cell's state and the stage it is at (its student's, once done)."""
    cells = [(cell, cell_state(cell, states)) for cell in table.cells]
    done = sum(state == "done" for _, state in cells)
    lines = [f"ablation {table.name}, {table.title}: {done}/{len(cells)} cells done"]
    for axis, values in axis_progress(table, states):
        lines.append(f"  {axis}: " + ", ".join(f"{value} {d}/{n}" for value, d, n in values))
    width = max(len(cell.label) for cell in table.cells)
    for cell, state in cells:
        at = next((key for key in cell.stages if states.get(key, "pending") not in DONE), cell.stages[-1])
        lines.append(f"  {cell.label:<{width}}  {state:<8} {at}")
    return lines


# The sections of results.json keyed by row (`vlkd.evaluation.results`); differences stay valid for a table's
# rows, as every table keeps the baseline they were taken from.
BY_ROW = ("summary", "differences")


def table_results(results: Mapping[str, Any], rows: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The eval results (`results.json`) of a table's rows only, `rows` being (eval row, label in the table) as
    `AblationTable.rows` gives them: each row renamed to its label, in the table's order, a results document the
    report lays out like any other. Rows the results lack are left out."""
    models = {m["row"]: m for m in results["models"]}
    labels = {row: label for row, label in rows if row in models}
    by_row = {
        section: {labels[row]: values for row, values in results[section].items() if row in labels}
        for section in BY_ROW
        if section in results
    }
    return {
        **results,
        **by_row,
        "baseline": labels.get(results.get("baseline")),
        "models": [{**models[row], "row": label} for row, label in labels.items()],
        "runs": [{**run, "row": labels[run["row"]]} for run in results["runs"] if run["row"] in labels],
    }
