"""A student and its baseline compare at equal training: the report says at which step each model is published,
and says so under a table where a row's model and the baseline's were published at different steps."""

from __future__ import annotations

from datetime import UTC, datetime

from vlkd.artifacts import Manifest
from vlkd.evaluation.report import render_markdown, render_table
from vlkd.evaluation.results import RunRecord, build_results
from vlkd.evaluation.table_text import parse_tables
from vlkd.jobs.evaluate import published_step

UNEQUAL = "tiny-nst-crd is published at step 100, its baseline tiny-baseline at step 300: not equal training"


def _lineage(step: int) -> dict:
    return {"teacher": None, "kd": None, "corpus": "corpus/tiny:v1", "published_step": step, "steps": 300}


def _results(student_step: int, baseline_step: int = 300) -> dict:
    records = [
        RunRecord("tiny-nst-crd", "student/tiny-nst-crd:v1", "sst2", 0, {"accuracy": 90.0}, _lineage(student_step)),
        RunRecord("tiny-baseline", "student/tiny-baseline:v1", "sst2", 0, {"accuracy": 88.0}, _lineage(baseline_step)),
    ]
    return build_results(records, "tiny-baseline")


def _student(metrics: dict, train: dict) -> Manifest:
    spec = {"stage": "distill", "name": "s", "train": train}
    return Manifest(kind="student", name="s", version=1, created_at=datetime.now(UTC), vlkd_version="0",
                    spec=spec, metrics=metrics)  # fmt: skip


def test_a_row_published_at_another_step_than_the_baseline_is_named_under_the_table() -> None:
    markdown = render_markdown(_results(100))
    table = markdown.split("## Downstream tasks (Table 1)\n\n", 1)[1]
    assert table.split("\n\n")[1] == UNEQUAL
    assert f"{UNEQUAL}\n\nDifference from **tiny-baseline**" in markdown
    assert UNEQUAL in render_table(_results(100)).split("Difference from")[0]


def test_rows_published_at_the_baseline_step_get_no_line() -> None:
    assert "not equal training" not in render_markdown(_results(300))
    assert "not equal training" not in render_table(_results(300))


def test_each_models_published_step_is_in_its_lineage_line() -> None:
    markdown = render_markdown(_results(100))
    assert "- **tiny-nst-crd**: `student/tiny-nst-crd:v1`; teacher: none; kd: none; corpus: corpus/tiny:v1; " \
        "published weights: step 100 of 300" in markdown  # fmt: skip
    assert len(parse_tables(markdown)[0]) == 3  # the line sits under the table, not in it


def test_the_published_step_is_the_one_the_student_recorded() -> None:
    assert published_step(_student({"best_step": 100, "steps": 300, "published_step": 300}, {"patience": 5})) == 300


def test_an_older_student_published_its_best_step_when_its_spec_stopped_on_validation() -> None:
    assert published_step(_student({"best_step": 100, "steps": 300}, {"patience": 5})) == 100
    assert published_step(_student({"best_step": 100, "steps": 300}, {"patience": None})) == 300
