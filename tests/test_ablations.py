"""The paper's ablation tables from one pipeline spec: the cells a table expands into (names, wiring, the stages
cells share), the errors a user meets, the progress `vlkd pipeline status` shows, and Table 5 run at toy scale."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console
from test_pipeline_dag import publish_inputs

from vlkd.ablation_table import cell_state, progress_lines, table_results
from vlkd.artifacts import ArtifactStore
from vlkd.backends.base import JobState, JobStatus
from vlkd.errors import SpecError, VlkdError
from vlkd.pipeline import PipelineRun, StageRun, run_pipeline
from vlkd.pipelines import pipeline_file
from vlkd.specs import load_spec, parse_spec

EXAMPLES = Path(__file__).parent.parent / "examples"
PAPER = EXAMPLES / "paper" / "ablations.yaml"
TINY = EXAMPLES / "tiny" / "ablations.yaml"
TABLE5_ROWS = ["+ KD-Soft label", "+ KD-Regression", "+ KD-Vid Voken", "+ KD-NST", "+ KD-CRD", "+ KD-NST+CRD"]


def raw(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data, "pipeline")
    return info.value.problems


def with_table5_kd(kd: list[Any]) -> dict[str, Any]:
    data = raw(TINY)
    data["ablations"]["table5"]["student"]["kd"] = kd
    return data


# --- expansion -------------------------------------------------------------------------------------------------


def test_table5_is_a_student_per_kd_objective_beside_the_baseline():
    spec = load_spec(TINY)
    stages = dict(spec.stages())
    assert list(stages) == [
        "preprocess",
        "text",
        "teacher",
        "distill:tiny-ablations-baseline",
        "distill:tiny-two-stage",  # Table 4's
        "distill:tiny-kd-soft_label",
        "distill:tiny-kd-regression",
        "distill:tiny-kd-voken",
        "distill:tiny-kd-nst",
        "distill:tiny-kd-crd",
        "distill:tiny-kd-nst-crd",
        "eval",
    ]
    assert stages["distill:tiny-kd-nst-crd"].kd == {"nst": 1.0, "crd": 1.0}
    assert {str(s.teacher) for k, s in stages.items() if k.startswith("distill:tiny-kd")} == {"teacher/tiny:latest"}


def test_a_cell_is_the_template_student_with_the_cells_values():
    spec = load_spec(TINY)
    template = next(s for s in spec.students if s.name == "tiny")
    unchanged = {"name", "kd", "kd_options"}
    for cell in spec.cells():
        assert cell.student.model_dump(exclude=unchanged) == template.model_dump(exclude=unchanged)
        assert cell.student.kd_options.crd == template.kd_options.crd
    assert "distill:tiny" not in dict(spec.stages())  # the template runs only as its cells


def test_a_voken_cell_builds_its_bank_from_its_teachers_features():
    stages = dict(load_spec(PAPER).stages())
    video, image = stages["distill:wiki103-6l-kd-voken"], stages["distill:wiki103-6l-middle_frame-kd-voken"]
    assert str(video.kd_options.voken.features) == "features/howto100m-resnet:latest"
    assert str(image.kd_options.voken.features) == "features/howto100m-resnet:latest"
    assert video.kd_options.voken.bank_size == 30_000  # the template's
    assert stages["distill:wiki103-6l-kd-nst"].kd_options.voken.features is None


def test_the_eval_has_the_baseline_then_a_row_per_cell_in_the_papers_words():
    spec = load_spec(TINY)
    rows = ["tiny-ablations-baseline", "tiny-two-stage", *TABLE5_ROWS, "tiny (teacher LM)"]  # Table 4's Video PT last
    assert [m.row for m in spec.eval.models] == rows
    assert str(spec.eval.models[5].ref) == "student/tiny-kd-nst:latest"
    assert str(spec.eval.models[-1].ref) == "teacher/tiny:latest"
    assert spec.eval.baseline == "tiny-ablations-baseline"


def test_the_eval_lays_out_each_table_as_its_rows_under_their_labels():
    spec = load_spec(PAPER)
    for table, shown in zip(spec.ablation_tables(), spec.eval.tables, strict=True):
        assert (shown.name, shown.title) == (table.name, table.title)
        assert [(row.row, row.shown) for row in shown.rows] == table.rows()


def test_an_eval_that_lists_its_models_must_list_every_cells_student():
    data = raw(TINY)
    data["eval"]["models"] = ["student/tiny-ablations-baseline", "student/tiny-kd-nst", "student/tiny-kd-crd"]
    (problem,) = problems(data)
    assert problem.startswith("eval.models: the ablation cells + KD-Soft label, + KD-Regression, + KD-Vid Voken, ")


def test_cells_that_agree_are_one_stage_whichever_tables_they_are_in():
    spec = load_spec(PAPER)
    keys = [key for key, _ in spec.stages()]
    assert len(keys) == len(set(keys))
    assert [k for k in keys if k.startswith("teacher")] == [
        "teacher",
        "teacher:howto100m-6l-mlm",
        "teacher:howto100m-6l-ct",
        "teacher:howto100m-6l-middle_frame",
    ]
    # the baseline, Table 2's captions baseline, Table 4's two-stage, then the 15 cells of Tables 3, 5, 6 and the
    # appendix's as 11 students (NST is in all four tables, Vid Voken in Tables 5 and 6)
    assert len([k for k in keys if k.startswith("distill:")]) == 3 + 11
    tables = {t.name: t for t in spec.ablation_tables()}
    shared = [
        tables["table3"].cells[2],  # + KD from T^{MLM+CT}: the pipeline's teacher
        tables["table5"].cells[3],  # + KD-NST
        tables["table6"].cells[3],  # + KD-NST (Video)
        tables["head"].cells[1],  # + KD-NST (distillation head)
    ]
    assert {cell.stages for cell in shared} == {("teacher", "distill:wiki103-6l-kd-nst")}
    assert len({cell.row for cell in shared}) == 1  # one eval row, finetuned once


def test_a_cell_that_changes_a_teacher_field_distils_from_a_teacher_of_its_own():
    spec = load_spec(PAPER)
    stages = dict(spec.stages())
    mlm = stages["teacher:howto100m-6l-mlm"]
    assert mlm.objectives == ["mlm"]
    assert mlm.model_dump(exclude={"name", "objectives"}) == spec.teacher.model_dump(exclude={"name", "objectives"})
    assert str(stages["distill:wiki103-6l-mlm-kd-nst"].teacher) == "teacher/howto100m-6l-mlm:latest"
    assert stages["teacher:howto100m-6l-middle_frame"].visual_input == "middle_frame"
    image_nst = stages["distill:wiki103-6l-middle_frame-kd-nst"]
    assert str(image_nst.teacher) == "teacher/howto100m-6l-middle_frame:latest"


def test_each_table_labels_its_rows_by_its_own_axes_after_the_baseline():
    tables = {t.name: t for t in load_spec(PAPER).ablation_tables()}
    baseline = ("wiki103-6l-baseline", "BERT6L/512H")  # the paper's label for it
    assert tables["table3"].rows() == [
        baseline,
        ("+ KD-NST from T^{MLM}", "+ KD from T^{MLM}"),
        ("+ KD-NST from T^{CT}", "+ KD from T^{CT}"),
        ("+ KD-NST", "+ KD from T^{MLM+CT}"),
    ]
    # two axes: a row per cell, the teacher's axis outermost, so each teacher's cells form a block (Table 6)
    assert tables["table6"].rows() == [
        baseline,
        ("+ KD-Voken (Image)", "+ KD-Voken (Image)"),
        ("+ KD-NST (Image)", "+ KD-NST (Image)"),
        ("+ KD-Vid Voken", "+ KD-Voken (Video)"),
        ("+ KD-NST", "+ KD-NST (Video)"),
    ]
    assert tables["table5"].axes == ("student.kd",)
    assert tables["table6"].axes == ("teacher.visual_input", "student.kd")


def test_a_table_that_only_varies_the_teacher_names_its_students_for_the_teacher_alone():
    data = raw(TINY)
    data["ablations"] = {"table3": {"teacher": {"objectives": [["mlm"], ["ct", "mlm"]]}}}
    spec = parse_spec(data, "pipeline")
    assert [key for key, _ in spec.stages()][2:-1] == [
        "teacher",
        "teacher:tiny-mlm",
        "distill:tiny-ablations-baseline",
        "distill:tiny-two-stage",
        "distill:tiny-mlm",
        "distill:tiny",  # T^{CT+MLM} is the pipeline's teacher: the template itself
    ]


# --- validation ------------------------------------------------------------------------------------------------


def test_an_unknown_axis_field_is_an_error_with_its_path_and_a_suggestion():
    data = raw(TINY)
    data["ablations"]["table5"]["student"] = {"kdd": [{"nst": 1.0}]}
    assert problems(data) == ["ablations.table5.student.kdd: unknown field of the student; did you mean 'kd'?"]


def test_an_invalid_value_is_an_error_at_its_path():
    assert problems(with_table5_kd([{"nst": 1.0}, {"nst": -1}])) == [
        "ablations.table5.student.kd[1].nst: Input should be greater than 0"
    ]
    data = raw(TINY)
    data["ablations"] = {"t3": {"teacher": {"objectives": [["ct"], ["itm"]]}}}
    assert problems(data) == ["ablations.t3.teacher.objectives[1][0]: Input should be 'ct' or 'mlm'"]


def test_the_baseline_is_a_student_not_a_cell():
    (problem,) = problems(with_table5_kd([{"nst": 1.0}, {}]))
    assert problem.startswith("ablations.table5.student.kd[1]: a cell distils: the text-only baseline is a student")


def test_a_value_listed_twice_is_an_error():
    assert problems(with_table5_kd([{"nst": 1.0}, {"crd": 1.0}, {"nst": 1}])) == [
        "ablations.table5.student.kd[2]: listed twice"
    ]


def test_a_table_needs_an_axis_and_a_cell_sets_neither_its_name_nor_its_teacher():
    data = raw(TINY)
    data["ablations"] = {"empty": {"title": "nothing"}, "bad": {"student": {"teacher": ["teacher/x"]}}}
    assert problems(data) == [
        "ablations.empty: give an axis (teacher: {FIELD: [values]} or student: {...}) or rows",
        "ablations.bad.student.teacher: a cell distils from its own teacher: vary the teacher's fields under "
        "`teacher:`",
    ]


def test_ablations_vary_the_one_distilled_student():
    data = raw(TINY)
    data["students"].append({**data["students"][1], "name": "tiny-other"})
    (problem,) = problems(data)
    assert problem.startswith("students: ablations vary the one distilled student")
    assert problem.endswith("found tiny, tiny-other")


def test_the_template_distils_from_the_pipelines_teacher():
    data = raw(TINY)
    data["students"][1]["teacher"] = "teacher/elsewhere"
    assert problems(data) == [
        "students[1].teacher: the ablation cells distil from the pipeline's teacher (teacher/tiny) or a "
        "cell's variant of it: remove this teacher"
    ]


def test_a_cell_may_not_take_the_name_of_a_listed_student():
    data = raw(TINY)
    data["students"][0]["name"] = "tiny-kd-crd"
    assert problems(data) == ["ablations.table5: cell + KD-CRD is named 'tiny-kd-crd', as a student listed"]


# --- progress --------------------------------------------------------------------------------------------------


def paper_run(states: dict[str, str]) -> PipelineRun:
    spec = load_spec(PAPER)
    stages = [StageRun(key, stage.stage, states.get(key, "pending")) for key, stage in spec.stages()]
    return PipelineRun(spec.name, "file:///store", "local", "2026-01-01T00:00:00", stages, None, spec.ablation_tables())


def test_a_cell_is_done_when_its_teacher_and_student_are():
    (table6,) = [t for t in load_spec(PAPER).ablation_tables() if t.name == "table6"]
    image_voken = table6.cells[0]
    assert image_voken.stages == ("teacher:howto100m-6l-middle_frame", "distill:wiki103-6l-middle_frame-kd-voken")
    assert cell_state(image_voken, {}) == "pending"
    assert cell_state(image_voken, {image_voken.stages[0]: "running"}) == "running"
    assert cell_state(image_voken, {image_voken.stages[0]: "succeeded"}) == "pending"
    assert cell_state(image_voken, dict.fromkeys(image_voken.stages, "skipped")) == "done"
    assert cell_state(image_voken, {image_voken.stages[0]: "failed"}) == "failed"


def test_status_shows_cells_done_per_axis_value_and_each_cells_state():
    run = paper_run(
        {"teacher": "skipped", "distill:wiki103-6l-kd-nst": "succeeded", "teacher:howto100m-6l-middle_frame": "running"}
    )
    out = io.StringIO()
    from vlkd.cli.progress import print_stages

    print_stages(run, Console(file=out, width=200))
    shown = out.getvalue()
    assert "ablation table6, Vokenization vs NST, image- and video-level supervision (Table 6): 1/4 cells" in shown
    assert "  teacher.visual_input: Image 0/2, Video 1/2\n" in shown
    assert "  student.kd: Voken 0/2, NST 1/2\n" in shown
    assert "  + KD-Voken (Image)  running  teacher:howto100m-6l-middle_frame\n" in shown
    assert "  + KD-NST (Video)    done     distill:wiki103-6l-kd-nst\n" in shown
    assert "ablation table5, KD objectives (Table 5): 1/6 cells done" in shown
    assert progress_lines(run.tables[0], {})[0].endswith(": 0/3 cells done")


def test_the_run_record_keeps_the_tables_for_status_on_any_machine(tmp_path):
    store = ArtifactStore.open((tmp_path / "store").as_uri())
    run = paper_run({})
    run.save(store)
    assert PipelineRun.load(run.name, store.uri).tables == run.tables


# --- the report's table ----------------------------------------------------------------------------------------


def results_of(rows: dict[str, float], baseline: str) -> dict[str, Any]:
    """A results.json (`vlkd.evaluation.results`) with one SST-2 accuracy per row and its difference from the
    baseline's."""
    return {
        "format": "vlkd.eval-results/v1",
        "baseline": baseline,
        "models": [{"row": row, "ref": f"student/{i}:v1", "lineage": {}, "cost": {}} for i, row in enumerate(rows)],
        "tasks": ["sst2"],
        "runs": [{"row": row, "task": "sst2", "seed": 0, "metrics": {"accuracy": v}} for row, v in rows.items()],
        "summary": {row: {"sst2": {"accuracy": {"mean": v, "std": 0.0, "seeds": 1}}} for row, v in rows.items()},
        "differences": {r: {"sst2": {"difference": v - rows[baseline]}} for r, v in rows.items() if r != baseline},
        "retrieval": {},
        "notes": [],
    }


