"""Results aggregation and the report: means and spreads over seeds, differences from the baseline, the
Markdown tables, the charts, results.json, and merging several results."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from vlkd.errors import DataError
from vlkd.evaluation.report import render_markdown, render_table, write_report
from vlkd.evaluation.results import RunRecord, build_results, load_results, merge
from vlkd.evaluation.table_text import parse_tables
from vlkd.evaluation.tasks import TASKS

BASE = {"teacher": None, "kd_objectives": [], "corpus": "corpus/wiki103:v1"}
NST = {"teacher": "teacher/howto:v2", "kd_objectives": ["nst", "crd"], "corpus": "corpus/wiki103:v1"}
NOTE = "encoders randomly initialised / synthetic data"


def _runs(row: str, ref: str, lineage: dict, scores: dict[str, list[dict[str, float]]]) -> list[RunRecord]:
    return [
        RunRecord(row, ref, task, seed, metrics, lineage, examples=40, seconds=1.5)
        for task, per_seed in scores.items()
        for seed, metrics in enumerate(per_seed)
    ]


def _results(baseline: str | None = "BERT", costs: dict | None = None) -> dict:
    records = _runs(
        "BERT",
        "student/base:v1",
        BASE,
        {
            "sst2": [{"accuracy": 80.0}, {"accuracy": 82.0}, {"accuracy": 84.0}],
            "mnli": [{"matched_accuracy": 70.0, "mismatched_accuracy": 71.0}] * 3,
            "glue_diagnostic": [{"r3": 20.0, "r3_logic": 10.0, "r3_knowledge": 40.0, "r3_average": 25.0}] * 3,
        },
    )
    records += _runs(
        "+ KD-NST",
        "student/nst:v3",
        NST,
        {
            "sst2": [{"accuracy": 83.0}, {"accuracy": 83.5}, {"accuracy": 85.5}],
            "mnli": [{"matched_accuracy": 71.0, "mismatched_accuracy": 72.0}] * 3,
            "glue_diagnostic": [{"r3": 22.0, "r3_logic": 9.5, "r3_knowledge": 44.6, "r3_average": 27.0}] * 3,
        },
    )
    retrieval = {"teacher/howto:v2": {"r1": 12.5, "r5": 40.0, "r10": 55.0, "median_rank": 9.0, "queries": 64.0}}
    return build_results(records, baseline, retrieval, [NOTE], costs)


def test_summary_is_mean_sample_std_and_median_over_seeds() -> None:
    summary = _results()["summary"]
    assert summary["BERT"]["sst2"]["accuracy"] == {"mean": 82.0, "std": 2.0, "median": 82.0, "seeds": 3, "flags": []}
    assert summary["+ KD-NST"]["sst2"]["accuracy"]["median"] == 83.5  # 83.0, 83.5, 85.5: mean 84.0
    # Flags belong to a task's main metric only.
    assert summary["+ KD-NST"]["mnli"]["mismatched_accuracy"] == {"mean": 72.0, "std": 0.0, "median": 72.0, "seeds": 3}


def test_results_list_models_tasks_and_every_run() -> None:
    results = _results()
    assert [m["row"] for m in results["models"]] == ["BERT", "+ KD-NST"]
    assert results["models"][1] == {"row": "+ KD-NST", "ref": "student/nst:v3", "lineage": NST, "cost": {}}
    assert results["tasks"] == ["sst2", "mnli", "glue_diagnostic"]  # the registry's order
    assert len(results["runs"]) == 18
    assert results["runs"][0] == {
        "row": "BERT",
        "ref": "student/base:v1",
        "task": "sst2",
        "seed": 0,
        "metrics": {"accuracy": 80.0},
        "lineage": BASE,
        "examples": 40,
        "seconds": 1.5,
        "worker": None,
        "loss_curve": [],
        "dev_curve": [],
        "predicted": None,
        "correct": None,
        "labels": None,
    }


def test_table1_layout_with_average_and_spread() -> None:
    tables = parse_tables(render_markdown(_results()))
    header, base, nst = tables[0]
    assert header == ["Model", "SST-2 Acc", "MNLI Acc", "Avg. (2 of 7)"]
    assert base == ["BERT", "82.0 ± 2.0 (median 82.0)", "70.0 ± 0.0 (median 70.0)", "76.0"]
    assert nst == ["+ KD-NST", "84.0 ± 1.3 (median 83.5)", "71.0 ± 0.0 (median 71.0)", "77.5"]


def test_differences_from_the_baseline() -> None:
    tables = parse_tables(render_markdown(_results()))
    assert tables[1] == [["Model", "SST-2 Acc", "MNLI Acc", "Avg. (2 of 7)"], ["+ KD-NST", "+2.0", "+1.0", "+1.5"]]
    # Table 7 layout: only the diagnostic categories that were measured; -0.5 and +4.6 as in the paper's style.
    assert tables[3] == [["Model", "Diag. Logic R3", "Diag. Knowledge R3"], ["+ KD-NST", "-0.5", "+4.6"]]


def test_no_difference_table_without_a_baseline() -> None:
    markdown = render_markdown(_results(baseline=None))
    assert "Difference from" not in markdown
    assert len(parse_tables(markdown)[0]) == 3


def test_one_seed_shows_no_spread_and_a_missing_task_no_average() -> None:
    records = _runs("A", "student/a:v1", {}, {"sst2": [{"accuracy": 90.0}], "qnli": [{"accuracy": 80.0}]})
    records += _runs("B", "student/b:v1", {}, {"sst2": [{"accuracy": 91.0}]})
    header, a, b = parse_tables(render_markdown(build_results(records, "A")))[0]
    assert header == ["Model", "SST-2 Acc", "QNLI Acc", "Avg. (2 of 7)"]
    assert a == ["A", "90.0", "80.0", "85.0"]
    assert b == ["B", "91.0", "n/a", "n/a"]


def test_the_average_of_every_table1_task_is_the_papers_avg_and_a_partial_one_says_how_many_it_covers() -> None:
    seven = {"sst2": 90.0, "qnli": 80.0, "qqp": 70.0, "mnli": 60.0, "squad_v1": 50.0, "squad_v2": 40.0, "swag": 30.0}
    records = [
        RunRecord("A", "student/a:v1", task, 0, {TASKS[task].main_metric: value}) for task, value in seven.items()
    ]
    header, row = parse_tables(render_markdown(build_results(records)))[0]
    assert header[-1] == "Avg." and row[-1] == "60.0"
    header, row = parse_tables(render_markdown(build_results(records[:2])))[0]
    assert header[-1] == "Avg. (2 of 7)" and row[-1] == "85.0"


def test_every_markdown_table_parses_with_equal_column_counts() -> None:
    tables = parse_tables(render_markdown(_results()))
    # Table 1, its differences, Table 7, its differences, one per task with all metrics, retrieval.
    assert len(tables) == 4 + 3 + 1
    assert all(len(row) == len(table[0]) for table in tables for row in table)


def test_report_names_each_rows_artifact_and_lineage_and_the_notes() -> None:
    markdown = render_markdown(_results())
    assert "- **BERT**: `student/base:v1`; teacher: none; kd objectives: none; corpus: corpus/wiki103:v1" in markdown
    assert "- **+ KD-NST**: `student/nst:v3`; teacher: teacher/howto:v2; kd objectives: nst + crd" in markdown
    assert markdown.rstrip().endswith(f"## Notes\n\n- {NOTE}")


def test_retrieval_table() -> None:
    retrieval = parse_tables(render_markdown(_results()))[-1]
    assert retrieval == [
        ["Teacher", "R@1", "R@5", "R@10", "Median rank"],
        ["teacher/howto:v2", "12.5", "40.0", "55.0", "9.0"],
        ["chance (64 queries)", "1.6", "7.8", "15.6", "32.5"],
    ]


def test_the_cost_of_each_model_is_a_table_and_unrecorded_costs_are_dashes() -> None:
    cost = {
        "wall_seconds": 5400.0,
        "cpu_hours": 12.0,
        "gpu_hours": 6.0,
        "teacher_cpu_hours": 40.0,
        "teacher_gpu_hours": 20,
    }
    results = _results(costs={"+ KD-NST": cost})
    assert results["models"][1]["cost"] == cost
    markdown = render_markdown(results)
    assert parse_tables(markdown.split("## Cost", 1)[1])[0] == [
        ["Model", "Wall s", "CPU-h", "GPU-h", "Teacher CPU-h", "Teacher GPU-h"],
        ["BERT", "-", "-", "-", "-", "-"],
        ["+ KD-NST", "5400", "12", "6", "40", "20"],
    ]
    assert "## Cost" not in render_markdown(_results())  # nothing recorded, no table
    assert render_table(results).split("Cost\n", 1)[1].splitlines()[2].split() == [
        "+",
        "KD-NST",
        "5400",
        "12",
        "6",
        "40",
        "20",
    ]


def test_a_retrieval_only_report() -> None:
    results = build_results([], retrieval={"teacher/t:v1": {"r1": 1.0, "r5": 5.0, "r10": 10.0, "median_rank": 50.0}})
    markdown = render_markdown(results)
    assert "## All metrics" not in markdown and "## Models" not in markdown
    assert parse_tables(markdown) == [
        [["Teacher", "R@1", "R@5", "R@10", "Median rank"], ["teacher/t:v1", "1.0", "5.0", "10.0", "50.0"]]
    ]
    assert render_table(results).startswith("Teacher text-to-video retrieval")


def test_terminal_table() -> None:
    text = render_table(_results())
    assert "Downstream tasks (Table 1)" in text and "Difference from BERT" in text
    lines = text.splitlines()
    assert lines[1:4] == [
        "Model                    SST-2 Acc                  MNLI Acc  Avg. (2 of 7)",
        "BERT      82.0 ± 2.0 (median 82.0)  70.0 ± 0.0 (median 70.0)           76.0",
        "+ KD-NST  84.0 ± 1.3 (median 83.5)  71.0 ± 0.0 (median 71.0)           77.5",
    ]
    assert "teacher/howto:v2" in text


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_write_report_files(tmp_path: Path) -> None:
    results = _results()
    written = write_report(results, tmp_path)
    assert set(written) == {
        "results.json",
        "report.md",
        "charts/sst2.png",
        "charts/mnli.png",
        "charts/glue_diagnostic.png",
    }
    assert load_results(tmp_path / "results.json") == results
    for name in ("sst2", "mnli", "glue_diagnostic"):
        width, height = _png_size(tmp_path / "charts" / f"{name}.png")
        assert width >= 300 and height >= 200
    report = (tmp_path / "report.md").read_text()
    assert "![SST-2](charts/sst2.png)" in report
    assert all(len(row) == len(table[0]) for table in parse_tables(report) for row in table)


def test_training_curves_are_small_multiples_linked_from_the_report(tmp_path: Path) -> None:
    """A panel per task x model, a line per seed: two tasks and two models make a 2 x 2 grid, wider and taller
    than one panel."""
    records = [
        RunRecord(
            row,
            f"student/{row}:v1",
            task,
            seed,
            {"accuracy": 60.0 + seed},
            loss_curve=[[step, 0.7 / step] for step in range(1, 11)],
            dev_curve=[[1, 55.0], [2, 60.0 + seed]],
        )
        for row in ("A", "B")
        for task in ("sst2", "qnli")
        for seed in (0, 1)
    ]
    references = {"sst2": {"majority": {"metrics": {"accuracy": 50.0}, "correct": None, "predicted": None}}}
    written = write_report(build_results(records, "A", references=references), tmp_path)
    assert {"charts/training_loss.png", "charts/dev_curves.png"} <= set(written)
    for name in ("training_loss", "dev_curves"):
        width, height = _png_size(tmp_path / "charts" / f"{name}.png")
        assert width >= 2 * 300 - 100 and height >= 2 * 240 - 100
    report = (tmp_path / "report.md").read_text()
    curves = report.split("## Training curves", 1)[1]
    assert "![Training loss](charts/training_loss.png)" in curves
    assert "![Dev metric per epoch](charts/dev_curves.png)" in curves


def test_runs_without_curves_draw_none(tmp_path: Path) -> None:
    written = write_report(_results(), tmp_path)
    assert not any("training_loss" in name or "dev_curves" in name for name in written)
    assert "## Training curves" not in (tmp_path / "report.md").read_text()


def test_results_json_is_plain_json(tmp_path: Path) -> None:
    write_report(_results(), tmp_path, charts=False)
    assert json.loads((tmp_path / "results.json").read_text())["format"] == "vlkd.eval-results/v2"
    assert not (tmp_path / "charts").exists()


def test_loading_something_else_says_what_was_expected(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"format": "vlkd.corpus/v1"}))
    with pytest.raises(DataError, match=r"format 'vlkd\.corpus/v1', expected 'vlkd\.eval-results/v2'"):
        load_results(tmp_path / "results.json")


@pytest.mark.parametrize(
    ("records", "baseline", "message"),
    [
        ([RunRecord("A", "student/a:v1", "sst2", 0, {})] * 2, None, "row 'A', task sst2, seed 0 appears twice"),
        (
            [RunRecord("A", "student/a:v1", "sst2", 0, {}), RunRecord("A", "student/b:v1", "sst2", 1, {})],
            None,
            "row 'A' names two models",
        ),
        ([RunRecord("A", "student/a:v1", "cola", 0, {})], None, "unknown task 'cola'"),
        ([RunRecord("A", "student/a:v1", "sst2", 0, {})], "B", "baseline 'B' is not a row; rows: A"),
    ],
)
def test_inconsistent_records_are_refused(records: list[RunRecord], baseline: str | None, message: str) -> None:
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_results(records, baseline)


def test_merge_combines_runs_and_renames_clashing_rows() -> None:
    first = _results()
    second = build_results(
        _runs("BERT", "student/base-12l:v1", BASE, {"sst2": [{"accuracy": 88.0}]})
        + _runs("+ KD-NST", "student/nst:v3", NST, {"sst2": [{"accuracy": 83.0}]}),  # the same run again
        notes=[NOTE, "second run"],
    )
    merged = merge([first, second])
    assert [m["row"] for m in merged["models"]] == [
        "BERT (student/base:v1)",
        "+ KD-NST",
        "BERT (student/base-12l:v1)",
    ]
    assert merged["baseline"] == "BERT (student/base:v1)"
    assert len(merged["runs"]) == 19
    assert merged["summary"]["BERT (student/base-12l:v1)"]["sst2"]["accuracy"]["mean"] == 88.0
    assert merged["notes"] == [NOTE, "second run"]
    assert merged["retrieval"] == first["retrieval"]
    rows = parse_tables(render_markdown(merged))[0][1:]
    assert [row[0] for row in rows] == ["BERT (student/base:v1)", "+ KD-NST", "BERT (student/base-12l:v1)"]


def test_merge_can_choose_another_baseline() -> None:
    assert merge([_results()], baseline="+ KD-NST")["baseline"] == "+ KD-NST"


@pytest.mark.parametrize(
    ("markdown", "message"),
    [
        ("| a | b |\n| x | y |\n", "without a separator"),
        ("| a | b |\n| --- | --- |\n| x |\n", "cell count other than the header's 2"),
    ],
)
def test_parse_tables_rejects_malformed_tables(markdown: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_tables(markdown)


def test_pipes_in_cells_are_escaped() -> None:
    records = _runs("A|B", "student/a:v1", {}, {"sst2": [{"accuracy": 90.0}]})
    assert parse_tables(render_markdown(build_results(records)))[0][1][0] == "A|B"


# --- ablation tables (Tables 3, 5, 6) ------------------------------------------------------------------------

TABLES = [
    {
        "name": "table5",
        "title": "KD objectives (Table 5)",
        "rows": [("B", "B"), ("crd", "+ KD-CRD"), ("nst", "+ KD-NST")],
    },
    {"name": "table3", "title": "Teacher objectives (Table 3)", "rows": [("B", "B"), ("nst", "+ KD from T^{CT+MLM}")]},
]


def _ablation_results() -> dict:
    """Three rows on SST-2 with per-example outcomes (so each difference has an interval), shown by two tables."""

    def run(row: str, right: int) -> RunRecord:
        correct = "1" * right + "0" * (40 - right)
        return RunRecord(row, f"student/{row}:v1", "sst2", 0, {"accuracy": right / 40 * 100}, correct=correct)

    return build_results([run("B", 20), run("nst", 30), run("crd", 22)], "B", tables=TABLES)


def _section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def test_each_ablation_table_is_a_section_of_its_rows_under_their_labels_in_its_order() -> None:
    markdown = render_markdown(_ablation_results())
    assert markdown.index("## Downstream tasks (Table 1)") < markdown.index("## KD objectives (Table 5)")
    assert markdown.index("## KD objectives (Table 5)") < markdown.index("## Teacher objectives (Table 3)")
    table5, table5_differences = parse_tables(_section(markdown, "## KD objectives (Table 5)"))
    # as the paper's ablation tables: no average
    assert table5 == [["Model", "SST-2 Acc"], ["B", "50.0"], ["+ KD-CRD", "55.0"], ["+ KD-NST", "75.0"]]
    assert [row[0] for row in table5_differences[1:]] == ["+ KD-CRD", "+ KD-NST"]
    table3, _ = parse_tables(_section(markdown, "## Teacher objectives (Table 3)"))
    assert [row[0] for row in table3[1:]] == ["B", "+ KD from T^{CT+MLM}"]
    text = render_table(_ablation_results())
    assert "KD objectives (Table 5)\nModel" in text and "Teacher objectives (Table 3)\nModel" in text


def test_a_difference_keeps_its_interval_under_the_label_of_each_table_showing_it() -> None:
    results = _ablation_results()
    interval = results["differences"]["nst"]["sst2"]
    assert interval["low"] > 0  # 10 more right of 40
    shown = f"+25.0 [{interval['low']:+.1f}, {interval['high']:+.1f}]"
    markdown = render_markdown(results)
    main_differences = parse_tables(_section(markdown, "## Downstream tasks (Table 1)"))[1]
    table3_differences = parse_tables(_section(markdown, "## Teacher objectives (Table 3)"))[1]
    assert main_differences[1][:2] == ["nst", shown]
    assert table3_differences[1:] == [["+ KD from T^{CT+MLM}", shown]]  # SST-2 (an ablation table has no average)


def test_results_json_lists_the_ablation_tables(tmp_path: Path) -> None:
    write_report(_ablation_results(), tmp_path, charts=False)
    tables = load_results(tmp_path / "results.json")["tables"]
    assert tables[1] == {"name": "table3", "title": "Teacher objectives (Table 3)",
                         "rows": [["B", "B"], ["nst", "+ KD from T^{CT+MLM}"]]}  # fmt: skip


def test_an_ablation_table_row_without_runs_is_refused() -> None:
    table = {"name": "t", "title": "t", "rows": [("B", "B"), ("gone", "+ KD-gone")]}
    with pytest.raises(DataError, match="table 't' shows rows with no runs: gone; rows: B"):
        build_results([RunRecord("B", "student/b:v1", "sst2", 0, {"accuracy": 50.0})], "B", tables=[table])
