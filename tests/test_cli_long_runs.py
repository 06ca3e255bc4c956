"""A long run never surprises its user: an ETA says its days, a run followed without a terminal (a log, a pipe, CI)
says how far it is at a steady interval, and `vlkd pipeline run` shows each stage once."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from vlkd.artifacts import ArtifactStore
from vlkd.backends.base import JobState, JobStatus
from vlkd.cli import progress as cli_progress
from vlkd.joblog import STATE_KEY
from vlkd.jobstate import remember
from vlkd.pipeline import PipelineRun, StageRun

JOB = "vlkd-teacher-long"
FOUR_HUNDRED_DAYS = 400 * 86400 + 15 * 3600 + 34 * 60 + 8
PIPELINE = Path(__file__).parent.parent / "examples" / "tiny" / "pipeline.yaml"


def test_an_eta_past_a_day_says_its_days():
    from vlkd.durations import clock

    assert clock(FOUR_HUNDRED_DAYS) == "400d 15:34:08"
    assert clock(86400) == "1d 00:00:00"
    assert clock(3725) == "1:02:05"


def test_a_stage_bar_shows_an_eta_of_400_days_as_400_days():
    bars = cli_progress.Progress(cli_progress.TextColumn(""))
    task = bars.add_task("teacher", total=None, unit="", eta="")
    progress = {"done": 1, "total": 10**9, "unit": "step", "rate": 0.5, "eta_seconds": FOUR_HUNDRED_DAYS}
    cli_progress.show_progress(bars, task, progress)
    assert bars.tasks[0].fields["eta"] == "400d 15:34:08"


class SlowBackend:
    """A job that records a step of progress at each status call and ends after `polls` of them; its log stays
    silent, as a teacher's does between its log lines."""

    name = "fake"

    def __init__(self, store: ArtifactStore, polls: int) -> None:
        self.store, self.polls, self.done = store, polls, 0

    def status(self, job_id: str, record: dict[str, Any]) -> JobStatus:
        if self.done >= self.polls:
            return JobStatus(job_id, JobState.SUCCEEDED)
        self.done += 1
        eta = (1000 - self.done) / 0.5
        progress = {"done": self.done, "total": 1000, "unit": "step", "rate": 0.5, "eta_seconds": eta}
        state = {"job_id": job_id, "state": "running", "progress": progress, "updated_at": "2026-01-01T00:00:00+00:00"}
        self.store.storage.write_bytes(STATE_KEY.format(job_id=job_id), json.dumps(state).encode())
        return JobStatus(job_id, JobState.RUNNING)

    def logs(self, job_id: str, record: dict[str, Any], follow: bool = False) -> Any:
        while follow and not self.status(job_id, record).state.finished:
            yield from ()


@pytest.fixture
def piped(monkeypatch) -> io.StringIO:
    """The CLI's stderr as a pipe (not a terminal), written to a string; polls and heartbeats a few ms apart."""
    out = io.StringIO()
    monkeypatch.setattr(cli_progress, "err_console", Console(file=out, width=200))
    monkeypatch.setattr(cli_progress, "POLL_SECONDS", 0.001)
    monkeypatch.setattr(cli_progress, "HEARTBEAT_SECONDS", 0.005, raising=False)
    return out


def test_a_stage_followed_without_a_terminal_says_how_far_it_is_at_a_steady_interval(tmp_path, piped):
    store = ArtifactStore.open((tmp_path / "store").as_uri())
    remember(JOB, {"backend": "fake", "options": {}, "record": {}, "stage": "teacher", "store": store.uri})
    reporter = cli_progress.StageReporter(verbose=False, keys=["teacher"])
    assert not reporter.bars

    final = reporter.follow(StageRun("teacher", "teacher", job_id=JOB), SlowBackend(store, polls=200), {})

    assert final == JobState.SUCCEEDED
    beats = [line for line in piped.getvalue().splitlines() if line.startswith("teacher ")]
    assert len(beats) >= 2, piped.getvalue()
    pattern = r"teacher +running +\d+ s  (\d+)/1000 steps, 0\.5 steps/s, eta \d+:\d\d:\d\d"
    assert all(re.fullmatch(pattern, beat) for beat in beats), beats
    done = [int(re.fullmatch(pattern, beat).group(1)) for beat in beats]
    assert done == sorted(done) and done[-1] > done[0]  # each beat says how far the job is now


def test_pipeline_run_without_a_terminal_shows_each_stage_once(tmp_path, monkeypatch, capsys):
    """Each stage's line comes as the stage ends; the run's end adds no second copy of them."""
    import vlkd.pipeline
    from vlkd.cli.pipeline import run

    def stages_that_end_at_once(pipeline, store, backend, options, reporter, force, image) -> PipelineRun:
        stages = [StageRun(key, spec.stage) for key, spec in pipeline.stages()]
        for stage in stages:
            stage.state, stage.outputs = "succeeded", [f"out/{stage.key}:v1"]
            reporter.done(stage)
        return PipelineRun(pipeline.name, store.uri, backend.name, "2026-01-01T00:00:00+00:00", stages)

    monkeypatch.setattr(vlkd.pipeline, "run_pipeline", stages_that_end_at_once)
    store = (tmp_path / "store").as_uri()
    run(PIPELINE, "local", None, None, None, None, store, False, False)

    shown = capsys.readouterr().err.splitlines()
    for key in ("preprocess", "text", "teacher", "distill:tiny-nst-crd", "distill:tiny-baseline", "eval"):
        assert sum(line.startswith(f"{key} ") for line in shown) == 1, (key, shown)