def test_a_tables_results_are_its_rows_in_its_order_under_its_labels():
    (table3,) = [t for t in load_spec(PAPER).ablation_tables() if t.name == "table3"]
    rows = {"+ KD-NST": 91.1, "wiki103-6l-baseline": 88.8, "+ KD-CRD": 90.0, "+ KD-NST from T^{MLM}": 88.1}
    cut = table_results(results_of(rows, "wiki103-6l-baseline"), table3.rows())
    assert [m["row"] for m in cut["models"]] == ["BERT6L/512H", "+ KD from T^{MLM}", "+ KD from T^{MLM+CT}"]
    assert cut["baseline"] == "BERT6L/512H"
    assert cut["summary"]["+ KD from T^{MLM+CT}"]["sst2"]["accuracy"]["mean"] == 91.1
    assert cut["differences"] == {
        "+ KD from T^{MLM}": {"sst2": {"difference": pytest.approx(-0.7)}},
        "+ KD from T^{MLM+CT}": {"sst2": {"difference": pytest.approx(2.3)}},
    }
    assert {run["row"] for run in cut["runs"]} == set(cut["summary"])  # + KD-CRD is not in Table 3; T^{CT} not run


# --- running ---------------------------------------------------------------------------------------------------


class SpecReadingBackend:
    """A backend whose job reads its spec file only once it is followed, as a detached local job may (its process
    starts after `submit` returns)."""

    name = "local"

    def __init__(self) -> None:
        self.specs: list[str] = []

    def submit(self, job: Any) -> dict[str, Any]:
        return {"spec": job.spec_uri}

    def status(self, job_id: str, record: dict[str, Any]) -> JobStatus:
        return JobStatus(job_id, JobState.FAILED)


