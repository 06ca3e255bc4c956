"""The `ray` backend: a running Ray cluster reached by its dashboard address, through Ray's Job Submission API.

The cluster must run vlkd's image (or have vlkd installed); the job's spec is read from the artifact store, so the
store must be reachable from the cluster (an s3:// store, or a folder the cluster shares).

A head with Ray's token authentication (the default of `ray start --head` once a token exists) needs its token on
every request; vlkd finds it where Ray's own clients do (`auth_headers`)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlkd.backends.base import JobDescription, JobState, JobStatus
from vlkd.errors import VlkdError, first_line

AGENT_WAIT_SECONDS = 60
JOB_ID_KEY, STAGE_KEY = "vlkd.io/job-id", "vlkd.io/stage"
HOW_TO_GIVE_A_TOKEN = (
    "set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a file holding it, or put it in ~/.ray/auth_token "
    "(`ray get-auth-token` on the head prints it)"
)


def auth_headers() -> dict[str, str]:
    """The head's token as an HTTP header, from where Ray documents it: RAY_AUTH_TOKEN, else the file named by
    RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token; none found, no header. Sent whatever this process's RAY_AUTH_MODE
    says: only the head knows whether it wants a token, and Ray's client sends one only under RAY_AUTH_MODE=token
    (a head that does not check tokens ignores the header)."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        named = os.environ.get("RAY_AUTH_TOKEN_PATH")
        path = Path(named).expanduser() if named else Path.home() / ".ray" / "auth_token"
        if path.is_file():
            token = path.read_text().strip()
        elif named:
            raise VlkdError(f"RAY_AUTH_TOKEN_PATH names {path}, which does not exist: {HOW_TO_GIVE_A_TOKEN}")
    return {"Authorization": f"Bearer {token}"} if token else {}


DASHBOARD = "http://HOST:8265"
NOTHING_ANSWERS = f"nothing answers there; is the cluster running, and is this its dashboard's address ({DASHBOARD})?"


def _state(status: Any) -> JobState:
    """Ray's JobStatus (a str enum) -> ours; the names are the same."""
    return JobState(getattr(status, "value", status))


