"""The paper's table layouts: "Table 1" holds the seven primary tasks (SST-2, QNLI, QQP, MNLI-m accuracy, SQuAD
v1.1 / v2.0 exact match, SWAG) and their average; "Table 7" the GLUE diagnostic's R3 per category, PIQA and
TRACIE. The report draws them; the differences from the baseline average over Table 1's columns as it does."""

from __future__ import annotations

from dataclasses import dataclass

from vlkd.evaluation.tasks import DIAGNOSTIC_CATEGORIES, TASKS, category_key


@dataclass(frozen=True)
class Column:
    task: str
    metric: str
    header: str


@dataclass(frozen=True)
class Layout:
    title: str
    columns: tuple[Column, ...]
    average: bool


def main_column(task: str) -> Column:
    """The column of a task's main metric."""
    definition = TASKS[task]
    return Column(task, definition.main_metric, f"{definition.title} {definition.metric_label}")


_SHORT = dict(zip(DIAGNOSTIC_CATEGORIES, ("Lexicon", "Predicate", "Logic", "Knowledge"), strict=True))
LAYOUTS = (
    Layout(
        "Downstream tasks (Table 1)",
        tuple(main_column(t) for t in ("sst2", "qnli", "qqp", "mnli", "squad_v1", "squad_v2", "swag")),
        average=True,
    ),
    Layout(
        "Knowledge and reasoning (Table 7)",
        (
            *(Column("glue_diagnostic", category_key(c), f"Diag. {_SHORT[c]} R3") for c in DIAGNOSTIC_CATEGORIES),
            main_column("piqa"),
            main_column("tracie"),
        ),
        average=False,
    ),
)
