"""Differences from the baseline with their intervals, on constructed runs: in results.json, report.md, the
terminal table, and recomputed the same way when `vlkd report compare` merges documents; over the paragraphs of a
task whose dev examples come in clusters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlkd.errors import DataError
from vlkd.evaluation.bootstrap import cluster_labels
from vlkd.evaluation.report import NOISE, parse_tables, render_markdown, render_table
from vlkd.evaluation.results import RunRecord, build_results, load_results, merge, write_results

DEV = 100


BASE_QNLI = "1" * 70 + "0" * 30
SAME_QNLI = "0" * 3 + "1" * 67 + "1" * 4 + "0" * 26  # 3 of BASE's right answers wrong, 4 of its wrong ones right


def _run(row: str, task: str, seed: int, right: int, correct: str | None = None) -> RunRecord:
    correct = correct or "1" * right + "0" * (DEV - right)
    return RunRecord(row, f"student/{row}:v1", task, seed, {"accuracy": float(right)}, correct=correct)


def _results() -> dict:
    """Against BASE (60% on SST-2, 70% on QNLI): GOOD is right everywhere on SST-2 and equal on QNLI; SAME gives
    BASE's answers on SST-2 and on QNLI differs on 7 examples, one more of them right: a difference within
    noise."""
    records = [_run("BASE", "sst2", s, 60) for s in (0, 1)] + [_run("BASE", "qnli", s, 70, BASE_QNLI) for s in (0, 1)]
    records += [_run("GOOD", "sst2", s, 100) for s in (0, 1)] + [_run("GOOD", "qnli", s, 70) for s in (0, 1)]
    records += [_run("SAME", "sst2", s, 60) for s in (0, 1)] + [_run("SAME", "qnli", s, 71, SAME_QNLI) for s in (0, 1)]
    return build_results(records, "BASE")


def test_results_json_holds_each_difference_with_its_interval() -> None:
    differences = _results()["differences"]
    assert set(differences) == {"GOOD", "SAME"}  # not the baseline itself
    good = differences["GOOD"]
    assert good["sst2"]["difference"] == pytest.approx(40.0) and good["sst2"]["low"] > 0
    assert good["sst2"]["within_noise"] is False
    assert good["qnli"] == {"difference": 0.0, "low": 0.0, "high": 0.0, "within_noise": True, "over_seeds": True}
    assert good["average"]["tasks"] == ["sst2", "qnli"]
    assert good["average"]["difference"] == pytest.approx(20.0) and not good["average"]["within_noise"]
    assert differences["SAME"]["qnli"]["within_noise"] is True
    assert differences["SAME"]["qnli"]["low"] < 0 < differences["SAME"]["qnli"]["high"]


def test_report_md_marks_a_difference_within_noise() -> None:
    header, good, same = parse_tables(render_markdown(_results()))[1]
    assert header == ["Model", "SST-2 Acc", "QNLI Acc", "Avg. (2 of 7)"]
    assert good[1].startswith("+40.0 [+") and NOISE not in good[1]
    assert good[2] == f"+0.0 [+0.0, +0.0] {NOISE}"
    assert same[2].startswith("+1.0 [-") and same[2].endswith(NOISE)


def test_the_terminal_table_marks_it_too() -> None:
    text = render_table(_results())
    differences = text.split("Difference from BASE\n", 1)[1].splitlines()
    same = next(line for line in differences if line.startswith("SAME"))
    assert same.count(NOISE) == 3  # SST-2 identical, QNLI one example, and so their average
    assert "over finetuning seeds" in text and "pretraining" in text


def test_compare_recomputes_intervals_with_the_same_rule() -> None:
    results = _results()
    runs = results["runs"]
    first = build_results([RunRecord(**r) for r in runs if r["row"] != "SAME"], "BASE")
    second = build_results([RunRecord(**r) for r in runs if r["row"] == "SAME"])
    merged = merge([first, second])
    assert merged["differences"] == results["differences"]
    assert NOISE in render_table(merged)


def test_runs_on_different_dev_sets_get_no_interval() -> None:
    records = [_run("BASE", "sst2", 0, 60), _run("B", "sst2", 0, 70)]
    records[1] = RunRecord(**{**records[1].__dict__, "correct": "1" * 70 + "0" * 50})  # 120 examples
    results = build_results(records, "BASE")
    assert results["differences"] == {}
    assert parse_tables(render_markdown(results))[1][1] == ["B", "+10.0", "+10.0"]


def test_a_v1_document_loads_without_intervals(tmp_path: Path) -> None:
    """Made before runs kept per-example outcomes: it is rebuilt in the current format, nothing to compare by."""
    run = {"row": "A", "ref": "student/a:v1", "lineage": {}, "task": "sst2", "seed": 0, "metrics": {"accuracy": 80.0}}
    v1 = {
        "format": "vlkd.eval-results/v1",
        "baseline": "A",
        "models": [{"row": "A", "ref": "student/a:v1", "lineage": {}, "cost": {"cpu_hours": 1.0}}],
        "tasks": ["sst2"],
        "runs": [run, {**run, "row": "B", "ref": "student/b:v1", "metrics": {"accuracy": 90.0}}],
        "summary": {},
        "retrieval": {},
        "notes": ["old"],
    }
    (tmp_path / "results.json").write_text(json.dumps(v1))
    results = load_results(tmp_path / "results.json")
    assert results["format"] == "vlkd.eval-results/v2" and results["differences"] == {}
    assert results["summary"]["B"]["sst2"]["accuracy"]["mean"] == 90.0
    assert results["models"][0]["cost"] == {"cpu_hours": 1.0} and results["notes"] == ["old"]
    assert parse_tables(render_markdown(results))[1][1] == ["B", "+10.0", "+10.0"]


PARAGRAPHS = cluster_labels([question // 5 for question in range(DEV)])  # 20 paragraphs of 5 questions


def _squad(row: str, seed: int, right: range | list[int], clusters: str | None = PARAGRAPHS) -> RunRecord:
    """A SQuAD run right on every question of the paragraphs `right`, wrong on the others."""
    correct = "".join(("1" if paragraph in right else "0") * 5 for paragraph in range(20))
    metrics = {"exact_match": correct.count("1") / DEV * 100}
    return RunRecord(row, f"student/{row}:v1", "squad_v1", seed, metrics, correct=correct, clusters=clusters)


def _squad_results(clusters: str | None = PARAGRAPHS) -> dict:
    """GOOD right on 12 paragraphs, BASE on 9 (8 of them GOOD's): +15 points, carried by 4 paragraphs."""
    records = [_squad("BASE", s, [*range(4, 12), 19], clusters) for s in (0, 1)]
    return build_results(records + [_squad("GOOD", s, range(12), clusters) for s in (0, 1)], "BASE")


def test_results_json_keeps_a_tasks_clusters_once_not_per_run() -> None:
    results = _squad_results()
    assert results["clusters"] == {"squad_v1": PARAGRAPHS}
    assert all("clusters" not in run for run in results["runs"])


def test_a_gain_carried_by_a_few_paragraphs_is_within_noise() -> None:
    """60 questions right against 45, but they are 12 paragraphs against 9: counted as 100 independent questions
    the gain would look clear of 0."""
    clustered = _squad_results()["differences"]["GOOD"]["squad_v1"]
    independent = _squad_results(clusters=None)["differences"]["GOOD"]["squad_v1"]
    assert clustered["difference"] == independent["difference"] == pytest.approx(15.0)
    assert clustered["within_noise"] and not independent["within_noise"]


def test_a_results_file_from_before_clusters_reads_as_independent_examples(tmp_path: Path) -> None:
    document = _squad_results()
    del document["clusters"]
    write_results(document, tmp_path / "results.json")
    loaded = load_results(tmp_path / "results.json")
    assert merge([loaded])["differences"] == _squad_results(clusters=None)["differences"]


def test_compare_keeps_each_tasks_clusters() -> None:
    results = _squad_results()
    merged = merge([results, results])
    assert merged["clusters"] == results["clusters"] and merged["differences"] == results["differences"]


def test_runs_that_cluster_one_task_differently_are_refused() -> None:
    records = [_squad("BASE", 0, [1]), _squad("GOOD", 0, [2], clusters=cluster_labels(range(DEV)))]
    with pytest.raises(DataError, match=r"runs on squad_v1 group its dev examples differently \(row 'GOOD', seed 0\)"):
        build_results(records, "BASE")


def test_runs_on_another_dev_set_than_the_clusters_get_no_interval() -> None:
    """A document from before clusters, on a 120-question dev set, compared with one on this 100-question one."""
    old = [RunRecord(row, f"student/{row}:v0", "squad_v1", 0, {}, correct="10" * 60) for row in ("BASE", "OLD")]
    results = build_results([*old, _squad("NEW", 0, range(10))], "BASE")
    assert results["clusters"] == {"squad_v1": PARAGRAPHS} and results["differences"] == {}
