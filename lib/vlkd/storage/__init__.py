"""Byte stores behind one small interface (`Storage`): `file://` (the embedded default, `vlkd.storage.file`) and
`s3://` (boto3, `vlkd.storage.s3`).

Keys are `/`-separated paths relative to the store's root. All object I/O of vlkd goes through here, so no
stage calls boto3 itself. boto3 is imported lazily: the CLI's `--help` must not pay for it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from vlkd.errors import StorageError
from vlkd.storage.attempts import interactive, patient
from vlkd.storage.base import ObjectInfo, Progress, Storage
from vlkd.storage.file import FileStorage
from vlkd.storage.s3 import S3Storage

__all__ = [
    "FileStorage",
    "ObjectInfo",
    "Progress",
    "S3Storage",
    "Storage",
    "default_store_uri",
    "interactive",
    "normalize_store_uri",
    "open_storage",
    "patient",
    "split_s3_uri",
]

DEFAULT_STORE_ENV = "VLKD_STORE"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def default_store_uri() -> str:
    """`--store` falls back to `$VLKD_STORE`, then to `~/.vlkd/store`."""
    return os.environ.get(DEFAULT_STORE_ENV) or Path.home().joinpath(".vlkd", "store").as_uri()


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of `s3://BUCKET/KEY`, the key without its outer slashes. S3 takes a key literally: in
    `s3://b/vlkd/../other`, `..` is a folder's name, not a step up, so vlkd would write where the user did not mean
    and where every other S3 client (`aws s3`, a console) shows a folder named `..`. Such a key is refused, not
    resolved: resolving it could also climb out of the prefix, and the user knows which place was meant."""
    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.strip("/")
    if not _BUCKET.match(bucket):
        raise StorageError(f"invalid S3 bucket name {bucket!r} in {uri!r}")
    if key and any(part in ("", ".", "..") for part in key.split("/")):
        raise StorageError(
            f"{uri!r}: S3 takes '.', '..' and empty segments literally, as folder names; write the prefix without them"
        )
    return bucket, key


def normalize_store_uri(uri: str) -> str:
    """Accept `s3://bucket/prefix`, `file:///abs/path` or a plain local path; return a URI."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        bucket, prefix = split_s3_uri(uri)
        return f"s3://{bucket}/{prefix}".rstrip("/")
    if parsed.scheme == "file":
        path = unquote(parsed.path)
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"file store URI {uri!r} names a host; use file:///absolute/path")
        if not path.startswith("/"):
            raise StorageError(
                f"store URI {uri!r}: a file: URI needs an absolute path; use file:///ABSOLUTE/PATH, the folder's "
                f"path itself ({path or '.'}) or s3://BUCKET/PREFIX"
            )
        return Path(path).as_uri()
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
