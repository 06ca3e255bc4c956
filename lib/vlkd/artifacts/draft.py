"""Publishing one version: its number is taken (`ArtifactStore.draft`), its files go up, and its manifest, written
last, makes it visible."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from vlkd import __version__
from vlkd.artifacts.manifest import FILES, MANIFEST, FileEntry, Manifest, check_file_path, sha256_file
from vlkd.errors import VlkdError
from vlkd.joblog import log_prefix
from vlkd.refs import ArtifactRef
from vlkd.storage import Progress

if TYPE_CHECKING:
    from vlkd.artifacts.store import ArtifactStore


def spec_dict(spec: BaseModel | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A spec as a manifest records it: plain JSON values, whether a validated model or a mapping was given."""
    if spec is None:
        return None
    return spec.model_dump(mode="json") if isinstance(spec, BaseModel) else dict(spec)


def now() -> datetime:
    """The time a claim or manifest records: UTC, so that stores shared across time zones order alike."""
    return datetime.now(timezone.utc)


class Draft:
    """A version being published: its number is taken, its files go up, and nobody sees it until `commit`.

    Use as a context manager: leaving the block by an exception aborts the draft (best-effort cleanup; an
    abandoned draft is invisible anyway and `vlkd.housekeeping.gc` removes it).
    """

    def __init__(self, store: ArtifactStore, kind: str, name: str, version: int, job_id: str | None):
        self.store = store
        self.ref = ArtifactRef(kind, name, version)
        self.job_id = job_id
        self.files: dict[str, FileEntry] = {}
        self.done = False

    def _key(self, path: str) -> str:
        return f"{self.store.version_prefix(self.ref)}/{FILES}/{check_file_path(path)}"

    def _record(self, entry: FileEntry) -> FileEntry:
        if self.done:
            raise VlkdError(f"{self.ref} is already committed or aborted")
        self.files[entry.path] = entry
        return entry

    def add_file(self, local_path: Path, path: str | None = None, progress: Progress | None = None) -> FileEntry:
        path = path or local_path.name
        entry = FileEntry(path=path, size=local_path.stat().st_size, sha256=sha256_file(local_path))
        self.store.storage.upload(self._key(path), local_path, progress)
        return self._record(entry)

    def add_bytes(self, path: str, data: bytes) -> FileEntry:
        self.store.storage.write_bytes(self._key(path), data)
        return self._record(FileEntry(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest()))

    def add_files(self, files: Mapping[str, Path], progress: Progress | None = None) -> None:
        for path, local in files.items():
            self.add_file(local, path, progress)

    def commit(
        self,
        *,
        spec: BaseModel | Mapping[str, Any] | None = None,
        parents: Iterable[ArtifactRef | str] = (),
        metrics: Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
        cost: Mapping[str, float] | None = None,
    ) -> Manifest:
        """Write the manifest, which makes the version visible. Parents are pinned to versions here, so
        lineage never moves when an alias does."""
        if self.done:
            raise VlkdError(f"{self.ref} is already committed or aborted")
        manifest = Manifest(
            kind=self.ref.kind,
            name=self.ref.name,
            version=self.ref.version or 0,
            created_at=now(),
            vlkd_version=__version__,
            job_id=self.job_id,
            log=log_prefix(self.job_id) if self.job_id else None,
            spec=spec_dict(spec),
            parents=[str(self.store.resolve(p)) for p in parents],
            metrics=dict(metrics or {}),
            attributes=dict(attributes or {}),
            cost=dict(cost or {}),
            files=sorted(self.files.values(), key=lambda f: f.path),
        )
        key = f"{self.store.version_prefix(self.ref)}/{MANIFEST}"
        self.store.storage.write_bytes(key, manifest.model_dump_json(indent=2).encode(), exclusive=True)
        self.done = True
        return manifest

    def abort(self) -> None:
        if not self.done:
            self.done = True
            self.store.storage.delete_prefix(self.store.version_prefix(self.ref))

    def __enter__(self) -> Draft:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and not self.done:
            with contextlib.suppress(Exception):  # the original error matters more; gc cleans up later
                self.abort()
