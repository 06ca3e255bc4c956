"""Byte stores behind one small interface: `file://` (the embedded default) and `s3://` (boto3).

Keys are `/`-separated paths relative to the store's root. All object I/O of vlkd goes through here, so no
stage calls boto3 itself. boto3 is imported lazily: the CLI's `--help` must not pay for it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from vlkd.errors import KeyExistsError, NotFoundError, StorageError

Progress = Callable[[int], None]
"""Called with the number of bytes just transferred."""

DEFAULT_STORE_ENV = "VLKD_STORE"
_CHUNK = 1 << 20
# Parts above this size go up as S3 multipart uploads (boto3 then sends parts in parallel).
MULTIPART_THRESHOLD = 64 << 20
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class Storage(Protocol):
    """What the artifact store needs from a byte store."""

    uri: str

    def read_bytes(self, key: str) -> bytes: ...

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        """Write a whole object. With `exclusive`, raise `KeyExistsError` if the key already exists,
        atomically: of two concurrent exclusive writers exactly one succeeds."""

    def upload(self, key: str, local_path: Path, progress: Progress | None = None) -> None: ...

    def download(self, key: str, local_path: Path, progress: Progress | None = None) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under `prefix` (recursively)."""

    def children(self, prefix: str) -> list[str]:
        """The names directly below `prefix` (the next path segment), objects and 'folders' alike."""

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix`; return how many."""

    def pyarrow_location(self, prefix: str) -> tuple[str, Any]:
        """(path, pyarrow filesystem or None for local) of `prefix`, for libraries that speak pyarrow."""


def default_store_uri() -> str:
    """`--store` falls back to `$VLKD_STORE`, then to `~/.vlkd/store`."""
    return os.environ.get(DEFAULT_STORE_ENV) or Path.home().joinpath(".vlkd", "store").as_uri()


def normalize_store_uri(uri: str) -> str:
    """Accept `s3://bucket/prefix`, `file:///abs/path` or a plain local path; return a URI."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        bucket = parsed.netloc
        if not _BUCKET.match(bucket):
            raise StorageError(f"invalid S3 bucket name {bucket!r} in store URI {uri!r}")
        return f"s3://{bucket}/{parsed.path.strip('/')}".rstrip("/")
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"file store URI {uri!r} names a host; use file:///absolute/path")
        return Path(unquote(parsed.path)).as_uri()
    if parsed.scheme == "":
        return Path(uri).expanduser().resolve().as_uri()
    raise StorageError(f"unsupported store URI {uri!r}: use s3://BUCKET/PREFIX, file:///PATH or a local path")


def open_storage(uri: str, endpoint_url: str | None = None, region: str | None = None) -> Storage:
    """The byte store at `uri`. S3 endpoint and region fall back to the standard AWS environment/config
    (`AWS_ENDPOINT_URL`, `AWS_REGION`, profiles); credentials always come from there, never from a spec."""
    uri = normalize_store_uri(uri)
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return S3Storage(parsed.netloc, parsed.path.strip("/"), endpoint_url=endpoint_url, region=region)
    return FileStorage(Path(unquote(parsed.path)))


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid storage key {key!r}")
    return key


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
        return self.root / _check_key(key)

    def _dir(self, prefix: str) -> Path:
        prefix = prefix.rstrip("/")
        return self._path(prefix) if prefix else self.root

    @contextlib.contextmanager
    def _staged(self, key: str) -> Iterator[tuple[Path, Path]]:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{self._TMP}{uuid.uuid4().hex}-{target.name}")
        try:
            yield tmp, target
        finally:
            tmp.unlink(missing_ok=True)

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
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
        base = self._dir(prefix)
        if base.is_file():
            yield ObjectInfo(prefix, base.stat().st_size)
            return
        for folder, _dirs, files in os.walk(base):
            for name in sorted(files):
                if name.startswith(self._TMP):
                    continue
                path = Path(folder, name)
                yield ObjectInfo(path.relative_to(self.root).as_posix(), path.stat().st_size)

    def children(self, prefix: str) -> list[str]:
        base = self._dir(prefix)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if not p.name.startswith(self._TMP))

    def pyarrow_location(self, prefix: str) -> tuple[str, Any]:
        """Where Ray Train (which speaks pyarrow filesystems) should write under `prefix`."""
        return str(self._dir(prefix)), None

    def delete_prefix(self, prefix: str) -> int:
        base = self._dir(prefix)
        if base.is_file():
            base.unlink()
            return 1
        count = sum(1 for _ in self.list(prefix))
        shutil.rmtree(base, ignore_errors=True)
        return count


