"""What every backend shares: the job description, job states, and the interface (after TorchX's Scheduler:
render = dry run, submit sends exactly what render made)."""

from __future__ import annotations

import enum
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from vlkd.runtime import JOB_ENV, job_module
from vlkd.specs import StageSpec


class JobState(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPING = "STOPPING"
    """vlkd asked the backend to stop it, and the backend still says it runs (`vlkd.backends.reconcile`)"""
    STOPPED = "STOPPED"
    LOST = "LOST"
    """the backend says it runs, but its driver stopped recording a heartbeat (`vlkd.backends.reconcile`); finished,
    as nothing that still beats is left to wait for"""

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED, JobState.LOST)


@dataclass
class JobStatus:
    job_id: str
    state: JobState
    message: str = ""
    stage: str = ""
    backend: str = ""
    why_pending: list[str] = field(default_factory=list)
    """for a PENDING job, one or two lines on what it waits for (resources it asks for that no node offers,
    unschedulable pods, image pulls, a queue's quota), so that a pending job is never silent; for a job held stopped
    (deactivated in its queue), how to let it run; for a job that failed without starting (past its start deadline,
    refused by KubeRay's validation), why it could not start"""
    backend_behind: bool = False
    """the driver recorded its end while the backend still says the job runs (`vlkd.backends.reconcile`): the
    state is the driver's, and the backend has not caught up yet (a local job shutting its Ray down) or never will
    (KubeRay's known stuck RayJobs)"""
    error: str = ""
    """for a FAILED job, the error it recorded as it ended (`vlkd.joblog`), or printed before it could record"""
    progress: dict[str, Any] | None = None
    """for a RUNNING job, how far it is as it last recorded (`vlkd.joblog.read_progress`); None before it says"""


@dataclass
class JobDescription:
    """One stage job, described once whatever runs it."""

    job_id: str
    stage: str
    spec: StageSpec
    spec_uri: str
    """where the job reads its spec: uploaded to the store for remote backends, so it reads what was validated"""
    store_uri: str
    image: str
    env: dict[str, str] = field(default_factory=dict)
    """non-secret environment (e.g. AWS_ENDPOINT_URL); credentials travel by the backend's own secret mechanism"""

    @property
    def environment(self) -> dict[str, str]:
        """What a cluster backend gives every process of the job: `env` over the settings every job has
        (`JOB_ENV`, which a local job sets for itself)."""
        return JOB_ENV | self.env

    @property
    def entrypoint(self) -> list[str]:
        return [
            "python", "-m", job_module(self.stage), "--spec", self.spec_uri, "--store", self.store_uri,
            "--job-id", self.job_id,
        ]  # fmt: skip

    @property
    def entrypoint_line(self) -> str:
        return shlex.join(self.entrypoint)


class Backend(Protocol):
    name: str

    def render(self, job: JobDescription) -> str:
        """What `submit` would send, as text (YAML for k8s): the dry run."""

    def submit(self, job: JobDescription) -> dict[str, Any]:
        """Send the job; return what later commands need to find it again (saved in the local job state)."""

    def status(self, job_id: str, record: dict[str, Any]) -> JobStatus: ...

    def logs(self, job_id: str, record: dict[str, Any], follow: bool = False) -> Iterator[str]: ...

    def cancel(self, job_id: str, record: dict[str, Any]) -> None: ...

    def list(self) -> list[JobStatus]: ...
