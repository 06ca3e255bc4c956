"""What this machine remembers of the jobs it submitted (backend, address, how to find them), one small JSON
file per job under `~/.vlkd/jobs/` (or `$VLKD_HOME/jobs/`), so later commands need only the job id."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vlkd.errors import NotFoundError, VlkdError

# The characters of an artifact name (`vlkd.refs`): a job id names a file here and keys in the store, so it holds
# no path separator. Longer than a name, since a pipeline's stage job ids add the stage's key to the pipeline job's.
_JOB_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,198}[A-Za-z0-9])?$")


class JobIdError(VlkdError):
    """A job id that is not a plain name: a usage error."""

    exit_code = 2


def check_job_id(job_id: str) -> str:
    if not _JOB_ID.match(job_id):
        raise JobIdError(
            f"invalid job id {job_id!r}: use 1-200 letters, digits, '.', '_' or '-', starting and ending with a "
            "letter or digit"
        )
    return job_id


def vlkd_home() -> Path:
    return Path(os.environ.get("VLKD_HOME") or Path.home() / ".vlkd")


def jobs_dir() -> Path:
    return vlkd_home() / "jobs"


def remember(job_id: str, record: dict[str, Any]) -> None:
    """Record a submission (a resubmitted id starts a new record: its attempt is the one later commands follow)."""
    _write({"job_id": check_job_id(job_id), "submitted_at": datetime.now(timezone.utc).isoformat(), **record})


def note_cancel(job_id: str, asked: bool = True) -> None:
    """Record that vlkd asks the job's backend to stop this attempt (`vlkd.backends.reconcile.with_cancel`), or,
    not `asked`, that the request did not reach it."""
    entry = {key: value for key, value in recall(job_id).items() if key != "cancel_requested_at"}
    _write({**entry, "cancel_requested_at": datetime.now(timezone.utc).isoformat()} if asked else entry)


def _write(entry: dict[str, Any]) -> None:
    jobs_dir().mkdir(parents=True, exist_ok=True)
    tmp = jobs_dir() / f".{entry['job_id']}.json.tmp"
    tmp.write_text(json.dumps(entry, indent=2))
    tmp.replace(jobs_dir() / f"{entry['job_id']}.json")


def recall(job_id: str) -> dict[str, Any]:
    path = jobs_dir() / f"{check_job_id(job_id)}.json"
    if not path.is_file():
        raise NotFoundError(f"no job {job_id!r} was submitted from this machine; `vlkd list` shows the known jobs")
    return json.loads(path.read_text())


def known_jobs() -> list[dict[str, Any]]:
    if not jobs_dir().is_dir():
        return []
    entries = [json.loads(p.read_text()) for p in jobs_dir().glob("*.json")]
    return sorted(entries, key=lambda e: e["submitted_at"])
