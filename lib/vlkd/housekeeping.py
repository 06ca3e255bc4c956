"""What `vlkd artifacts gc` finds in a store: leftovers of interrupted publishes, checkpoints nothing will resume
from, and versions whose manifest is damaged.

- A draft (a version with a claim but no manifest) older than the cut-off is a publish that crashed or was
  killed; a newer one may still be running. Removed.
- The checkpoints of a job that ended well (exit code 0 in its recorded state) and published are removed: the
  artifact holds what it made. A running, waiting, failed or lost job keeps them, since submitting its id again
  resumes from them, and so does a job whose record or outputs are not found.
- A damaged version is only reported: its files may be all that is left of it, so repairing or dropping it is
  the user's call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from vlkd.artifacts import CLAIM, ROOT, ArtifactStore
from vlkd.errors import DamagedManifestError, NotFoundError
from vlkd.joblog import CHECKPOINT_PREFIX, ENDED, read_state
from vlkd.refs import KINDS, ArtifactRef


@dataclass(frozen=True)
class FinishedRun:
    """The checkpoints of a job that ended and published."""

    job_id: str
    prefix: str
    size: int
    published: list[ArtifactRef]


@dataclass
class Garbage:
    drafts: list[ArtifactRef]
    checkpoints: list[FinishedRun]
    damaged: list[DamagedManifestError]
    """reported, never removed"""


def gc(store: ArtifactStore, older_than: timedelta, dry_run: bool = False) -> Garbage:
    """Find what the store no longer needs and, unless `dry_run`, remove it. Reads every manifest (to learn which
    jobs published), so it costs a request per version."""
    published, damaged = _published_by_job(store)
    garbage = Garbage(list(abandoned_drafts(store, older_than)), _finished_checkpoints(store, published), damaged)
    if not dry_run:
        for ref in garbage.drafts:
            store.storage.delete_prefix(store.version_prefix(ref))
        for run in garbage.checkpoints:
            store.storage.delete_prefix(run.prefix)
    return garbage


def _taken(store: ArtifactStore) -> Iterator[ArtifactRef]:
    """Every version number taken in the store, published or not."""
    for kind in (k for k in KINDS if k in store.storage.children(ROOT)):
        for name in store.names(kind):
            for version in store.taken_versions(kind, name):
                yield ArtifactRef(kind, name, version)


def abandoned_drafts(store: ArtifactStore, older_than: timedelta) -> Iterator[ArtifactRef]:
    """Drafts never committed whose claim is older than `older_than` (a crashed or killed publish)."""
    cutoff = datetime.now(timezone.utc) - older_than
    for ref in _taken(store):
        if store.is_published(ref):
            continue
        try:
            claim = json.loads(store.storage.read_bytes(f"{store.version_prefix(ref)}/{CLAIM}"))
            claimed_at = datetime.fromisoformat(claim["claimed_at"])
        except NotFoundError:
            claimed_at = datetime.min.replace(tzinfo=timezone.utc)  # files but no claim: debris
        if claimed_at < cutoff:
            yield ref


def _published_by_job(store: ArtifactStore) -> tuple[dict[str, list[ArtifactRef]], list[DamagedManifestError]]:
    """The versions each job published, and the versions whose manifest is damaged."""
    published: dict[str, list[ArtifactRef]] = {}
    damaged = []
    for ref in _taken(store):
        if not store.is_published(ref):
            continue
        try:
            job_id = store.manifest(ref).job_id
        except DamagedManifestError as exc:
            damaged.append(exc)
            continue
        if job_id:
            published.setdefault(job_id, []).append(ref)
    return published, damaged


def _finished_checkpoints(store: ArtifactStore, published: dict[str, list[ArtifactRef]]) -> list[FinishedRun]:
    """The checkpoints of jobs whose recorded state says they ended with exit code 0, and that published."""
    runs = []
    for job_id in store.storage.children(CHECKPOINT_PREFIX.format(job_id="")):
        if job_id not in published:
            continue
        state = read_state(store.storage, job_id)
        if state and state["state"] == ENDED and state.get("exit_code") == 0:
            prefix = CHECKPOINT_PREFIX.format(job_id=job_id)
            size = sum(info.size for info in store.storage.list(prefix))
            runs.append(FinishedRun(job_id, prefix, size, published[job_id]))
    return runs
