"""What a published version records (`Manifest`: its files with their sizes and sha256, spec, parents, metrics,
cost), the shapes listings and lineage return, where versions live under the store's root, and how local files
become an artifact's file list."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from vlkd.errors import DamagedManifestError, VlkdError
from vlkd.refs import ArtifactRef

ROOT = "artifacts"
MANIFEST = "manifest.json"
CLAIM = "claim.json"
FILES = "files"
ALIASES = "aliases"


class FileEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    size: int
    sha256: str


class Manifest(BaseModel):
    """Everything known about one published version; enough to rebuild what it holds without its spec."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = 1
    kind: str
    name: str
    version: int
    created_at: datetime
    vlkd_version: str
    job_id: str | None = None
    log: str | None = None
    """where the log of the job that made it is kept in the store (`vlkd logs JOB_ID` reads it)"""
    spec: dict[str, Any] | None = None
    parents: list[str] = []
    metrics: dict[str, Any] = {}
    cost: dict[str, float] = {}
    """what making it took: wall_seconds, and the cpu_hours and gpu_hours its job held"""
    attributes: dict[str, Any] = {}
    files: list[FileEntry] = []

    @property
    def ref(self) -> ArtifactRef:
        return ArtifactRef(self.kind, self.name, self.version)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass
class ArtifactSummary:
    """One artifact name and its published versions, for listings."""

    kind: str
    name: str
    versions: list[int]
    aliases: dict[str, int]
    latest: Manifest


@dataclass
class Listing:
    """What `ArtifactStore.list` found: the artifacts, and the versions it left out for a damaged manifest."""

    artifacts: list[ArtifactSummary]
    damaged: list[DamagedManifestError]


@dataclass
class LineageNode:
    ref: str
    manifest: Manifest | None
    """None when the version is missing from the store, or its manifest is `damaged`"""
    parents: list[LineageNode] = field(default_factory=list)
    damaged: str | None = None
    """why its manifest could not be read"""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_file_path(path: str) -> str:
    """A manifest path: relative, `/`-separated, no `..` (a manifest must not write outside its folder)."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise VlkdError(f"invalid file path {path!r} in artifact: use a relative path without '..'")
    return path


def collect_files(paths: Iterable[Path]) -> dict[str, Path]:
    """Map artifact paths to local files: a file keeps its name, a directory contributes its contents."""
    found: dict[str, Path] = {}
    for root in paths:
        if root.is_dir():
            items = [(p.relative_to(root).as_posix(), p) for p in sorted(root.rglob("*")) if p.is_file()]
        elif root.is_file():
            items = [(root.name, root)]
        else:
            raise VlkdError(f"{root}: no such file or directory")
        for rel, local in items:
            if rel in found and found[rel] != local:
                raise VlkdError(f"two inputs would both be stored as {rel!r}: {found[rel]} and {local}")
            found[rel] = local
    if not found:
        raise VlkdError("nothing to publish: the given paths hold no files")
    return found
