"""`s3://` stores: a prefix in an S3-compatible bucket, through boto3 (imported when a client is first made, so
the CLI's `--help` does not pay for it), each request tried as often as `vlkd.storage.attempts` says."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vlkd.errors import KeyExistsError, NotFoundError, StorageError
from vlkd.storage import attempts
from vlkd.storage.base import ObjectInfo, Progress, check_key, folder_key

# Parts above this size go up as S3 multipart uploads (boto3 then sends parts in parallel).
MULTIPART_THRESHOLD = 64 << 20
# Connections a client keeps open for the threads that share it.
MAX_CONNECTIONS = 64
# Where an S3 store checks, once, that its endpoint honours conditional writes (deleted right after).
PROBE_PREFIX = ".vlkd/conditional-write-probe"


def _bare(code: str) -> bool:
    """Whether botocore found no S3 error code in an answer: none, or only the HTTP status it puts there instead."""
    return not code or code.isdigit()


_SESSION_LOCK = threading.Lock()
_last_session: tuple[tuple[str | None, tuple[tuple[str, str], ...]], Any] | None = None


def _session(region: str | None) -> Any:
    """The process's boto3 session for `region` and its AWS environment, made once. A new session loads S3's
    service model again: 70-200 ms of CPU per client, which every Ray task reading a shard paid (a storage arrives
    unpickled, without a client), while a client from a loaded session takes about 7 ms. The session resolves and
    keeps credentials, so it is kept only while the variables that choose them (AWS_*, and HOME for ~/.aws) are
    unchanged. Call under _SESSION_LOCK."""
    import boto3

    global _last_session
    key = (region, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_") or k == "HOME")))
    if _last_session is None or _last_session[0] != key:
        _last_session = (key, boto3.session.Session(region_name=region))
    return _last_session[1]


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
        self._bucket_region: str | None = None
        self._client: Any = None
        self._lock = threading.Lock()
        self._conditional_writes_checked = False

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
        from botocore.config import Config

        config = Config(
            connect_timeout=5,
            read_timeout=60,
            retries={"total_max_attempts": attempts.S3_MAX_ATTEMPTS, "mode": "standard"},
            # A custom endpoint (MinIO, Ceph, a test server) rarely has wildcard DNS for virtual-hosted buckets.
            s3={"addressing_style": "path" if self._endpoint_url else "auto"},
            # Threads share a client (a publish reads 32 videos ahead, `vlkd.overlap`): botocore's default pool of
            # 10 connections would make the rest open a connection per request and drop it.
            max_pool_connections=MAX_CONNECTIONS,
        )
        with _SESSION_LOCK:  # a boto3 session is not thread-safe, so clients are made one at a time
            return _session(self._region).client("s3", endpoint_url=self._endpoint_url, config=config)

    @property
    def endpoint(self) -> str:
        return self.client.meta.endpoint_url

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _folder_key(self, prefix: str) -> str:
        """The S3 prefix that lists the folder `prefix`: ends in `/` unless it is the bucket's root."""
        full = "/".join(p for p in (self.prefix, folder_key(prefix)) if p)
        return f"{full}/" if full else ""

    def _unkey(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def _where(self, key: str) -> str:
        """`key` as an s3:// URI for messages: never validated, so naming the place cannot itself fail."""
        return f"s3://{self.bucket}/{'/'.join(p for p in (self.prefix, key) if p)}"

    def _missing_bucket(self) -> StorageError:
        return StorageError(f"bucket {self.bucket!r} does not exist at {self.endpoint}; create it or fix the store URI")

    def _not_s3(self, what: str) -> StorageError:
        """The error for an answer without an S3 error code (`what`: which request got which status). S3 names the
        error in the body of every error answer except HEAD's, so some other HTTP server answered: a wrong port, a
        console's (MinIO's) instead of the API's. Unless HeadBucket's answer carries S3's headers (`x-amz-...`) and
        says 404: then it is S3 and the bucket is missing."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            answer = exc.response.get("ResponseMetadata", {})
            headers = answer.get("HTTPHeaders", {})
            if answer.get("HTTPStatusCode") == 404 and any(h.lower().startswith("x-amz") for h in headers):
                return self._missing_bucket()
        except BotoCoreError:
            pass
        return StorageError(
            f"the endpoint {self.endpoint} does not answer as S3 ({what} without an S3 error code); check "
            "AWS_ENDPOINT_URL: it must be the S3 API's address (on MinIO the API's port, 9000 by default, not the "
            "console's)"
        )

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Turn botocore's and boto3's exceptions into vlkd errors that say what to do."""
        from boto3.exceptions import RetriesExceededError, S3UploadFailedError
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            HTTPClientError,
            NoCredentialsError,
        )

        where = self._where(key)
        try:
            yield
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                raise KeyExistsError(f"{where} already exists") from None
            bodiless = exc.operation_name.startswith("Head")  # a HEAD answer has no body to name its error
            if _bare(code) and not bodiless and isinstance(status, int) and 400 <= status < 500:
                raise self._not_s3(f"{exc.operation_name} of {where} got HTTP {status}") from None
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFoundError(f"{where} does not exist") from None
            if code == "NoSuchBucket":
                raise self._missing_bucket() from None
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise StorageError(
                    f"access denied to {where} ({code}); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE "
                    "or the role of the pod's workload identity, and that it may use this bucket"
                ) from None
            if isinstance(status, int) and status >= 500:
                attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
                raise StorageError(
                    f"S3 request on {where} failed {attempts} times, last with {code} {err.get('Message', '')}; "
                    "the service is throttling or unavailable: try again later"
                ) from None
            raise StorageError(f"S3 request on {where} failed: {code} {err.get('Message', '')}".strip()) from None
        except NoCredentialsError:
            raise StorageError(
                "no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or on "
                "Kubernetes give the pod a workload identity (EKS IRSA or Pod Identity)"
            ) from None
        except EndpointConnectionError:
            raise StorageError(
                f"cannot reach the S3 endpoint {self.endpoint}; check AWS_ENDPOINT_URL and the network"
            ) from None
        except (HTTPClientError, RetriesExceededError) as exc:  # a connection that kept breaking, retries spent
            last = getattr(exc, "last_exception", None) or exc  # boto3's download error wraps the last one
            raise StorageError(
                f"S3 request on {where} failed despite retries, last with: {last}; check the network to {self.endpoint}"
            ) from None
        except (BotoCoreError, S3UploadFailedError) as exc:
            raise StorageError(f"S3 request on {where} failed: {exc}") from None

    def read_bytes(self, key: str) -> bytes:
        return self._get_body(key)

    def read_range(self, key: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        return self._get_body(key, Range=f"bytes={start}-{end - 1}")

    def _get_body(self, key: str, **extra: Any) -> bytes:
        """The body of a GET of `key` (`extra`: a Range), asked for again when reading it breaks off. botocore
        retries a request until an answer's headers arrive, never a body that then fails to stream in (a reset
        connection, a read timeout, a body cut short), so without this one such failure ends a multi-day run.
        Errors that S3 answers (NoSuchKey, AccessDenied) are not retried."""
        from botocore.exceptions import FlexibleChecksumError, HTTPClientError, IncompleteReadError
        from urllib3.exceptions import HTTPError

        # HTTPClientError: ResponseStreamingError (a broken connection) and ReadTimeoutError; IncompleteReadError:
        # fewer bytes than Content-Length; FlexibleChecksumError: bytes changed on the way; HTTPError: urllib3's
        # SSLError, which botocore's body lets through.
        transient = (HTTPClientError, IncompleteReadError, FlexibleChecksumError, HTTPError)
        broken: BaseException | None = None
        tries = attempts.S3_MAX_ATTEMPTS
        for attempt in range(tries):
            if attempt:
                time.sleep(attempts.body_backoff(attempt))
            with self._errors(key):
                body = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)["Body"]
                try:  # only the body's read: botocore has already retried the request itself
                    with body:
                        return body.read()
                except transient as exc:
                    broken = exc
        raise StorageError(
            f"reading {self._where(key)} broke off {tries} times, last with: {broken}; check the network to "
            f"{self.endpoint}"
        )

    def size(self, key: str) -> int:
        with self._errors(key):
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"]

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        if exclusive:
            self._check_conditional_writes()
        extra = {"IfNoneMatch": "*"} if exclusive else {}
        with self._errors(key):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)

    def _check_conditional_writes(self) -> None:
        """Refuse to publish on an endpoint that ignores `If-None-Match` (S3 before 2024-08, older MinIO and Ceph
        RGW): there two publishers would both take a version and one would silently overwrite the other. Checked
        once per storage with a probe object: a second exclusive create of it must be refused."""
        if self._conditional_writes_checked:
            return
        probe = self._key(f"{PROBE_PREFIX}/{uuid.uuid4().hex}")
        try:
            with self._errors(PROBE_PREFIX):
                for _ in range(2):
                    self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"", IfNoneMatch="*")
        except KeyExistsError:
            self._conditional_writes_checked = True
            return
        finally:
            with contextlib.suppress(StorageError), self._errors(PROBE_PREFIX):
                self.client.delete_object(Bucket=self.bucket, Key=probe)
        raise StorageError(
            f"the S3 endpoint {self.endpoint} ignores conditional writes (If-None-Match), which vlkd needs to "
            "publish artifacts safely; use a service or release that supports them (AWS S3 has since 2024-08)"
        )

    def _transfer_config(self) -> Any:
        """How boto3 moves whole files. A download re-sends the GET of a part whose body breaks off (s3transfer
        0.19's `GetObjectTask._main` retries its `S3_RETRYABLE_DOWNLOAD_ERRORS`: socket errors, read timeouts, short
        and broken bodies), up to `num_download_attempts` times without backoff; we give it our number of attempts."""
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_THRESHOLD,
            num_download_attempts=attempts.S3_MAX_ATTEMPTS,
        )

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
        """ListObjectsV2 pages (1,000 keys each) of the folder `prefix`."""
        full = self._folder_key(prefix)
        with self._errors(prefix):
            yield from self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full, **extra)

    @staticmethod
    def _objects(page: dict) -> Iterator[dict]:
        """A page's objects without folder markers: the zero-byte `name/` keys that S3 consoles create for a
        "folder" are not files (a file store has no such thing)."""
        return (obj for obj in page.get("Contents", []) if not obj["Key"].endswith("/"))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        for page in self._pages(prefix):
            for obj in self._objects(page):
                yield ObjectInfo(self._unkey(obj["Key"]), obj["Size"])

    def children(self, prefix: str) -> list[str]:
        names: set[str] = set()
        for page in self._pages(prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                names.add(common["Prefix"].rstrip("/").rsplit("/", 1)[-1])
            for obj in self._objects(page):
                names.add(obj["Key"].rsplit("/", 1)[-1])
        return sorted(names)

    def bucket_region(self) -> str:
        """The region of the bucket, for clients that do not follow S3's redirects (pyarrow, which Ray Train
        checkpoints through, would otherwise assume us-east-1) and for the pods of a job. A region given to the
        store (the spec's `storage.region`) wins; otherwise S3's answer to HeadBucket names it
        (`x-amz-bucket-region`, sent even with a 301 or 403, so no permission on the bucket is needed), over
        AWS_REGION / AWS_DEFAULT_REGION, which say where a machine works (`aws configure` sets us-east-1), not
        where the bucket is. A custom endpoint (MinIO, Ceph RGW) that sends no such header gets those, else the
        client's region, else us-east-1. Asked once per storage; a storage pickled to a Ray worker keeps the
        answer."""
        if self._bucket_region is None:
            self._bucket_region = self._region or self._region_from_head_bucket()
        return self._bucket_region

    def _region_from_head_bucket(self) -> str:
        from botocore.exceptions import ClientError

        with self._errors(""):
            try:
                headers = self.client.head_bucket(Bucket=self.bucket)["ResponseMetadata"]["HTTPHeaders"]
            except ClientError as exc:
                headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
                missing = exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket")
                if missing and "x-amz-bucket-region" not in headers:
                    raise self._missing_bucket() from None
        machine = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return headers.get("x-amz-bucket-region") or machine or self.client.meta.region_name or "us-east-1"

    def pyarrow_location(self, prefix: str) -> tuple[str, Any]:
        """Where Ray Train (which speaks pyarrow filesystems) should write under `prefix`: the same bucket,
        endpoint and region as this store, as many attempts per request; credentials from the same environment
        (pyarrow's default chain, which includes workload identities: IRSA's web identity token, Pod Identity)."""
        from pyarrow import fs

        options: dict[str, Any] = {
            "region": self.bucket_region(),
            "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=attempts.S3_MAX_ATTEMPTS),
        }
        if self._endpoint_url:
            parsed = urlparse(self._endpoint_url)
            options.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
        return f"{self.bucket}/{self._folder_key(prefix)}".rstrip("/"), fs.S3FileSystem(**options)

    def delete_prefix(self, prefix: str) -> int:
        keys = [self._key(info.key) for info in self.list(prefix)]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            with self._errors(prefix):
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if failed := answer.get("Errors"):  # a 200 answer can still refuse some keys (permissions, locks)
                first = failed[0]
                raise StorageError(
                    f"could not delete {len(failed)} objects under s3://{self.bucket}/{self._folder_key(prefix)}, "
                    f"e.g. {first.get('Key')}: {first.get('Code')} {first.get('Message', '')}".strip()
                )
        return len(keys)

    def age(self, key: str) -> timedelta:
        """S3 stamps an object's LastModified and a response's Date header with its own clock."""
        from email.utils import parsedate_to_datetime

        with self._errors(key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        now = parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]["date"])
        return max(now - head["LastModified"], timedelta(0))  # both to the second
