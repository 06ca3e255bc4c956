"""Charts and report.md say what a reader needs and nothing that misleads: every curve on a scale of its own, the
step whose weights were published, flagged runs, whole epochs, retrieval against chance with its example page,
and each model's lineage in plain words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from vlkd.artifacts import ArtifactStore, collect_files
from vlkd.evaluation.charts import write_charts, write_curves
from vlkd.evaluation.report import render_markdown, render_table, write_report
from vlkd.evaluation.results import RunRecord, build_results
from vlkd.evaluation.table_text import parse_tables

FLAT = [[step, 0.695 + (0.004 if step % 2 else -0.004)] for step in range(1, 41)]
FALLING = [[step, 0.7 * 0.97**step] for step in range(1, 41)]
STUDENT = {
    "teacher": "teacher/t:v1",
    "kd": {"nst": 1.0, "crd": 1.0},
    "corpus": "corpus/c:v1",
    "published_step": 200,
    "steps": 300,
    "kd_balance": None,
    "pretrained_max_len": 32,
}


@pytest.fixture
def drawn(monkeypatch) -> list[Figure]:
    """Every figure saved while the test runs, as it was saved."""
    figures: list[Figure] = []
    save = Figure.savefig

    def keep(figure: Figure, *args, **kwargs):
        figures.append(figure)
        return save(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def labels(axes) -> list[str]:
    return [line.get_label() for line in axes.get_lines()]


@pytest.fixture
def student(tmp_path) -> ArtifactStore:
    """A store holding a student whose metrics log has its losses (2-7) and its validation perplexity (about 60),
    published at step 200 of 300."""
    folder = tmp_path / "student" / "logs"
    folder.mkdir(parents=True)
    lines = [
        {"step": 100, "time": 1.0, "loss": 7.0, "mlm": 6.5},
        {"step": 100, "time": 1.1, "val_loss": 6.0, "val_mlm": 4.4, "val_perplexity": 81.5},
        {"step": 200, "time": 2.0, "loss": 4.0, "mlm": 3.5},
        {"step": 200, "time": 2.1, "val_loss": 4.2, "val_mlm": 4.1, "val_perplexity": 60.3},
        {"step": 300, "time": 3.0, "loss": 2.5, "mlm": 2.2},
        {"step": 300, "time": 3.1, "val_loss": 4.3, "val_mlm": 4.2, "val_perplexity": 66.7},
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    store = ArtifactStore.open((tmp_path / "store").as_uri())
    metrics = {"published_step": 200, "steps": 300, "best_step": 200}
    store.publish("student", "s", collect_files([tmp_path / "student"]), metrics=metrics)
    return store


def test_a_students_plot_keeps_perplexity_off_the_losses_axis(student, drawn, tmp_path):
    from vlkd.cli.report import show

    show("student/s", tmp_path / "curves.png", student.uri)
    (figure,) = drawn
    losses = next(axes for axes in figure.axes if "loss" in labels(axes))
    assert "val_perplexity" not in labels(losses)
    assert losses.get_ylim()[1] < 10  # the losses fill their axis


def test_a_teachers_plot_keeps_how_its_batches_were_drawn_off_the_losses_axis(drawn, tmp_path):
    from vlkd.curves import plot_curves

    training = [{"step": 50, "loss": 2.5, "ct": 2.0, "videos_per_batch": 31.0, "same_video_negatives": 0.01}]
    validation = [{"step": 100, "val_loss": 1.5, "val_videos_per_batch": 25.0, "val_r1": 3.0, "val_median_rank": 9.0}]
    plot_curves(training, validation, "teacher/t:v1", tmp_path / "curves.png")
    (figure,) = drawn
    losses = next(axes for axes in figure.axes if "loss" in labels(axes))
    assert labels(losses) == ["loss", "ct", "val_loss"]


def test_a_training_plot_marks_the_step_its_weights_were_published_at(student, drawn, tmp_path):
    from vlkd.cli.report import show

    show("student/s", tmp_path / "curves.png", student.uri)
    (figure,) = drawn
    marks = [
        line
        for axes in figure.axes
        for line in axes.get_lines()
        if list(line.get_xdata()) == [200, 200] and "published" in line.get_label()
    ]
    assert marks and "step 200" in marks[0].get_label()


def flagged_results() -> dict:
    """Row A learns; row B's seed 1 learns nothing (flagged)."""
    learnt = {"loss_curve": FALLING, "predicted": {"0": 50, "1": 50}}
    records = [
        RunRecord("A", "student/a:v1", "sst2", 0, {"accuracy": 80.0}, STUDENT, **learnt),
        RunRecord("A", "student/a:v1", "sst2", 1, {"accuracy": 82.0}, STUDENT, **learnt),
        RunRecord("B", "student/b:v1", "sst2", 0, {"accuracy": 70.0}, STUDENT, **learnt),
        RunRecord("B", "student/b:v1", "sst2", 1, {"accuracy": 50.0}, STUDENT, loss_curve=FLAT),
    ]
    return build_results(records, "A")


