"""`vlkd status` when the backend and the job's own record disagree (`vlkd.backends.reconcile`): the driver's
recorded end says how the job ended, the backend says whether anything still runs, and a driver that stopped beating
while the backend says it runs is LOST. Each case pairs a recorded RayJob status (as in test_k8s.py) with a
state.json written to a store (file://, and the moto S3 server where the store's clock matters), read back as
`vlkd status` reads it; no cluster. How long ago a record was written is the store's word: a test makes the store
date it (a file's mtime, the S3 server's LastModified) and, apart, the pod's clock (`updated_at`)."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from test_k8s import JOB_ID, paper_job, stored

from vlkd.artifacts import ArtifactStore
from vlkd.backends import submission
from vlkd.backends.base import JobState, JobStatus
from vlkd.backends.k8s import rayjob_status
from vlkd.backends.k8s_render import render_rayjob
from vlkd.backends.reconcile import reconcile
from vlkd.joblog import LOST_AFTER, STATE_KEY, read_state
from vlkd.jobstate import remember
from vlkd.storage import FileStorage, Storage

NOW = datetime(2026, 11, 29, 12, 10, 0, tzinfo=timezone.utc)
GONE = f"RayJob vlkd/{JOB_ID} no longer exists (cancelled or deleted)"  # what the k8s backend says of a deleted one


def rayjob(**status: Any) -> JobStatus:
    """The status of the teacher's RayJob as KubeRay reports it."""
    return rayjob_status(stored(render_rayjob(paper_job("teacher", JOB_ID), "vlkd"), **status))


