"""What this machine remembers of the jobs it submitted (backend, address, how to find them), one small JSON
file per job under `~/.vlkd/jobs/` (or `$VLKD_HOME/jobs/`), so later commands need only the job id."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vlkd.errors import NotFoundError


def vlkd_home() -> Path:
    return Path(os.environ.get("VLKD_HOME") or Path.home() / ".vlkd")


def jobs_dir() -> Path:
    return vlkd_home() / "jobs"


def remember(job_id: str, record: dict[str, Any]) -> None:
    jobs_dir().mkdir(parents=True, exist_ok=True)
    entry = {"job_id": job_id, "submitted_at": datetime.now(timezone.utc).isoformat(), **record}
    tmp = jobs_dir() / f".{job_id}.json.tmp"
    tmp.write_text(json.dumps(entry, indent=2))
    tmp.replace(jobs_dir() / f"{job_id}.json")


def recall(job_id: str) -> dict[str, Any]:
    path = jobs_dir() / f"{job_id}.json"
    if not path.is_file():
        raise NotFoundError(f"no job {job_id!r} was submitted from this machine; `vlkd list` shows the known jobs")
    return json.loads(path.read_text())


def known_jobs() -> list[dict[str, Any]]:
    if not jobs_dir().is_dir():
        return []
    entries = [json.loads(p.read_text()) for p in jobs_dir().glob("*.json")]
    return sorted(entries, key=lambda e: e["submitted_at"])