class RayBackend:
    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        if not address:
            raise VlkdError(f"the ray backend needs the cluster's dashboard address: --address {DASHBOARD}")
        if not address.startswith(("http://", "https://")):
            # Ray's client takes it for the GCS, and waits 40 s for one that does not answer, printing warnings
            raise VlkdError(
                f"the ray backend needs the cluster's dashboard address, {DASHBOARD} (its Job Submission API), "
                f"not {address!r}; the HOST:6379 that `ray start --head` prints is for nodes joining the cluster"
            )
        self.address = address
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            headers = auth_headers()
            try:
                self._client = JobSubmissionClient(self.address, headers=headers)
            except Exception as exc:
                raise self._error("cannot reach the Ray cluster at {address}", exc, headers) from None
        return self._client

    def _error(self, what: str, exc: Exception, headers: dict[str, str] | None = None) -> VlkdError:
        """One line for a failed request: a refused or missing token says how to give one, a connection that
        failed what to check (Ray's own message, when it has one, only repeats the address)."""
        from ray.exceptions import AuthenticationError
        from requests.exceptions import ConnectionError as RequestFailed

        if isinstance(exc, ConnectionError | RequestFailed):  # the client's start, then its requests
            return VlkdError(f"cannot reach the Ray cluster at {self.address}: {NOTHING_ANSWERS}")
        if isinstance(exc, AuthenticationError):
            sent = auth_headers() if headers is None else headers
            problem = "refused the token it was given" if sent else "requires a token (Ray token authentication)"
            return VlkdError(f"the Ray cluster at {self.address} {problem}: {HOW_TO_GIVE_A_TOKEN}")
        return VlkdError(f"{what.format(address=self.address)}: {first_line(exc)}")

    def request(self, job: JobDescription) -> dict[str, Any]:
        """The `submit_job` arguments: what render shows and submit sends."""
        resources = job.spec.resources
        request: dict[str, Any] = {
            "entrypoint": job.entrypoint_line,
            "submission_id": job.job_id,
            "runtime_env": {"env_vars": job.environment},
            "metadata": {JOB_ID_KEY: job.job_id, STAGE_KEY: job.stage},
        }
        if resources.num_workers == 0:  # the trainer runs in the entrypoint itself (Ray Train local mode)
            request["entrypoint_num_cpus"] = resources.cpus_per_worker
            if resources.gpus_per_worker:
                request["entrypoint_num_gpus"] = resources.gpus_per_worker
        return request

    def render(self, job: JobDescription) -> str:
        return f"# POST {self.address}/api/jobs/\n" + json.dumps(self.request(job), indent=2) + "\n"

    def submit(self, job: JobDescription) -> dict[str, Any]:
        deadline = time.monotonic() + AGENT_WAIT_SECONDS
        client = self.client
        request = {**self.request(job), "submission_id": self._submission_id(job.job_id)}
        while True:
            try:
                client.submit_job(**request)
                return {"address": self.address, "submission_id": request["submission_id"]}
            except Exception as exc:
                # A head that has just started answers before its job agent is up, and says to try again.
                if "No available agent" not in str(exc) or time.monotonic() > deadline:
                    raise self._error("the Ray cluster at {address} refused the job", exc) from None
                time.sleep(1)

    def _submission_id(self, job_id: str) -> str:
        """Ray's id for this submission of `job_id`. Ray keeps a finished job's submission id taken, while vlkd
        resumes an interrupted job by submitting its job id again (its checkpoints and run cache are keyed by it):
        a resubmission goes out as `<job id>-retry<N>`, carrying the job id in its metadata."""
        earlier = self._submissions_of(job_id)
        running = [j for j in earlier if not _state(j.status).finished]
        if running:
            raise VlkdError(
                f"job {job_id} is already {_state(running[0].status).value} on the Ray cluster at {self.address} "
                f"(submission {running[0].submission_id}): wait for it, or `vlkd cancel {job_id}` first"
            )
        return f"{job_id}-retry{len(earlier)}" if earlier else job_id

    def _submissions_of(self, job_id: str) -> list[Any]:
        """Ray's submissions of a vlkd job, oldest first."""
        jobs = [j for j in self._call(self.client.list_jobs) if (j.metadata or {}).get(JOB_ID_KEY) == job_id]
        return sorted(jobs, key=lambda j: j.start_time or 0)

    def _submission(self, job_id: str, record: dict[str, Any]) -> str:
        """The Ray submission of a job: the one its record names, else its latest (a job followed from another
        process, such as a retried pipeline's driver, has no record)."""
        if "submission_id" in record:
            return record["submission_id"]
        latest = self._submissions_of(job_id)
        return latest[-1].submission_id if latest else job_id

    def status(self, job_id: str, record: dict[str, Any]) -> JobStatus:
        info = self._call(self.client.get_job_info, self._submission(job_id, record))
        return JobStatus(job_id, _state(info.status), info.message or "", backend=self.name)

    def logs(self, job_id: str, record: dict[str, Any], follow: bool = False) -> Iterator[str]:
        submission = self._submission(job_id, record)
        if not follow:
            yield from self._call(self.client.get_job_logs, submission).splitlines(keepends=True)
            return
        stream = self.client.tail_job_logs(submission)
        loop = asyncio.new_event_loop()
        try:
            while True:
                try:
                    chunk = loop.run_until_complete(stream.__anext__())
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    raise self._error("Ray cluster at {address}", exc) from None
                yield from chunk.splitlines(keepends=True)
        finally:
            loop.close()

    def cancel(self, job_id: str, record: dict[str, Any]) -> None:
        self._call(self.client.stop_job, self._submission(job_id, record))

    def list(self) -> list[JobStatus]:
        """vlkd's jobs on the cluster, each by its latest submission."""
        latest: dict[str, Any] = {}
        for j in sorted(self._call(self.client.list_jobs), key=lambda j: j.start_time or 0):
            if (j.metadata or {}).get(JOB_ID_KEY):
                latest[j.metadata[JOB_ID_KEY]] = j
        return [
            JobStatus(job_id, _state(j.status), j.message or "", j.metadata.get(STAGE_KEY, ""), self.name)
            for job_id, j in latest.items()
        ]

    def _call(self, method: Any, *args: Any) -> Any:
        try:
            return method(*args)
        except Exception as exc:
            raise self._error("Ray cluster at {address}", exc) from None
