"""One job status from two witnesses that can disagree: the backend (a RayJob, a Ray job, a local process) and the
job's own record in the store (`vlkd.joblog`: running, waiting or ended, with a heartbeat while it lives).

KubeRay is known to keep a RayJob Running after its driver died (kuberay#2154, #3553, #3903), and a backend that
lost the job (RayJob deleted, cluster gone) cannot say how it ended. So each witness is trusted for what it can know:
- the driver's recorded end is authoritative for how the job ended (its exit code), whatever the backend says;
- the backend is authoritative for whether something is still running or will run: a record that says "running"
  cannot know its driver was killed, and a job the backend still starts (a retry, a requeue after preemption) has
  not ended, whatever the last attempt recorded;
- a driver whose heartbeat stopped for LOST_AFTER while the backend says it runs is LOST: neither can be believed,
  and waiting on it would wait forever. LOST counts as finished (`vlkd submit --wait` exits 1); if the driver was
  only cut off from the store, it records its end when it can, and `vlkd status` says so from then on.
Where they disagree, the message says which witness said what. A record older than the submission is an earlier
attempt's (a resubmitted job id) and says nothing of this one (`of_this_attempt`).

A third fact is this machine's own: that `vlkd cancel` asked the backend to stop the job (`with_cancel`). The job is
STOPPING from that moment, then STOPPED: its driver, stopped by SIGTERM, records a non-zero exit, which alone would
read FAILED for as long as the backend takes to notice.

Times are the record's `stored_at` (`vlkd.joblog.read_state`): when the store got it, by the store's clock, read on
the reader's. The job's own `updated_at` is its pod's clock, which may be minutes off the laptop's that submitted it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from vlkd.backends.base import JobState, JobStatus
from vlkd.joblog import ENDED, LOST_AFTER, WAITING

# What each backend's job is called, and who should have noticed that its driver ended.
_WITNESSES = {"k8s": ("RayJob", "KubeRay"), "ray": ("the Ray job", "Ray"), "local": ("the local job", "its supervisor")}
_SOME_BACKEND = ("the backend", "the backend")


def of_this_attempt(recorded: dict[str, Any], submitted_at: str | None) -> bool:
    """Whether the record was written since the job was (last) submitted from here; without a submission time, it
    is taken as current."""
    return submitted_at is None or _time(recorded["stored_at"]) >= _time(submitted_at)


def reconcile(current: JobStatus, recorded: dict[str, Any] | None, now: datetime) -> JobStatus:
    """The backend's status `current`, corrected by the job's record of this attempt (see the module's docstring).
    `now` is an aware datetime; times are shown in its timezone."""
    if recorded is None:
        return current
    if recorded["state"] == ENDED:
        return _ended(current, recorded, now)
    return _alive(current, recorded, now)


def _ended(current: JobStatus, recorded: dict[str, Any], now: datetime) -> JobStatus:
    code = recorded["exit_code"]
    outcome = JobState.SUCCEEDED if code == 0 else JobState.FAILED
    driver = f"driver ended with exit code {code} at {_clock(recorded['stored_at'], now)}"
    job, watcher = _WITNESSES.get(current.backend, _SOME_BACKEND)
    if current.state == JobState.PENDING:  # a new attempt is on its way (a retry, a requeue): it has not ended
        return replace(current, message=f"{current.message}; the last attempt's {driver}")
    if current.state == JobState.RUNNING:
        return replace(
            current,
            state=outcome,
            message=f"the {driver} ({job} still says Running: {watcher} has not noticed)",
            backend_behind=True,
        )
    if current.state == outcome:
        return current
    if current.state == JobState.STOPPED and code != 0:  # stopped, and the driver exited because of it
        return replace(current, message=f"{current.message}; the {driver}")
    return replace(current, state=outcome, message=f"the {driver} ({_said(job, current)})")


def with_cancel(current: JobStatus, requested_at: str | None, now: datetime) -> JobStatus:
    """The status of a job whose cancel was requested at `requested_at` (None: it was not): STOPPING while something
    may still run, then STOPPED, however its driver exited; a job that succeeded before the cancel reached it keeps
    its success."""
    if requested_at is None or current.state in (JobState.SUCCEEDED, JobState.STOPPED):
        return current
    asked = f"cancel requested at {_clock(requested_at, now)}"
    if current.state.finished and current.state != JobState.LOST:  # a lost job's backend still says it runs
        return replace(current, state=JobState.STOPPED, message=f"{asked}; {current.message}".rstrip("; "))
    return replace(current, state=JobState.STOPPING, message=f"{asked}; {current.message}".rstrip("; "), why_pending=[])


def _alive(current: JobStatus, recorded: dict[str, Any], now: datetime) -> JobStatus:
    """The record says the driver runs (or waits for resources): believe it while it beats and the backend agrees."""
    silent = now - _time(recorded["stored_at"])
    driver = f"driver last recorded itself {recorded['state']} at {_clock(recorded['stored_at'], now)}"
    job, _ = _WITNESSES.get(current.backend, _SOME_BACKEND)
    if current.state.finished:  # e.g. the RayJob was deleted or its cluster lost: the driver could not say so
        return replace(current, message=f"{current.message}; the {driver} and recorded no end")
    if silent > LOST_AFTER and current.state == JobState.PENDING:  # an earlier attempt's; the backend starts anew
        return replace(current, message=f"{current.message}; the last attempt's {driver}, then stopped beating")
    if silent > LOST_AFTER:
        return replace(
            current,
            state=JobState.LOST,
            message=f"the {driver}, {_span(silent)} ago (no heartbeat for over {_span(LOST_AFTER)}); "
            f"{job} says {_word(current.state)}",
        )
    if recorded["state"] == WAITING:
        return replace(current, state=JobState.PENDING, why_pending=[*recorded["why_pending"], *current.why_pending])
    return current


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _clock(text: str, now: datetime) -> str:
    """A recorded time in `now`'s timezone: the time of day if it is today, else the date too."""
    at = _time(text).astimezone(now.tzinfo)
    return at.strftime("%H:%M" if at.date() == now.date() else "%Y-%m-%d %H:%M")


def _span(elapsed: timedelta) -> str:
    seconds = int(elapsed.total_seconds())
    if seconds < 120:
        return f"{seconds} seconds"
    return f"{seconds // 60} minutes" if seconds < 7200 else f"{seconds // 3600} hours"


def _word(state: JobState) -> str:
    return state.value.capitalize()


def _said(job: str, current: JobStatus) -> str:
    """What the backend says, its state named once (a RayJob's message starts with KubeRay's own word for it)."""
    word = _word(current.state)
    if current.message.lower().startswith(word.lower()):
        return f"{job} says {current.message}"
    return f"{job} says {word}" + (f": {current.message}" if current.message else "")