def test_a_bar_chart_marks_the_bar_of_a_flagged_cell(drawn, tmp_path):
    write_charts(flagged_results(), tmp_path)
    (figure,) = drawn
    (axes,) = figure.axes
    bars = [patch for patch in axes.patches if patch.get_width() > 0]
    assert [bool(bar.get_hatch()) for bar in bars] == [False, True]
    assert [text.get_text() for text in axes.texts] == ["81.0", "60.0 !"]


def test_dev_curves_tick_whole_epochs(drawn, tmp_path):
    dev = [[1, 60.0], [2, 70.0], [3, 75.0]]
    records = [RunRecord("A", "student/a:v1", "sst2", seed, {"accuracy": 75.0}, dev_curve=dev) for seed in (0, 1)]
    write_curves(build_results(records), tmp_path)
    (figure,) = drawn
    figure.canvas.draw()
    ticks = [tick for axes in figure.axes for tick in axes.get_xticks() if 1 <= tick <= 3]
    assert ticks and all(float(tick).is_integer() for tick in ticks), ticks


RETRIEVAL = {"teacher/t:v1": {"r1": 10.9, "r5": 46.9, "r10": 71.9, "median_rank": 6.0, "queries": 64.0}}


def test_retrieval_numbers_come_with_chance_for_their_number_of_queries():
    results = build_results([], retrieval=RETRIEVAL)
    assert parse_tables(render_markdown(results))[-1][1:] == [
        ["teacher/t:v1", "10.9", "46.9", "71.9", "6.0"],
        ["chance (64 queries)", "1.6", "7.8", "15.6", "32.5"],
    ]
    assert render_table(results).splitlines()[-1].split() == ["chance", "(64", "queries)", "1.6", "7.8", "15.6", "32.5"]


def test_report_md_links_the_retrieval_example_page(tmp_path):
    page = tmp_path / "retrieval" / "index.html"
    page.parent.mkdir()
    page.write_text("<html></html>")
    write_report(build_results([], retrieval=RETRIEVAL), tmp_path, charts=False)
    assert "[retrieval/index.html](retrieval/index.html)" in (tmp_path / "report.md").read_text()


def test_the_models_section_says_which_step_the_published_weights_are_from_in_plain_words():
    markdown = render_markdown(flagged_results())
    models = markdown.split("## Models\n\n", 1)[1].split("\n\n", 1)[0]
    assert models.splitlines()[0] == (
        "- **A**: `student/a:v1`; teacher: teacher/t:v1; kd: nst 1.0, crd 1.0; corpus: corpus/c:v1; "
        "published weights: step 200 of 300; pretrained max len: 32"
    )
    assert "{'" not in markdown


def test_a_model_with_no_kd_says_none():
    records = [RunRecord("base", "student/b:v1", "sst2", 0, {"accuracy": 80.0}, {**STUDENT, "kd": {}})]
    assert "kd: none;" in render_markdown(build_results(records))


def test_write_report_still_writes_every_chart(tmp_path):
    written = write_report(flagged_results(), tmp_path)
    assert {"report.md", "results.json", "charts/sst2.png", "charts/training_loss.png"} <= set(written)
    assert Path(written["charts/sst2.png"]).read_bytes()[:4] == b"\x89PNG"
