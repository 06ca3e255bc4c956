"""The eval stage on a real local Ray: students finetuned on synthetic tasks, teacher retrieval, the report."""

from __future__ import annotations

import json
import math
import os
import socket
from datetime import UTC, datetime

import pytest

from vlkd.artifacts import Manifest
from vlkd.evaluation.report import NOISE
from vlkd.evaluation.table_text import parse_tables
from vlkd.jobs import evaluate
from vlkd.runtime import JobContext
from vlkd.specs import TaskSpec, parse_spec

pytestmark = pytest.mark.timeout(900)


def eval_spec(**overrides):
    spec = {
        "stage": "eval",
        "name": "report",
        "models": ["student/s-kd", {"ref": "student/s-base", "label": "baseline"}],
        "baseline": "baseline",
        "tasks": [{"name": "sst2", "data": "dataset/sst2"}],
        "finetune": {"epochs": 3, "batch_size": 16, "max_len": 32, "lr": 1e-3},
        "seeds": [0, 1],
        "retrieval": {"teacher": "teacher/t", "num_examples": 3},
        "resources": {"num_workers": 0},
    }
    return parse_spec({**spec, **overrides})


@pytest.fixture(scope="module")
def store(make_store, populate, tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval-inputs")
    store = make_store("s3", folder)
    populate(store, folder, "students")
    return store


@pytest.fixture
def context(store, tmp_path):
    return JobContext(f"eval-{tmp_path.name}", store, tmp_path)


def test_eval_publishes_a_report_comparing_students_with_the_baseline(context, tmp_path):
    (manifest,) = evaluate.run(eval_spec(), context)
    assert manifest.parents == ["student/s-kd:v1", "student/s-base:v1", "teacher/t:v1", "dataset/sst2:v1"]
    out = tmp_path / "report"
    context.store.fetch(manifest.ref, out)
    results = json.loads((out / "results.json").read_text())
    assert sorted((r["row"], r["seed"]) for r in results["runs"]) == [
        ("baseline", 0),
        ("baseline", 1),
        ("s-kd", 0),
        ("s-kd", 1),
    ]
    accuracy = results["summary"]["baseline"]["sst2"]["accuracy"]  # (that it is learnt: test_evaluation_finetune)
    per_seed = [r["metrics"]["accuracy"] for r in results["runs"] if r["row"] == "baseline"]
    assert accuracy["seeds"] == 2 and accuracy["mean"] == pytest.approx(sum(per_seed) / 2)
    report = (out / "report.md").read_text()
    table, differences = parse_tables(report)[:2]
    assert table[0] == ["Model", "SST-2 Acc", "Avg. (1 of 7)"]
    assert [row[0] for row in table[1:]] == [
        "s-kd",
        "baseline",
        "majority class (reference)",
        "bag-of-words LR (reference)",
    ]
    assert table[3][1] == f"{results['references']['sst2']['majority']['metrics']['accuracy']:.1f}"
    assert table[3][2] == table[4][2] == "-"  # references are never averaged
    assert differences[1][0] == "s-kd" and differences[1][1].startswith(("+", "-"))
    interval = results["differences"]["s-kd"]["sst2"]
    assert interval["low"] <= interval["difference"] <= interval["high"]
    assert differences[1][1].endswith(NOISE) == interval["within_noise"]
    for png in ("sst2", "training_loss", "dev_curves"):
        assert (out / "charts" / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![Training loss](charts/training_loss.png)" in report
    run = results["runs"][0]  # each run explains itself: 3 epochs in batches of 16
    assert [epoch for epoch, _ in run["dev_curve"]] == [1, 2, 3]
    assert run["loss_curve"][-1][0] == 3 * math.ceil(run["examples"] / 16)
    assert sum(run["predicted"].values()) == len(run["correct"]) == 50  # the synthetic SST-2's dev set
    flagged = [run for row in ("s-kd", "baseline") for run in results["summary"][row]["sst2"]["accuracy"]["flags"]]
    assert all(flag in report for run in flagged for flag in run["flags"])  # flagged or not, all are in the notes
    assert results["retrieval"]["teacher/t:v1"]["queries"] >= 2
    page = (out / "retrieval" / "index.html").read_text()
    assert page.count("<h3>") == 3 and "thumbs/" in page
    assert any("synthetic" in note for note in results["notes"]) and any("demo encoders" in n for n in results["notes"])
    lineage = results["models"][0]["lineage"]
    assert {key: lineage[key] for key in ("teacher", "kd", "corpus")} == {
        "teacher": "teacher/t:v1",
        "kd": {"nst": 1.0, "crd": 1.0},
        "corpus": "corpus/synth:v1",
    }
    assert lineage["published_step"] == lineage["steps"] > 0  # a student publishes its last weights
    assert lineage["pretrained_max_len"] == 24  # tests/conftest.py's students; finetuned at 32 here:
    assert "s-kd, baseline were pretrained on at most 24 tokens, so positions 24-31" in report.split("## Notes")[1]
    cost = results["models"][0]["cost"]  # the student's, and its teacher's from the teacher's manifest
    assert cost["gpu_hours"] == cost["teacher_gpu_hours"] == 0 and cost["cpu_hours"] > 0 and cost["wall_seconds"] > 0
    assert cost["teacher_cpu_hours"] == context.store.manifest("teacher/t").cost["cpu_hours"] > 0
    assert "## Cost" in (out / "report.md").read_text()


def test_an_ablation_table_of_the_spec_is_a_section_of_the_published_report(context, tmp_path):
    rows = ["baseline", {"row": "s-kd", "label": "+ KD"}]
    table = {"name": "table5", "title": "KD objectives (Table 5)", "rows": rows}
    spec = eval_spec(name="table5", finetune={"epochs": 1, "max_len": 32}, seeds=[0], retrieval=None, tables=[table])
    (manifest,) = evaluate.run(spec, context)
    context.store.fetch(manifest.ref, tmp_path / "r")
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["tables"] == [{**table, "rows": [["baseline", "baseline"], ["s-kd", "+ KD"]], "tasks": None}]
    section = (tmp_path / "r" / "report.md").read_text().split("## KD objectives (Table 5)\n", 1)[1]
    assert [row[0] for row in parse_tables(section)[0][1:3]] == ["baseline", "+ KD"]


def test_a_run_that_does_not_learn_is_flagged_in_the_published_report(context, tmp_path):
    frozen = {"epochs": 3, "batch_size": 16, "max_len": 32, "lr": 1e-9}
    spec = eval_spec(
        name="frozen", models=["student/s-base"], baseline=None, finetune=frozen, seeds=[0], retrieval=None
    )
    (manifest,) = evaluate.run(spec, context)
    context.store.fetch(manifest.ref, tmp_path / "r")
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    (run,) = results["summary"]["s-base"]["sst2"]["accuracy"]["flags"]
    assert run["seed"] == 0 and run["flags"][0].startswith("did not learn: loss 0.")
    report = (tmp_path / "r" / "report.md").read_text()
    assert parse_tables(report)[0][1][1].endswith(" !")
    assert f"- ! s-base, SST-2, seed 0: {run['flags'][0]}" in report.split("## Notes", 1)[1]


def test_the_diagnostic_set_is_scored_with_the_mnli_model(context, tmp_path):
    tasks = [{"name": "mnli", "data": "dataset/mnli"}, {"name": "glue_diagnostic", "data": "dataset/glue_diagnostic"}]
    (manifest,) = evaluate.run(
        eval_spec(name="diag", models=["student/s-base"], baseline=None, tasks=tasks, seeds=[0], retrieval=None),
        context,
    )
    context.store.fetch(manifest.ref, tmp_path / "r")
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    runs = results["runs"]
    assert sorted(r["task"] for r in runs) == ["glue_diagnostic", "mnli"]
    diagnostic = next(r for r in runs if r["task"] == "glue_diagnostic")
    assert -100 <= diagnostic["metrics"]["r3"] <= 100 and "r3_average" in diagnostic["metrics"]
    # kept for the R3s' intervals: the run's predicted labels, the dev file's gold ones once
    assert len(diagnostic["labels"]) == len(results["gold"]["glue_diagnostic"]) == len(diagnostic["correct"])


def report_runs(context, manifest, tmp_path) -> list[dict]:
    context.store.fetch(manifest.ref, tmp_path / manifest.name)
    return json.loads((tmp_path / manifest.name / "results.json").read_text())["runs"]


def test_runs_go_out_as_ray_tasks(context, tmp_path):
    spec = eval_spec(name="parallel", seeds=[0], retrieval=None, resources={"num_workers": 2, "cpus_per_worker": 1})
    (manifest,) = evaluate.run(spec, context)
    assert manifest.metrics["runs"] == 2
    workers = [run["worker"] for run in report_runs(context, manifest, tmp_path)]
    assert len(workers) == 2 and all(int(w.rsplit(":", 1)[1]) != os.getpid() for w in workers)  # not in this process


def test_without_workers_runs_stay_in_the_jobs_process(context, tmp_path):
    (manifest,) = evaluate.run(eval_spec(name="serial", seeds=[0], retrieval=None), context)
    workers = {run["worker"] for run in report_runs(context, manifest, tmp_path)}
    assert workers == {f"{socket.gethostname()}:{os.getpid()}"}


def test_report_show_prints_the_table_and_the_notes(context, vlkd_cli, s3_endpoint):
    evaluate.run(eval_spec(name="shown", seeds=[0], retrieval=None), context)

    def report(*args):  # as a user reaches the S3 store: its URI, and the endpoint in the environment
        return vlkd_cli("report", *args, "--store", context.store.uri, env={"AWS_ENDPOINT_URL": s3_endpoint})

    shown = report("show", "eval/shown")
    assert shown.returncode == 0, shown.stderr
    assert "SST-2 Acc" in shown.stdout and "Difference from baseline" in shown.stdout
    assert "Note: The data is synthetic" in shown.stdout
    assert "majority class (reference)" in shown.stdout and "paired bootstrap" in shown.stdout
    compared = report("compare", "eval/shown", "eval/shown")
    assert compared.returncode == 0 and "s-kd" in compared.stdout
    difference = next(line for line in compared.stdout.split("Difference from")[1].splitlines() if "s-kd" in line)
    assert "[" in difference  # the merged runs keep their per-example outcomes: an interval again
    curves = report("show", "student/s-kd")  # a training run: its curves
    assert curves.returncode == 0 and {"step", "val_mlm", "val_loss"} <= set(curves.stdout.splitlines()[1].split())
    wrong = report("show", "corpus/synth")
    assert wrong.returncode == 1 and "reads eval artifacts" in wrong.stderr


def _manifest(kind: str, spec: dict) -> Manifest:
    return Manifest(kind=kind, name="m", version=1, created_at=datetime.now(UTC), vlkd_version="0", spec=spec)


def test_a_models_lineage_says_how_long_its_pretraining_inputs_were():
    assert evaluate.lineage_of(_manifest("student", {"max_len": 128}))["pretrained_max_len"] == 128
    assert evaluate.lineage_of(_manifest("teacher", {"max_text_len": 64}))["pretrained_max_len"] == 64


def test_a_note_names_the_positions_that_pretraining_never_trained():
    """SQuAD at 384 tokens on models pretrained on 128; SST-2 at 128 needs no note, nor a randomly initialised row
    (no pretraining at all)."""
    squad = TaskSpec(name="squad_v1", data="dataset/squad", finetune={"max_len": 384})
    sst2 = TaskSpec(name="sst2", data="dataset/sst2")
    runs = [
        evaluate.Run(row, f"student/{row}:v1", task, seed)
        for row in ("a", "b", "c")
        for task in (squad, sst2)
        for seed in (0, 1)
    ]
    lineages = {"a": {"pretrained_max_len": 128}, "b": {"pretrained_max_len": 128}, "c": {"model": "random init"}}
    assert evaluate.untrained_position_notes(runs, lineages) == [
        "SQuAD v1.1 is finetuned on 384-token windows; a, b were pretrained on at most 128 tokens, so positions "
        "128-383 (67% of each window) never got a gradient in pretraining."
    ]
