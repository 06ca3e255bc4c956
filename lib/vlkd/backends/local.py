"""The `local` backend: the job runs on this machine, in its own process with its own Ray, detached from the
command that submitted it. A small supervisor (`python -m vlkd.backends.local`) runs the entrypoint, writes its
output to the job's log and its exit code next to it, so status, logs and cancel work after the CLI has exited."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlkd.backends.base import JobDescription, JobState, JobStatus
from vlkd.jobstate import jobs_dir, known_jobs
from vlkd.runtime import alive

LOG = "log"
EXIT_CODE = "exit_code"
CANCELLED = "cancelled"


def run_dir(job_id: str) -> Path:
    return jobs_dir() / job_id


class LocalBackend:
    name = "local"

    def render(self, job: JobDescription) -> str:
        return f"# runs on this machine, in its own process with a local Ray\n{job.entrypoint_line}\n"

    def submit(self, job: JobDescription) -> dict[str, Any]:
        directory = run_dir(job.job_id)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in (EXIT_CODE, CANCELLED):  # a resubmitted job id starts a new attempt
            (directory / stale).unlink(missing_ok=True)
        with open(directory / LOG, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "vlkd.backends.local", str(directory), *job.entrypoint],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: cancel stops the job and its Ray
                env={**os.environ, **job.env},
            )
        return {"pid": process.pid, "dir": str(directory)}

    def status(self, job_id: str, record: dict[str, Any]) -> JobStatus:
        directory = Path(record["dir"])
        if (directory / EXIT_CODE).is_file():
            code = int((directory / EXIT_CODE).read_text() or 1)
            if (directory / CANCELLED).exists():
                return JobStatus(job_id, JobState.STOPPED, "cancelled", backend=self.name)
            state = JobState.SUCCEEDED if code == 0 else JobState.FAILED
            return JobStatus(job_id, state, "" if code == 0 else f"exit code {code}", backend=self.name)
        if alive(record["pid"]):
            return JobStatus(job_id, JobState.RUNNING, f"pid {record['pid']}", backend=self.name)
        return JobStatus(job_id, JobState.FAILED, "the job's process is gone without an exit code", backend=self.name)

    def logs(self, job_id: str, record: dict[str, Any], follow: bool = False) -> Iterator[str]:
        path = Path(record["dir"]) / LOG
        with open(path, errors="replace") as log:
            while True:
                line = log.readline()
                if line:
                    yield line
                elif follow and not self.status(job_id, record).state.finished:
                    time.sleep(0.2)
                else:
                    yield from log  # whatever arrived since the last read
                    return

    def cancel(self, job_id: str, record: dict[str, Any]) -> None:
        if self.status(job_id, record).state.finished:
            return
        (Path(record["dir"]) / CANCELLED).touch()
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.kill(record["pid"], signal.SIGTERM)  # the supervisor stops the job, then what is left of it

    def list(self) -> list[JobStatus]:
        jobs = [j for j in known_jobs() if j.get("backend") == self.name]
        return [self.status(j["job_id"], j["record"]) for j in jobs]


# How long a cancelled job has to shut down cleanly (its Ray included) before the rest of it is killed.
CANCEL_GRACE_S = 5


def _supervise(directory: Path, command: list[str]) -> int:
    """Run the job and record how it ended. On SIGTERM (cancel) the job gets SIGTERM and a grace period; then, and
    whenever the job ends, whatever it left running in its process group (Ray's daemons) is killed. The entrypoint's
    `python` is this interpreter, the one vlkd is installed in, whatever PATH finds first."""
    if command[:1] == ["python"]:
        command = [sys.executable, *command[1:]]
    child = subprocess.Popen(command)

    def stop(*_: object) -> None:
        child.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=CANCEL_GRACE_S)
        _finish(directory, child.poll() if child.poll() is not None else -signal.SIGKILL, force=True)

    signal.signal(signal.SIGTERM, stop)
    code = child.wait()
    _finish(directory, code, force=False)
    return code


def _finish(directory: Path, code: int, force: bool) -> None:
    """Record the outcome, then clear the job's process group; `force` also kills what ignores SIGTERM (and the
    supervisor with it: its work is done)."""
    written = directory / f".{EXIT_CODE}.tmp"  # then renamed: `status` never reads a created but still empty file
    written.write_text(str(code))
    written.replace(directory / EXIT_CODE)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
    if force:
        time.sleep(1)
        os.killpg(0, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(_supervise(Path(sys.argv[1]), sys.argv[2:]))
