"""What every byte store gives the artifact store (`Storage`), and the rules of its keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

Progress = Callable[[int], None]
"""Called with the number of bytes just transferred."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class Storage(Protocol):
    """What the artifact store needs from a byte store."""

    uri: str

    def read_bytes(self, key: str) -> bytes: ...

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of an object: what a reader of a few Parquet row groups of a large file fetches."""

    def size(self, key: str) -> int: ...

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        """Write a whole object. With `exclusive`, raise `KeyExistsError` if the key already exists,
        atomically: of two concurrent exclusive writers exactly one succeeds."""

    def upload(self, key: str, local_path: Path, progress: Progress | None = None) -> None: ...

    def download(self, key: str, local_path: Path, progress: Progress | None = None) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under the folder `prefix` (recursively); `""` is the store's root and a trailing `/` is
        optional. A prefix names a folder, never an object: the object `a/b` is not under `a/b`."""

    def children(self, prefix: str) -> list[str]:
        """The names directly below the folder `prefix` (the next path segment), objects and 'folders' alike."""

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under the folder `prefix`; return how many."""

    def pyarrow_location(self, prefix: str) -> tuple[str, Any]:
        """(path, pyarrow filesystem or None for local) of `prefix`, for libraries that speak pyarrow."""

    def age(self, key: str) -> timedelta:
        """How long ago the object was last written, by the store's own clock: a writer's clock (a pod's) may be
        off, so how long a job has been silent is judged by this (`vlkd.joblog.read_state`)."""


def check_key(key: str) -> str:
    """`key` if it is a relative `/`-separated path without empty, `.` or `..` segments; else ValueError."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid storage key {key!r}")
    return key


def folder_key(prefix: str) -> str:
    """A listing prefix as a folder key, `""` for the root: `jobs/x/log/` and `jobs/x/log` are the same folder."""
    prefix = prefix.rstrip("/")
    return check_key(prefix) if prefix else ""
