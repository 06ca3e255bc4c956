"""`file://` stores: a folder on a local or shared filesystem (the embedded default)."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from vlkd.errors import KeyExistsError, NotFoundError
from vlkd.storage.base import ObjectInfo, Progress, check_key, folder_key

_CHUNK = 1 << 20
# Tries to create a file whose folder another process's `delete_prefix` keeps removing (FileStorage._staged).
_FOLDER_ATTEMPTS = 100


class FileStorage:
    """A folder on a local or shared filesystem.

    Atomicity: data is written to a hidden temporary file in the target folder and then renamed (readers
    never see a partial file); exclusive writes use `os.link`, which fails if the target exists, so of two
    concurrent writers exactly one wins (POSIX guarantees this on local filesystems and NFSv3+).
    """

    _TMP = ".vlkd-tmp-"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _dir(self, prefix: str) -> Path:
        folder = folder_key(prefix)
        return self.root / folder if folder else self.root

    @contextlib.contextmanager
    def _staged(self, key: str) -> Iterator[tuple[Path, Path]]:
        """(a new empty temporary file beside `key`'s, the file of `key`). Creating the temporary file keeps its
        folder: `delete_prefix` elsewhere removes folders it leaves empty, which may be this one between `mkdir` and
        the file's creation; then both are made again."""
        target = self._path(key)
        tmp = target.with_name(f"{self._TMP}{uuid.uuid4().hex}-{target.name}")
        for attempt in range(_FOLDER_ATTEMPTS):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp.touch(exist_ok=False)
                break
            except FileNotFoundError:
                if attempt == _FOLDER_ATTEMPTS - 1:
                    raise
        try:
            yield tmp, target
        finally:
            tmp.unlink(missing_ok=True)

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"{self.uri}/{key} does not exist") from None

    def read_range(self, key: str, start: int, end: int) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                f.seek(start)
                return f.read(end - start)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"{self.uri}/{key} does not exist") from None

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"{self.uri}/{key} does not exist") from None

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        with self._staged(key) as (tmp, target):
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if exclusive:
                try:
                    os.link(tmp, target)
                except FileExistsError:
                    raise KeyExistsError(f"{self.uri}/{key} already exists") from None
            else:
                os.replace(tmp, target)

    def upload(self, key: str, local_path: Path, progress: Progress | None = None) -> None:
        with self._staged(key) as (tmp, target), open(local_path, "rb") as src:
            with open(tmp, "wb") as dst:
                _copy(src, dst, progress)
            os.replace(tmp, target)

    def download(self, key: str, local_path: Path, progress: Progress | None = None) -> None:
        try:
            src = open(self._path(key), "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            raise NotFoundError(f"{self.uri}/{key} does not exist") from None
        with src, open(local_path, "wb") as dst:
            _copy(src, dst, progress)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        for folder, dirs, files in os.walk(self._dir(prefix)):
            dirs.sort()
            for name in sorted(files):
                if name.startswith(self._TMP):
                    continue
                path = Path(folder, name)
                yield ObjectInfo(path.relative_to(self.root).as_posix(), path.stat().st_size)

    def children(self, prefix: str) -> list[str]:
        try:
            return sorted(p.name for p in self._dir(prefix).iterdir() if not p.name.startswith(self._TMP))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def pyarrow_location(self, prefix: str) -> tuple[str, Any]:
        """Where Ray Train (which speaks pyarrow filesystems) should write under `prefix`."""
        return str(self._dir(prefix)), None

    def delete_prefix(self, prefix: str) -> int:
        """Also removes the folders this leaves empty, as on S3, where a folder is only the keys under it: an
        aborted publish must not leave `artifacts/<kind>/<name>/` behind to be listed as an artifact."""
        count = sum(1 for _ in self.list(prefix))
        folder = self._dir(prefix)
        shutil.rmtree(folder, ignore_errors=True)
        for parent in folder.parents:
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:  # not empty (or already gone): its ancestors are not empty either
                break
        return count

    def age(self, key: str) -> timedelta:
        try:
            modified = self._path(key).stat().st_mtime  # this machine's clock, or a file server's
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"{self.uri}/{key} does not exist") from None
        return timedelta(seconds=max(time.time() - modified, 0.0))


def _copy(src: Any, dst: Any, progress: Progress | None) -> None:
    while chunk := src.read(_CHUNK):
        dst.write(chunk)
        if progress:
            progress(len(chunk))
