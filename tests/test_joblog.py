"""A job's record in the store (`vlkd.joblog`): its output copied there in chunks while it runs, its state and
progress, one worker's lines picked out of the driver's log; and the training curves a run keeps and `vlkd report`
draws."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from vlkd.artifacts import ArtifactStore
from vlkd.curves import plot_curves, read_curves
from vlkd.joblog import (
    ENDED,
    HEARTBEAT_SECONDS,
    LOST_AFTER,
    STATE_KEY,
    WORKER_BANNER,
    JobRecorder,
    read_log,
    read_progress,
    read_state,
    worker_lines,
)

RECORDED_JOB = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from vlkd.artifacts import ArtifactStore
    from vlkd.joblog import JobRecorder

    store = ArtifactStore.open(sys.argv[1])
    with JobRecorder(store.storage, "job-1", interval=0.2, heartbeat=0.4):
        print("from python's stdout", flush=True)
        print("from python's stderr", file=sys.stderr, flush=True)
        os.write(1, b"from the file descriptor itself\\n")
        {before_pause}
        go_on = Path(sys.argv[2])
        while not go_on.exists():  # the test reads the store while the job still runs
            time.sleep(0.05)
        print("after the pause", flush=True)
        {ending}
    """
)


def run_recorded_job(
    tmp_path: Path,
    ending: str,
    while_paused: Callable[[ArtifactStore], None] = lambda store: None,
    before_pause: str = "pass",
) -> tuple[subprocess.CompletedProcess, ArtifactStore, list[str]]:
    """Run a recorded job in its own process (it takes over file descriptors 1 and 2) and return what the store
    held while the job was paused, before it finished; `while_paused` looks at the store meanwhile."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    store = ArtifactStore.open((tmp_path / "store").as_uri())
    script = tmp_path / "job.py"
    script.write_text(RECORDED_JOB.format(ending=ending, before_pause=before_pause))
    go_on = tmp_path / "go-on"
    go_on.unlink(missing_ok=True)
    before = len(list(read_log(store.storage, "job-1")))  # what earlier attempts left
    job = subprocess.Popen(
        [sys.executable, str(script), store.uri, str(go_on)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while len(while_running := list(read_log(store.storage, "job-1"))[before:]) < 3:
        assert time.monotonic() < deadline and job.poll() is None, job.communicate()
        time.sleep(0.1)
    assert read_state(store.storage, "job-1")["state"] == "running"
    while_paused(store)
    go_on.touch()
    out, err = job.communicate(timeout=60)
    return subprocess.CompletedProcess(job.args, job.returncode, out, err), store, while_running


def test_output_reaches_the_store_while_the_job_runs_and_still_reaches_the_console(tmp_path):
    finished, store, while_running = run_recorded_job(tmp_path, "pass")
    assert sorted(while_running) == sorted(
        ["from python's stdout\n", "from python's stderr\n", "from the file descriptor itself\n"]
    )
    assert finished.returncode == 0
    assert finished.stdout == "from python's stdout\nfrom the file descriptor itself\nafter the pause\n"
    assert finished.stderr == "from python's stderr\n"  # the streams stay apart on the console
    assert list(read_log(store.storage, "job-1"))[-1] == "after the pause\n"
    assert len(list(store.storage.list("jobs/job-1/log/"))) >= 2  # written in chunks, not once at the end
    state = read_state(store.storage, "job-1")
    assert state["state"] == ENDED and state["exit_code"] == 0


def test_output_written_just_before_the_job_ends_is_not_lost(tmp_path, monkeypatch):
    """The job's last lines and the stop can both come while the copying thread waits for output with nothing
    there yet: it must drain them rather than take the stop for 'all copied' (a CI run once lost the last line)."""
    recorder = JobRecorder(ArtifactStore.open((tmp_path / "store").as_uri()).storage, "job-1")
    read_end, write_end = os.pipe()  # the job writes to `write_end`
    console_read, console_write = os.pipe()  # where its output went before
    recorder._pipes = {read_end: 1}
    recorder._saved = {1: console_write}
    waited = select.select
    ended = []

    def wait_that_the_job_ends_during(readers, writers, errors, timeout):
        ready = waited(readers, writers, errors, timeout)
        if not ready[0] and not ended:  # nothing yet: now the job writes its last line and stops, as __exit__ does
            os.write(write_end, b"the last line\n")
            recorder._stop.set()
            ended.append(True)
        return ready

    monkeypatch.setattr(select, "select", wait_that_the_job_ends_during)
    recorder._tee()

    assert bytes(recorder._buffer) == b"the last line\n"
    assert os.read(console_read, 100) == b"the last line\n"
    for descriptor in (read_end, write_end, console_read, console_write):
        os.close(descriptor)


def test_the_exit_code_and_a_crash_traceback_are_recorded(tmp_path):
    finished, store, _ = run_recorded_job(tmp_path, "sys.exit(3)")
    assert finished.returncode == 3 and read_state(store.storage, "job-1")["exit_code"] == 3

    finished, store, _ = run_recorded_job(tmp_path / "crash", "raise RuntimeError('worker lost')")
    assert finished.returncode == 1 and "RuntimeError: worker lost" in finished.stderr
    log = "".join(read_log(store.storage, "job-1"))
    assert "Traceback (most recent call last)" in log and log.rstrip().endswith("RuntimeError: worker lost")
    assert read_state(store.storage, "job-1")["exit_code"] == 1


def test_a_running_job_refreshes_its_heartbeat_and_nothing_else(tmp_path):
    beats = []

    def watch(store: ArtifactStore) -> None:
        first = read_state(store.storage, "job-1")
        deadline = time.monotonic() + 30
        while (later := read_state(store.storage, "job-1"))["updated_at"] == first["updated_at"]:
            assert time.monotonic() < deadline, "no heartbeat while the job ran"
            time.sleep(0.05)
        beats.extend([first, later])

    run_recorded_job(tmp_path, "pass", while_paused=watch)

    first, later = beats
    assert later["updated_at"] > first["updated_at"]
    beat = {"updated_at": None, "stored_at": None}
    assert later | beat == first | beat  # still running, nothing else changed
    assert LOST_AFTER.total_seconds() >= 10 * HEARTBEAT_SECONDS  # a few missed beats (a store's hiccup) are not lost


def test_progress_events_in_the_output_are_the_states_progress_while_the_job_runs_and_after(tmp_path):
    """Reported in the job's own process or forwarded by Ray from a worker (its prefix in colour), even when the
    line arrives in pieces; a line that only mentions the marker is no event. The ended state keeps the last."""
    forwarded = [
        'os.write(1, b\'\\x1b[36m(RayTrainWorker pid=7)\\x1b[0m vlkd-progress {"done": 4, "tot\')',
        "time.sleep(0.3)",
        'os.write(1, b\'al": 8, "unit": "step", "rate": 2.0}\\n\')',
        "print('a line about vlkd-progress {not json}', flush=True)",
    ]
    while_running = []

    def progress_while_running(store: ArtifactStore) -> None:
        deadline = time.monotonic() + 30
        while read_progress(store.storage, "job-1") is None:
            assert time.monotonic() < deadline, "no progress in the state while the job ran"
            time.sleep(0.05)
        while_running.append(read_progress(store.storage, "job-1"))

    finished, store, _ = run_recorded_job(
        tmp_path,
        "from vlkd.joblog import report_progress; report_progress(8, 8, 'step', 2.5)",
        while_paused=progress_while_running,
        before_pause="; ".join(forwarded),
    )
    assert finished.returncode == 0, finished.stderr
    assert while_running == [{"done": 4, "total": 8, "unit": "step", "rate": 2.0, "eta_seconds": 2.0}]
    state = read_state(store.storage, "job-1")
    assert state["state"] == ENDED
    assert state["progress"] == {"done": 8, "total": 8, "unit": "step", "rate": 2.5, "eta_seconds": 0.0}


def test_a_resubmitted_job_appends_to_its_log(tmp_path):
    run_recorded_job(tmp_path, "pass")
    _, store, _ = run_recorded_job(tmp_path, "print('second attempt')")
    lines = list(read_log(store.storage, "job-1"))
    assert lines.count("after the pause\n") == 2 and lines[-1] == "second attempt\n"


def test_a_workers_lines_are_found_by_the_pid_its_banner_named():
    lines = [
        "2026-11-29 INFO vlkd: job started\n",
        f"(RayTrainWorker pid=101) {WORKER_BANNER.format(rank=0, world=2)}\n",
        f"\x1b[36m(RayTrainWorker pid=202, ip=10.0.0.7)\x1b[0m {WORKER_BANNER.format(rank=1, world=2)}\n",
        "(RayTrainWorker pid=101) step 10 loss 3.2\n",
        "\x1b[36m(RayTrainWorker pid=202, ip=10.0.0.7)\x1b[0m step 10 loss 3.1\n",
        "(RayTrainWorker pid=202, ip=10.0.0.7) Fatal Python error: Segmentation fault\n",
        "(TrainController pid=50) worker group failed; restarting from the latest checkpoint\n",
        f"(RayTrainWorker pid=303, ip=10.0.0.8) {WORKER_BANNER.format(rank=1, world=2)}\n",
        "(RayTrainWorker pid=303, ip=10.0.0.8) resumed from step 6\n",
    ]
    assert list(worker_lines(iter(lines), 1)) == [
        f"{WORKER_BANNER.format(rank=1, world=2)}\n",
        "step 10 loss 3.1\n",
        "Fatal Python error: Segmentation fault\n",
        f"{WORKER_BANNER.format(rank=1, world=2)}\n",
        "resumed from step 6\n",
    ]
    assert list(worker_lines(iter(lines), 0))[-1] == "step 10 loss 3.2\n"
    assert list(worker_lines(iter(lines), 5)) == []


def test_training_curves_are_read_in_step_order_and_drawn(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    records = [
        {"step": 50, "time": 1.0, "loss": 7.5, "ct": 1.9, "mlm": 5.6, "lr": 1e-3},
        {"step": 100, "time": 2.0, "loss": 4.8, "ct": 1.8, "mlm": 3.0, "lr": 1e-3},
        {"step": 100, "time": 2.1, "val_loss": 3.9, "val_r1": 1.5, "val_r10": 21.9, "val_median_rank": 24.0},
    ]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    training, validation = read_curves(metrics)
    assert [r["step"] for r in training] == [50, 100] and validation == records[2:]
    png = plot_curves(training, validation, "teacher/t:v1", tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def trained(tmp_path) -> ArtifactStore:
    """A store holding a teacher-shaped artifact with a metrics log (what `report show` reads)."""
    from vlkd.artifacts import collect_files

    folder = tmp_path / "teacher" / "logs"
    folder.mkdir(parents=True)
    lines = [
        {"step": 10, "time": 1.0, "loss": 7.0},
        {"step": 10, "time": 1.1, "val_loss": 6.0, "val_r1": 3.0, "val_r10": 30.0, "val_median_rank": 9.0},
        {"step": 20, "time": 2.0, "loss": 5.0},
        {"step": 20, "time": 2.1, "val_loss": 4.5, "val_r1": 6.0, "val_r10": 40.0, "val_median_rank": 6.0},
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    store = ArtifactStore.open((tmp_path / "store").as_uri())
    store.publish("teacher", "t", collect_files([tmp_path / "teacher"]))
    return store


def test_report_show_prints_a_runs_validation_curve_and_plots_it(vlkd_cli, trained, tmp_path):
    result = vlkd_cli("report", "show", "teacher/t", "--plot", str(tmp_path / "t.png"), "--store", trained.uri)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "teacher/t:v1: 2 training records, 2 validations"
    assert lines[1].split() == ["step", "val_loss", "val_r1", "val_r10", "val_median_rank"]
    assert lines[3].split() == ["20", "4.5", "6", "40", "6"]
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_a_line_written_in_two_pieces_reaches_the_store_whole_whatever_the_other_stream_wrote_between(tmp_path):
    """stdout and stderr reach the recorder through two pipes: a line of one must not take the other's output into
    its middle (`print` writes a line's text and its newline apart)."""
    pieces = (
        'sys.stderr.write("half a line on stderr"); sys.stderr.flush(); time.sleep(0.03); '
        'os.write(1, b"a whole line on stdout\\n"); time.sleep(0.03); sys.stderr.write(" and its end\\n"); '
        "sys.stderr.flush()"
    )
    finished, store, _ = run_recorded_job(tmp_path, "pass", before_pause=pieces)
    assert finished.returncode == 0
    lines = list(read_log(store.storage, "job-1"))
    assert "half a line on stderr and its end\n" in lines and "a whole line on stdout\n" in lines, lines


def test_the_state_is_dated_by_the_stores_clock_not_by_the_clock_that_wrote_it(store):
    """A pod whose clock is a year off writes `updated_at` by it; `stored_at` is when the store got the state (its
    own clock: the file's mtime, S3's LastModified against its Date), on the reader's clock."""
    written = {"job_id": "job-1", "state": "running", "updated_at": "2025-11-29T12:00:00+00:00"}
    store.storage.write_bytes(STATE_KEY.format(job_id="job-1"), json.dumps(written).encode())
    now = datetime.now(timezone.utc)

    state = read_state(store.storage, "job-1", now)

    assert state["updated_at"] == written["updated_at"]
    assert now - timedelta(seconds=2) <= datetime.fromisoformat(state["stored_at"]) <= now
    assert read_state(store.storage, "job-2", now) is None