RUNNING = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
SUCCEEDED = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "message": "Job finished successfully."}
FAILED = {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed", "message": "exit 1"}
RETRYING = {"jobDeploymentStatus": "Retrying", "jobStatus": "FAILED"}


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore.open((tmp_path / "store").as_uri())


def record(
    store: ArtifactStore,
    state: str,
    at: datetime,
    pod_clock: timedelta = timedelta(0),
    now: datetime = NOW,
    **extra: Any,
) -> dict[str, Any]:
    """Write the job's state.json as JobRecorder does, `now - at` ago by the store's clock, from a pod whose clock is
    `pod_clock` off, and read it back as `vlkd status` does at `now`."""
    key = STATE_KEY.format(job_id=JOB_ID)
    written = {"job_id": JOB_ID, "state": state, **extra, "updated_at": (at + pod_clock).isoformat()}
    store.storage.write_bytes(key, json.dumps(written, indent=2).encode())
    written_ago(store.storage, key, now - at)
    return read_state(store.storage, JOB_ID, now)


def written_ago(storage: Storage, key: str, ago: timedelta) -> None:
    """Make the store date the object `key` `ago` before its own now: a file's mtime, or the moto S3 server's record
    of the object (the server runs in this process: tests/conftest.py)."""
    if isinstance(storage, FileStorage):
        then = time.time() - ago.total_seconds()
        os.utime(storage.root / key, (then, then))
        return
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    bucket = s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets[storage.bucket]
    bucket.keys["/".join(p for p in (storage.prefix, key) if p)].last_modified = (
        datetime.now(timezone.utc).replace(tzinfo=None) - ago
    )


def at(hh_mm: str) -> datetime:
    hours, minutes = map(int, hh_mm.split(":"))
    return NOW.replace(hour=hours, minute=minutes)


@pytest.mark.parametrize(
    ("backend", "state", "when", "extra", "expected_state", "expected_message"),
    [
        pytest.param(
            RUNNING, "ended", "12:03", {"exit_code": 1}, JobState.FAILED,
            "the driver ended with exit code 1 at 12:03 (RayJob still says Running: KubeRay has not noticed)",
            id="driver-failed-rayjob-running",
        ),
        pytest.param(
            RUNNING, "ended", "12:03", {"exit_code": 0}, JobState.SUCCEEDED,
            "the driver ended with exit code 0 at 12:03 (RayJob still says Running: KubeRay has not noticed)",
            id="driver-succeeded-rayjob-running",
        ),
        pytest.param(
            RETRYING, "ended", "12:03", {"exit_code": 1}, JobState.PENDING,
            "Retrying: starting a new RayCluster after a failure (backoffLimit); the last attempt's driver ended "
            "with exit code 1 at 12:03",
            id="driver-failed-rayjob-retrying",
        ),
        pytest.param(
            SUCCEEDED, "ended", "12:03", {"exit_code": 1}, JobState.FAILED,
            "the driver ended with exit code 1 at 12:03 (RayJob says Succeeded: Complete: Ray job SUCCEEDED: Job "
            "finished successfully.)",
            id="driver-failed-rayjob-succeeded",
        ),
        pytest.param(
            FAILED, "ended", "12:03", {"exit_code": 0}, JobState.SUCCEEDED,
            "the driver ended with exit code 0 at 12:03 (RayJob says Failed: Ray job FAILED: AppFailed: exit 1)",
            id="driver-succeeded-rayjob-failed",
        ),
        pytest.param(
            None, "ended", "12:03", {"exit_code": 0}, JobState.SUCCEEDED,
            f"the driver ended with exit code 0 at 12:03 (RayJob says Stopped: {GONE})",
            id="driver-succeeded-rayjob-deleted",
        ),
        pytest.param(
            None, "ended", "12:03", {"exit_code": 1}, JobState.STOPPED,
            f"{GONE}; the driver ended with exit code 1 at 12:03",  # cancelled: the driver exits non-zero
            id="driver-failed-rayjob-deleted",
        ),
        pytest.param(
            FAILED, "running", "12:09", {}, JobState.FAILED,
            "Failed: Ray job FAILED: AppFailed: exit 1; the driver last recorded itself running at 12:09 and "
            "recorded no end",
            id="rayjob-failed-driver-running",
        ),
        pytest.param(
            None, "running", "12:09", {}, JobState.STOPPED,
            f"{GONE}; the driver last recorded itself running at 12:09 and recorded no end",
            id="rayjob-deleted-driver-running",
        ),
        pytest.param(
            SUCCEEDED, "running", "12:09", {}, JobState.SUCCEEDED,
            "Complete: Ray job SUCCEEDED: Job finished successfully.; the driver last recorded itself running at "
            "12:09 and recorded no end",
            id="rayjob-succeeded-driver-running",
        ),
        pytest.param(
            RUNNING, "running", "12:03", {}, JobState.LOST,
            "the driver last recorded itself running at 12:03, 7 minutes ago (no heartbeat for over 5 minutes); "
            "RayJob says Running",
            id="driver-silent-rayjob-running",
        ),
        pytest.param(
            RUNNING, "waiting", "12:03", {"why_pending": ["needs 8 GPU, cluster has 4 GPU"]}, JobState.LOST,
            "the driver last recorded itself waiting at 12:03, 7 minutes ago (no heartbeat for over 5 minutes); "
            "RayJob says Running",
            id="waiting-driver-silent-rayjob-running",
        ),
        pytest.param(
            RETRYING, "running", "12:03", {}, JobState.PENDING,
            "Retrying: starting a new RayCluster after a failure (backoffLimit); the last attempt's driver last "
            "recorded itself running at 12:03, then stopped beating",
            id="driver-silent-rayjob-retrying",
        ),
    ],
)  # fmt: skip
def test_a_disagreement_says_which_witness_said_what(
    store, backend, state, when, extra, expected_state, expected_message
):
    current = rayjob(**backend) if backend else JobStatus(JOB_ID, JobState.STOPPED, GONE, backend="k8s")

    reconciled = reconcile(current, record(store, state, at(when), **extra), NOW)

    assert (reconciled.state, reconciled.message) == (expected_state, expected_message)


@pytest.mark.parametrize(
    ("backend", "state", "extra"),
    [
        (RUNNING, "running", {}),
        (SUCCEEDED, "ended", {"exit_code": 0}),
        (FAILED, "ended", {"exit_code": 1}),
        ({"jobDeploymentStatus": "Initializing"}, "running", {}),  # the driver beats, KubeRay has not caught up
    ],
)
def test_witnesses_that_agree_leave_the_backends_status_as_it_is(store, backend, state, extra):
    current = rayjob(**backend)
    assert reconcile(current, record(store, state, at("12:09"), **extra), NOW) == current


def test_a_driver_waiting_for_resources_makes_the_job_pending_and_says_why(store):
    waiting = record(store, "waiting", at("12:09"), why_pending=["needs 8 GPU, cluster has 4 GPU: add GPU nodes"])

    reconciled = reconcile(rayjob(**RUNNING), waiting, NOW)

    assert (reconciled.state, reconciled.why_pending) == (
        JobState.PENDING, ["needs 8 GPU, cluster has 4 GPU: add GPU nodes"]
    )  # fmt: skip


def test_a_heartbeat_is_silent_for_lost_after_before_the_driver_is_lost(store):
    running = rayjob(**RUNNING)
    just_in_time = record(store, "running", NOW - LOST_AFTER + timedelta(seconds=1))  # the store dates to the second
    assert reconcile(running, just_in_time, NOW).state == JobState.RUNNING
    too_late = record(store, "running", NOW - LOST_AFTER - timedelta(seconds=1))
    assert reconcile(running, too_late, NOW).state == JobState.LOST


def test_a_lost_job_is_finished_so_waiting_on_it_ends():
    assert JobState.LOST.finished


def test_times_are_shown_in_the_readers_timezone_with_the_date_when_not_today(store):
    berlin = timezone(timedelta(hours=1))
    ended = record(store, "ended", NOW - timedelta(days=1), exit_code=1)

    reconciled = reconcile(rayjob(**RUNNING), ended, NOW.astimezone(berlin))

    assert reconciled.message.startswith("the driver ended with exit code 1 at 2026-11-28 13:10 (")


# --- Through `vlkd status` -----------------------------------------------------------------------------------------


class RecordedBackend:
    """A backend that answers with a recorded status, as the k8s backend would for a RayJob KubeRay got wrong."""

    name = "k8s"

    def __init__(self, current: JobStatus) -> None:
        self.current = current

    def status(self, job_id: str, record: dict[str, Any]) -> JobStatus:
        return self.current


def submit_running(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch, home: Any) -> ArtifactStore:
    """The teacher job as if submitted from here to the k8s backend 10 minutes ago, whose RayJob says Running."""
    monkeypatch.setenv("VLKD_HOME", str(home))
    remember(JOB_ID, {"backend": "k8s", "options": {}, "record": {}, "stage": "teacher", "store": store.uri})
    entry = json.loads((home / "jobs" / f"{JOB_ID}.json").read_text())
    entry["submitted_at"] = (datetime.now(timezone.utc) - timedelta(minutes=10)).isoformat()
    (home / "jobs" / f"{JOB_ID}.json").write_text(json.dumps(entry))
    monkeypatch.setattr(submission, "get_backend", lambda name, **options: RecordedBackend(rayjob(**RUNNING)))
    return store


@pytest.fixture
def submitted(store, monkeypatch, tmp_path):
    return submit_running(store, monkeypatch, tmp_path / "home")


@pytest.fixture
def submitted_to_any_store(store_uri, monkeypatch, tmp_path):
    """As `submitted`, with its store on each backend (tests/conftest.py's `store_uri`: file, and S3)."""
    return submit_running(ArtifactStore.open(store_uri), monkeypatch, tmp_path / "home")


def ago(minutes: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(minutes=minutes)


def test_status_prints_a_lost_driver_and_what_the_rayjob_says(submitted, capsys):
    from vlkd.cli.jobs import status

    record(submitted, "running", ago(7), now=datetime.now(timezone.utc))

    status(JOB_ID, None)

    job_id, state, message = capsys.readouterr().out.strip().split(None, 2)
    assert (job_id, state) == (JOB_ID, "LOST")
    assert message.startswith("the driver last recorded itself running at ")
    assert message.endswith(", 7 minutes ago (no heartbeat for over 5 minutes); RayJob says Running")


def test_status_ignores_the_record_an_earlier_attempt_left(submitted):
    record(submitted, "ended", ago(180), now=datetime.now(timezone.utc), exit_code=1)  # before resubmitting

    assert submission.job_status(JOB_ID) == rayjob(**RUNNING)


def test_status_of_a_job_whose_driver_ended_while_kuberay_says_running(submitted):
    record(submitted, "ended", ago(1), now=datetime.now(timezone.utc), exit_code=1)

    current = submission.job_status(JOB_ID)

    assert current.state == JobState.FAILED
    assert current.message.endswith("(RayJob still says Running: KubeRay has not noticed)")


# --- A pod's clock off the laptop's ----------------------------------------------------------------------------------

SKEW = timedelta(minutes=6)  # more than LOST_AFTER: a pod on a node whose clock drifted, or a laptop's


@pytest.mark.parametrize("pod_clock", [-SKEW, SKEW], ids=["pod-behind", "pod-ahead"])
def test_a_beating_driver_on_a_pod_whose_clock_is_off_is_not_lost(submitted_to_any_store, pod_clock):
    now = datetime.now(timezone.utc)
    record(submitted_to_any_store, "running", now, pod_clock=pod_clock, now=now)  # written just now

    assert submission.job_status(JOB_ID) == rayjob(**RUNNING)


def test_a_silent_driver_is_lost_by_the_stores_clock_whatever_its_pods_clock_said(submitted_to_any_store):
    now = datetime.now(timezone.utc)
    record(submitted_to_any_store, "running", now - timedelta(minutes=7), pod_clock=SKEW, now=now)  # "1 minute ago"

    current = submission.job_status(JOB_ID)

    assert current.state == JobState.LOST
    assert current.message.endswith(", 7 minutes ago (no heartbeat for over 5 minutes); RayJob says Running")


def test_the_end_a_pod_whose_clock_is_behind_recorded_after_the_submission_counts(submitted_to_any_store):
    """Its `updated_at` is older than the submission (10 minutes ago), the store's date is not."""
    now = datetime.now(timezone.utc)
    record(
        submitted_to_any_store,
        "ended",
        now - timedelta(minutes=1),
        pod_clock=-timedelta(minutes=15),
        now=now,
        exit_code=1,
    )

    current = submission.job_status(JOB_ID)

    assert current.state == JobState.FAILED
    assert current.message.endswith("(RayJob still says Running: KubeRay has not noticed)")


@pytest.mark.parametrize("catches_up", [True, False])
def test_wait_gives_the_backend_time_to_notice_the_end_its_driver_recorded(monkeypatch, catches_up):
    """`vlkd submit --wait` ends with the backend's agreement when it comes within the grace (a local job's supervisor
    sees its exit once Ray has shut down); with a backend that never notices, it says they disagree."""
    from vlkd.cli import jobs

    ended = {
        "job_id": JOB_ID,
        "state": "ended",
        "exit_code": 0,
        "updated_at": NOW.isoformat(),
        "stored_at": NOW.isoformat(),
    }
    behind = reconcile(JobStatus(JOB_ID, JobState.RUNNING, backend="local"), ended, NOW)
    agreed = JobStatus(JOB_ID, JobState.SUCCEEDED, backend="local")
    asked = []

    def status(job_id: str) -> JobStatus:
        asked.append(job_id)
        return agreed if catches_up and len(asked) >= 3 else behind

    monkeypatch.setattr(submission, "job_status", status)
    monkeypatch.setattr(jobs.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(jobs, "CATCH_UP_S", 0.05)

    final = jobs._backend_caught_up(JOB_ID, behind)

    assert behind.backend_behind and behind.state == JobState.SUCCEEDED
    assert final == (agreed if catches_up else behind)
    assert len(asked) == 3 if catches_up else len(asked) > 3
