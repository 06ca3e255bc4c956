"""The CLI's progress bars (`vlkd.cli.progress`) read the progress a job records in its state in the store, not its
log: whatever the backend, and whatever the job's log lines say."""

from __future__ import annotations

import io
import json
import re
import threading
from typing import Any

import pytest
from rich.console import Console

from vlkd.artifacts import ArtifactStore
from vlkd.backends.base import JobState, JobStatus
from vlkd.cli import progress as cli_progress
from vlkd.joblog import STATE_KEY
from vlkd.jobstate import remember
from vlkd.pipeline import StageRun

JOB = "vlkd-distill-test"


def record_progress(store: ArtifactStore, done: int, total: int = 8) -> None:
    """What a job's recorder keeps in its state (`JobRecorder.progress`)."""
    eta = 0.0 if done >= total else (total - done) / 2.0
    progress = {"done": done, "total": total, "unit": "step", "rate": 2.0, "eta_seconds": eta}
    state = {"job_id": JOB, "state": "running", "progress": progress, "updated_at": "2026-01-01T00:00:00+00:00"}
    store.storage.write_bytes(STATE_KEY.format(job_id=JOB), json.dumps(state).encode())


class SteppingBackend:
    """A backend whose job makes 4 steps between two status calls and ends at step 8; it has no log to read."""

    name = "fake"

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self.steps = [4, 8]

    def status(self, job_id: str, record: dict[str, Any]) -> JobStatus:
        if not self.steps:
            return JobStatus(job_id, JobState.SUCCEEDED)
        record_progress(self.store, self.steps.pop(0))
        return JobStatus(job_id, JobState.RUNNING)

    def logs(self, job_id: str, record: dict[str, Any], follow: bool = False) -> Any:
        raise AssertionError("a progress bar reads the job's state, not its log")


@pytest.fixture
def terminal(monkeypatch) -> io.StringIO:
    """The CLI's stderr as a terminal, written to a string."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system=None, width=120)
    monkeypatch.setattr(cli_progress, "err_console", console)
    monkeypatch.setattr(cli_progress, "POLL_SECONDS", 0.01)
    return out


def test_a_stage_bar_follows_the_progress_its_job_recorded_in_the_store(tmp_path, terminal):
    store = ArtifactStore.open((tmp_path / "store").as_uri())
    remember(JOB, {"backend": "fake", "options": {}, "record": {}, "stage": "distill", "store": store.uri})
    reporter = cli_progress.StageReporter(verbose=False, keys=["distill:s"])
    reporter.bars = True

    final = reporter.follow(StageRun("distill:s", "distill", job_id=JOB), SteppingBackend(store), {})

    assert final == JobState.SUCCEEDED
    shown = terminal.getvalue()
    assert "8/8 steps" in shown and "eta 0:00:00" in shown and "distill:s succeeded" in shown


class OverlappingBackend:
    """Jobs that each run until every job has been polled while running: followed one after the other, the first
    never ends (a BrokenBarrierError after a second fails the test instead)."""

    name = "fake"

    def __init__(self, jobs: int) -> None:
        self.overlapped = threading.Barrier(jobs, timeout=1.0)
        self.polled: set[str] = set()

    def status(self, job_id: str, record: dict[str, Any]) -> JobStatus:
        if job_id not in self.polled:
            self.polled.add(job_id)
            self.overlapped.wait()
            return JobStatus(job_id, JobState.RUNNING)
        return JobStatus(job_id, JobState.SUCCEEDED)


def test_stages_followed_at_once_share_one_display_which_leaves_every_bar_when_the_last_ends(terminal):
    """rich allows one live display at a time: a display per stage would fail the second stage's follow."""
    keys = ["distill:a", "distill:b"]
    reporter = cli_progress.StageReporter(verbose=False, keys=keys, at_once=True)
    reporter.bars = True
    backend, states = OverlappingBackend(len(keys)), {}

    def follow(key: str) -> None:
        states[key] = reporter.follow(StageRun(key, "distill", job_id=f"job-{key[-1]}"), backend, {})

    threads = [threading.Thread(target=follow, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert states == dict.fromkeys(keys, JobState.SUCCEEDED)
    assert "distill:a succeeded" in terminal.getvalue() and "distill:b succeeded" in terminal.getvalue()
    assert reporter.display is None  # ended with the last stage's bar


def test_a_verbose_log_line_starts_with_its_stage_where_stages_run_at_once(capsys):
    class Logging:
        def logs(self, job_id: str, record: dict[str, Any], follow: bool = False) -> Any:
            yield "step 1\n"

        def status(self, job_id: str, record: dict[str, Any]) -> JobStatus:
            return JobStatus(job_id, JobState.SUCCEEDED)

    for at_once, shown in ((True, "teacher | step 1\n"), (False, "step 1\n")):
        reporter = cli_progress.StageReporter(verbose=True, keys=["teacher"], at_once=at_once)
        assert reporter.follow(StageRun("teacher", "teacher", job_id=JOB), Logging(), {}) == JobState.SUCCEEDED
        assert capsys.readouterr().out == shown


def test_the_line_of_each_ended_stage_lines_up_with_the_runs_longest_key(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(cli_progress, "err_console", Console(file=out, width=200))
    keys = ["teacher", "distill:tiny-kd-soft_label-crd-nst", "eval"]
    reporter = cli_progress.StageReporter(verbose=False, keys=keys)
    for key in keys:
        reporter.done(StageRun(key, key.split(":")[0], "skipped", outputs=[f"out/{key}"]))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and len({line.index("skipped") for line in lines}) == 1
    assert lines[1].startswith("distill:tiny-kd-soft_label-crd-nst skipped")


def test_a_stage_that_ended_without_being_followed_gets_its_line_on_a_terminal_too(terminal):
    """A retried pipeline finds a stage its own job published meanwhile: no bar showed it, so a line does."""
    reporter = cli_progress.StageReporter(verbose=False, keys=["teacher"])
    reporter.bars = True
    reporter.done(StageRun("teacher", "teacher", "succeeded", job_id=JOB, outputs=["teacher/t:v1"]))
    assert re.search(r"^teacher +succeeded +teacher/t:v1$", terminal.getvalue(), re.M), terminal.getvalue()


def test_the_bar_shows_done_total_unit_and_the_jobs_own_eta():
    bars = cli_progress.Progress(cli_progress.TextColumn(""))
    task = bars.add_task("teacher:t", total=None, unit="", eta="")
    cli_progress.show_progress(bars, task, {"done": 3, "total": 8, "unit": "step", "rate": 0.5, "eta_seconds": 3725})
    shown = bars.tasks[0]
    assert (shown.completed, shown.total, shown.fields) == (3, 8, {"unit": "steps", "eta": "1:02:05"})
    cli_progress.show_progress(bars, task, {"done": 3, "total": 8, "unit": "step", "rate": None, "eta_seconds": None})
    assert bars.tasks[0].fields["eta"] == "-:--:--"  # not known before a rate is
