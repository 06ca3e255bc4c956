"""Flags on runs whose number alone would mislead: each rule on constructed runs, then where the report shows
them (beside the number in the terminal table, report.md and results.json, and in the notes)."""

from __future__ import annotations

import pytest

from vlkd.evaluation.flags import at_or_below_majority, did_not_learn, one_class
from vlkd.evaluation.report import render_markdown, render_table, report_notes
from vlkd.evaluation.results import RunRecord, build_results
from vlkd.evaluation.scoring import answer_counts
from vlkd.evaluation.table_text import parse_tables
from vlkd.evaluation.tasks import get_task

FLAT = [[step, 0.695 + (0.004 if step % 2 else -0.004)] for step in range(1, 41)]
FALLING = [[step, 0.7 * 0.97**step] for step in range(1, 41)]
SST2, SWAG, SQUAD2 = get_task("sst2"), get_task("swag"), get_task("squad_v2")
SAME_SPAN = "answers one and the same span for 93% of dev"


def test_a_flat_loss_did_not_learn() -> None:
    assert did_not_learn(FLAT) == "did not learn: loss 0.695 -> 0.695"


def test_a_falling_loss_learnt() -> None:
    assert did_not_learn(FALLING) is None


def test_one_low_batch_does_not_count_as_learning() -> None:
    """A single point at 80% of the start: the last tenth's mean stays above 90% of the first tenth's."""
    dipped = [*FLAT[:-1], [40, 0.56]]
    assert did_not_learn(dipped).startswith("did not learn: loss 0.695 -> 0.6")


def test_a_loss_that_fell_and_came_back_did_not_learn() -> None:
    assert did_not_learn([*FALLING[:20], *FLAT[20:]]) is not None


def test_too_short_a_curve_says_nothing() -> None:
    assert did_not_learn([[1, 0.7]]) is None and did_not_learn([]) is None


@pytest.mark.parametrize(
    ("predicted", "task", "flag"),
    [
        ({"0": 3, "1": 97}, SST2, "predicts '1' for 97% of dev"),
        ({"0": 10, "1": 90}, SST2, "predicts '1' for 90% of dev"),
        ({"0": 11, "1": 89}, SST2, None),
        ({"0": 95, "1": 2, "2": 2, "3": 1}, SWAG, "predicts choice 0 for 95% of dev"),
        (None, get_task("squad_v1"), None),
        ({"no answer": 95, "most frequent span": 3, "other spans": 2}, SQUAD2, "abstains on 95% of dev"),
        ({"no answer": 5, "most frequent span": 93, "other spans": 2}, SQUAD2, SAME_SPAN),
        ({"no answer": 50, "most frequent span": 1, "other spans": 49}, SQUAD2, None),
        ({"no answer": 2, "most frequent span": 1, "other spans": 97}, SQUAD2, None),  # many spans: no one answer
    ],
)
def test_one_class_for_ninety_percent_of_dev(predicted: dict | None, task, flag: str | None) -> None:
    assert one_class(predicted, task) == flag


@pytest.mark.parametrize(
    ("value", "majority", "flag"),
    [
        (50.0, 50.0, "at or below the majority class: 50.0 <= 50.0 accuracy"),
        (48.0, 50.0, "at or below the majority class: 48.0 <= 50.0 accuracy"),
        (50.5, 50.0, None),
        (50.0, None, None),
    ],
)
def test_at_or_below_the_majority_class(value: float, majority: float | None, flag: str | None) -> None:
    assert at_or_below_majority(value, majority, SST2) == flag


def _flagged_results() -> dict:
    """Row A learns on both seeds; row B's seed 1 learns nothing and answers '1' for all of dev, at the majority."""
    learnt = {"loss_curve": FALLING, "predicted": {"0": 50, "1": 50}}
    records = [
        RunRecord("A", "student/a:v1", "sst2", 0, {"accuracy": 80.0}, **learnt),
        RunRecord("A", "student/a:v1", "sst2", 1, {"accuracy": 82.0}, **learnt),
        RunRecord("B", "student/b:v1", "sst2", 0, {"accuracy": 70.0}, **learnt),
        RunRecord("B", "student/b:v1", "sst2", 1, {"accuracy": 50.0}, loss_curve=FLAT, predicted={"0": 0, "1": 100}),
    ]
    references = {"sst2": {"majority": {"metrics": {"accuracy": 50.0}, "correct": None, "predicted": None}}}
    return build_results(records, "A", references=references)


def test_results_json_keeps_the_flags_beside_the_main_metric() -> None:
    summary = _flagged_results()["summary"]
    assert summary["A"]["sst2"]["accuracy"]["flags"] == []
    assert summary["B"]["sst2"]["accuracy"]["flags"] == [
        {
            "seed": 1,
            "flags": [
                "did not learn: loss 0.695 -> 0.695",
                "predicts '1' for 100% of dev",
                "at or below the majority class: 50.0 <= 50.0 accuracy",
            ],
        }
    ]


def test_the_tables_mark_a_flagged_cell() -> None:
    results = _flagged_results()
    rows = parse_tables(render_markdown(results))[0]
    assert rows[1][1] == "81.0 ± 1.4" and rows[2][1] == "60.0 ± 14.1 !"
    terminal = render_table(results).splitlines()
    assert next(line for line in terminal if line.startswith("B ")).split()[1:5] == ["60.0", "±", "14.1", "!"]


def test_the_notes_say_which_run_and_why_with_the_thresholds() -> None:
    results = _flagged_results()
    notes = report_notes(results)
    assert notes[0].startswith("! Flagged runs (did not learn: training loss over the last 10% of the run above 90%")
    flagged = (
        "! B, SST-2, seed 1: did not learn: loss 0.695 -> 0.695; predicts '1' for 100% of dev; "
        "at or below the majority class: 50.0 <= 50.0 accuracy"
    )
    assert notes[1:] == [flagged]
    assert f"- {flagged}" in render_markdown(results).split("## Notes")[1]


def test_a_qa_run_that_abstains_on_nearly_all_of_dev_is_flagged_in_the_report() -> None:
    abstains = answer_counts([""] * 46 + ["Paris", "Paris", "1912", "a cat"])
    records = [
        RunRecord("A", "student/a:v1", "squad_v2", 0, {"exact_match": 60.0}, predicted=answer_counts(["x", "y", ""])),
        RunRecord("B", "student/b:v1", "squad_v2", 0, {"exact_match": 50.0}, predicted=abstains),
    ]
    results = build_results(records, "A")
    assert results["summary"]["B"]["squad_v2"]["exact_match"]["flags"] == [
        {"seed": 0, "flags": ["abstains on 92% of dev"]}
    ]
    assert parse_tables(render_markdown(results))[0][2] == ["B", "50.0 !", "50.0"]
    assert "! B, SQuAD v2.0, seed 0: abstains on 92% of dev" in report_notes(results)


def test_no_flags_no_flag_notes() -> None:
    results = _flagged_results()
    results["summary"]["B"]["sst2"]["accuracy"]["flags"] = []
    assert report_notes(results) == []
    assert "## Notes" not in render_markdown(results)
