"""Where a stage's inputs come from: a URI prefix (s3://, file://) or an artifact's files, behind one interface.

Inputs named by artifact ref are pinned to a version and become the output's parents (lineage); inputs named
by URI are recorded as attributes. Files of an artifact are checked against its manifest's sha256 on fetch.
Sources travel to Ray tasks by pickling, so they hold only picklable state (storages drop their clients).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from vlkd.artifacts import FILES, ArtifactStore, sha256_file
from vlkd.errors import ChecksumError, NotFoundError, VlkdError
from vlkd.refs import ArtifactRef
from vlkd.storage import Storage, open_storage, split_s3_uri


@dataclass(frozen=True)
class InputFile:
    path: str
    """relative to the source's root, `/`-separated"""
    size: int
    sha256: str | None = None
    """known for artifact files; checked on every fetch"""


@dataclass
class InputSource:
    """A folder of input files."""

    storage: Storage
    prefix: str
    uri: str
    ref: ArtifactRef | None = None
    """the pinned artifact the files belong to, if any (a parent in the lineage)"""
    known: dict[str, InputFile] | None = None
    """an artifact's files by path, from its manifest (None for a URI, listed when asked)"""

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def files(self) -> list[InputFile]:
        if self.known is not None:
            return list(self.known.values())
        cut = len(self.prefix) + 1 if self.prefix else 0
        return [InputFile(info.key[cut:], info.size) for info in self.storage.list(self.prefix)]

    def _expected(self, path: str) -> InputFile | None:
        return self.known.get(path) if self.known is not None else None

    def unlisted(self) -> InputSource:
        """This source without its artifact's listing, for Ray tasks that each read files their rows name, with
        their sha256 (`fetch`): a task's function is pickled with its source, and the listing of a million videos
        would make every task, and every worker's memory, grow with the dataset."""
        return dataclasses.replace(self, known=None)

    def read_bytes(self, path: str) -> bytes:
        data = self.storage.read_bytes(self._key(path))
        expected = self._expected(path)
        if expected and expected.sha256 != hashlib.sha256(data).hexdigest():
            raise ChecksumError(f"{self.uri}/{path} does not match its manifest's sha256; re-publish it")
        return data

    def read_range(self, path: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of a file. A part of a file cannot be checked against the file's sha256, so readers
        of ranges check the format's own structure instead (a Parquet footer, its row counts)."""
        return self.storage.read_range(self._key(path), start, end)

    def file(self, path: str) -> InputFile:
        """One file: its artifact's listing of it, else its size from the store (`NotFoundError` when absent)."""
        return self._expected(path) or InputFile(path, self.storage.size(self._key(path)))

    def size(self, path: str) -> int:
        return self.file(path).size

    def fetch(self, path: str, local: Path, sha256: str | None = None) -> Path:
        """Copy one file to `local`, verified against `sha256` or the artifact's listing when either knows it;
        return the local path."""
        local.parent.mkdir(parents=True, exist_ok=True)
        self.storage.download(self._key(path), local)
        listed = self._expected(path)
        expected = sha256 or (listed.sha256 if listed else None)
        if expected and expected != sha256_file(local):
            local.unlink()
            raise ChecksumError(f"{self.uri}/{path} does not match its manifest's sha256; re-publish it")
        return local

    def local_path(self, path: str) -> Path | None:
        """The file itself when the source is a local folder (no copy needed), else None."""
        root = urlparse(self.storage.uri)
        if root.scheme == "file" and self.ref is None:  # an artifact's files are fetched: verified
            return Path(root.path) / self._key(path)
        return None


def open_input(text: str, store: ArtifactStore) -> InputSource:
    """An input named in a spec: `s3://...`/`file:///...` (a prefix or folder) or `KIND/NAME[:vN]`."""
    if "://" in text:
        parsed = urlparse(text)
        if parsed.scheme == "s3":
            bucket, prefix = split_s3_uri(text)
            return InputSource(open_storage(f"s3://{bucket}"), prefix, text.rstrip("/"))
        if parsed.scheme == "file":
            if not Path(parsed.path).exists():
                raise NotFoundError(f"{text} does not exist")
            return InputSource(open_storage(text), "", text.rstrip("/"))
        raise VlkdError(f"unsupported input URI {text!r}: use s3://, file:// or an artifact ref")
    manifest = store.manifest(text)
    known = {f.path: InputFile(f.path, f.size, f.sha256) for f in manifest.files}
    prefix = f"{store.version_prefix(manifest.ref)}/{FILES}"
    return InputSource(store.storage, prefix, str(manifest.ref), manifest.ref, known)


def fetch_weights(text: str, store: ArtifactStore, dest: Path) -> tuple[str, ArtifactRef | None]:
    """Make encoder/model weights loadable: a local file or folder, or a hub id for `from_pretrained`.

    Returns (what to load, the pinned artifact it came from). `hf://ORG/NAME` stays a hub id (the cluster needs
    internet); a single-file source becomes that file, a folder stays a folder."""
    if text.startswith("hf://"):
        return text.removeprefix("hf://"), None
    parsed = urlparse(text)
    if parsed.scheme == "file" and Path(parsed.path).exists():
        return parsed.path, None
    if parsed.scheme == "s3":
        bucket, key = split_s3_uri(text)
        storage = open_storage(f"s3://{bucket}")
        if storage.exists(key):  # a single object, e.g. a .pth checkpoint
            target = dest / Path(key).name
            storage.download(key, target)
            return str(target), None
        source = InputSource(storage, key, text)
    else:
        source = open_input(text, store)
    files = source.files()
    if not files:
        raise NotFoundError(f"weights {text} hold no files")
    for item in files:
        source.fetch(item.path, dest / item.path)
    single = len(files) == 1
    return str(dest / files[0].path) if single else str(dest), source.ref