class ReadingReporter:
    def follow(self, stage: StageRun, backend: SpecReadingBackend, record: dict[str, Any]) -> JobState:
        backend.specs.append(Path(record["spec"]).read_text())
        return JobState.FAILED  # stop after the first stage: its outputs are not there to pin the next

    def done(self, stage: StageRun) -> None:
        pass


def test_a_local_stage_reads_its_spec_file_while_it_runs_and_the_run_keeps_the_tables(tmp_path):
    store = ArtifactStore.open((tmp_path / "store").as_uri())
    spec, backend = load_spec(TINY), SpecReadingBackend()
    publish_inputs(store, spec)
    with pytest.raises(VlkdError, match="stage preprocess failed"):
        run_pipeline(spec, store, backend, {}, ReadingReporter())
    assert yaml.safe_load(backend.specs[0])["videos"] == "dataset/synth-videos:v1"
    assert PipelineRun.load(spec.name, store.uri).tables == spec.ablation_tables()


# --- Table 5 at toy scale --------------------------------------------------------------------------------------

BASELINE = "tiny-ablations-baseline"


def test_the_tiny_tables_share_the_quickstarts_data_and_teacher_and_none_of_its_students():
    """So that in a store where `vlkd quickstart` ran, the skip rule leaves only the students and the eval to run."""
    ours, quickstart = dict(load_spec(TINY).stages()), dict(load_spec(pipeline_file("tiny")).stages())
    assert all(ours[key] == quickstart[key] for key in ("preprocess", "text", "teacher"))
    students = {key for key in ours if key.startswith("distill:")}
    assert len(students) == 8 and students.isdisjoint(quickstart)