def _copy(src: Any, dst: Any, progress: Progress | None) -> None:
    while chunk := src.read(_CHUNK):
        dst.write(chunk)
        if progress:
            progress(len(chunk))


class S3Storage:
    """A prefix in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, ...).

    Atomicity: S3 PUTs are atomic per object and reads after writes are strongly consistent. Exclusive
    writes send `If-None-Match: *` (S3 conditional writes): the service accepts exactly one of several
    concurrent creators of a key and answers the others 412 PreconditionFailed (or 409 while a competing
    conditional write is in flight), which we raise as `KeyExistsError`. MinIO and Ceph RGW honour it too.
    """

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None, region: str | None = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        # Resolved now, not when the client is made: a storage pickled to a Ray worker must reach the same
        # endpoint whatever that worker's environment says.
        self._endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self._region = region
        self._client: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Ray ships storages to its tasks by pickling; boto3 clients and locks do not pickle, and a fresh
        # process should make its own client anyway.
        return {k: v for k, v in self.__dict__.items() if k not in ("_client", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _client=None, _lock=threading.Lock())

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            # A custom endpoint (MinIO, Ceph, a test server) rarely has wildcard DNS for virtual-hosted buckets.
            s3={"addressing_style": "path" if self._endpoint_url else "auto"},
        )
        session = boto3.session.Session(region_name=self._region)
        return session.client("s3", endpoint_url=self._endpoint_url, config=config)

    @property
    def endpoint(self) -> str:
        return self.client.meta.endpoint_url

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _unkey(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Turn botocore's exceptions into vlkd errors that say what to do."""
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

        where = f"s3://{self.bucket}/{self._key(key) if key else self.prefix}"
        try:
            yield
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                raise KeyExistsError(f"{where} already exists") from None
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFoundError(f"{where} does not exist") from None
            if code == "NoSuchBucket":
                raise StorageError(
                    f"bucket {self.bucket!r} does not exist at {self.endpoint}; create it or fix the store URI"
                ) from None
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise StorageError(
                    f"access denied to {where} ({code}); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
                ) from None
            raise StorageError(f"S3 request on {where} failed: {code} {err.get('Message', '')}".strip()) from None
        except NoCredentialsError:
            raise StorageError(
                "no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            ) from None
        except EndpointConnectionError:
            raise StorageError(
                f"cannot reach the S3 endpoint {self.endpoint}; check AWS_ENDPOINT_URL and the network"
            ) from None
        except BotoCoreError as exc:
            raise StorageError(f"S3 request on {where} failed: {exc}") from None

    def read_bytes(self, key: str) -> bytes:
        with self._errors(key):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        extra = {"IfNoneMatch": "*"} if exclusive else {}
        with self._errors(key):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD)

    def upload(self, key: str, local_path: Path, progress: Progress | None = None) -> None:
        with self._errors(key):
            self.client.upload_file(
                str(local_path), self.bucket, self._key(key), Callback=progress, Config=self._transfer_config()
            )

    def download(self, key: str, local_path: Path, progress: Progress | None = None) -> None:
        with self._errors(key):
            self.client.download_file(
                self.bucket, self._key(key), str(local_path), Callback=progress, Config=self._transfer_config()
            )

    def exists(self, key: str) -> bool:
        try:
            with self._errors(key):
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except NotFoundError:
            return False
        return True

    def _pages(self, prefix: str, **extra: Any) -> Iterator[dict]:
        full = self._key(prefix.rstrip("/")) + "/" if prefix else (f"{self.prefix}/" if self.prefix else "")
        with self._errors(prefix):
            yield from self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full, **extra)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        for page in self._pages(prefix):
            for obj in page.get("Contents", []):
                yield ObjectInfo(self._unkey(obj["Key"]), obj["Size"])

    def children(self, prefix: str) -> list[str]:
        names: set[str] = set()
        for page in self._pages(prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                names.add(common["Prefix"].rstrip("/").rsplit("/", 1)[-1])
            for obj in page.get("Contents", []):
                names.add(obj["Key"].rsplit("/", 1)[-1])
        return sorted(names)

    def pyarrow_location(self, prefix: str) -> tuple[str, Any]:
        """Where Ray Train (which speaks pyarrow filesystems) should write under `prefix`: the same bucket,
        endpoint and region as this store; credentials from the same environment."""
        from pyarrow import fs

        options: dict[str, Any] = {"region": self.client.meta.region_name}
        if self._endpoint_url:
            parsed = urlparse(self._endpoint_url)
            options.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
        return f"{self.bucket}/{self._key(prefix)}", fs.S3FileSystem(**options)

    def delete_prefix(self, prefix: str) -> int:
        keys = [self._key(info.key) for info in self.list(prefix)]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            with self._errors(prefix):
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)
