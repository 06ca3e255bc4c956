"""The byte stores, both backends, through their one interface."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import boto3
import pytest

from vlkd import storage as storage_module
from vlkd.errors import KeyExistsError, NotFoundError, StorageError
from vlkd.storage import S3Storage, normalize_store_uri, open_storage


@pytest.fixture
def storage(store_uri):
    return open_storage(store_uri)


def test_bytes_round_trip_and_missing_key(storage):
    storage.write_bytes("a/b.txt", b"hello")
    assert storage.read_bytes("a/b.txt") == b"hello"
    assert storage.exists("a/b.txt") and not storage.exists("a/c.txt")
    with pytest.raises(NotFoundError, match=r"a/c\.txt does not exist"):
        storage.read_bytes("a/c.txt")


def test_exclusive_write_refuses_an_existing_key(storage):
    storage.write_bytes("claim", b"first", exclusive=True)
    with pytest.raises(KeyExistsError):
        storage.write_bytes("claim", b"second", exclusive=True)
    assert storage.read_bytes("claim") == b"first"


def test_exclusive_write_has_exactly_one_winner_among_concurrent_writers(storage):
    winners: list[int] = []
    barrier = threading.Barrier(8)

    def write(i: int) -> None:
        barrier.wait()
        try:
            storage.write_bytes("race", str(i).encode(), exclusive=True)
            winners.append(i)
        except KeyExistsError:
            pass

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert storage.read_bytes("race") == str(winners[0]).encode()


def test_listing_and_children(storage):
    for key in ("x/1/a", "x/1/b", "x/2/c", "y"):
        storage.write_bytes(key, b"..")
    assert sorted(i.key for i in storage.list("x")) == ["x/1/a", "x/1/b", "x/2/c"]
    assert {i.size for i in storage.list("x")} == {2}
    assert storage.children("x") == ["1", "2"]
    assert storage.children("") == ["x", "y"]
    assert storage.children("nothing-here") == []
    assert storage.delete_prefix("x/1") == 2
    assert [i.key for i in storage.list("x")] == ["x/2/c"]


def test_upload_and_download_report_progress(storage, tmp_path):
    src = tmp_path / "blob"
    src.write_bytes(b"z" * 3_000_000)
    seen: list[int] = []
    storage.upload("blobs/one", src, seen.append)
    assert sum(seen) == 3_000_000
    dst = tmp_path / "back"
    seen.clear()
    storage.download("blobs/one", dst, seen.append)
    assert dst.read_bytes() == src.read_bytes() and sum(seen) == 3_000_000


def test_large_files_go_up_as_multipart_uploads(s3_endpoint, new_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setattr(storage_module, "MULTIPART_THRESHOLD", 5 * 2**20)  # S3's smallest part size
    bucket = new_bucket()
    src = tmp_path / "big"
    src.write_bytes(bytes(range(256)) * (11 * 2**20 // 256))
    open_storage(f"s3://{bucket}/p").upload("big", src)
    head = boto3.client("s3", endpoint_url=s3_endpoint).head_object(Bucket=bucket, Key="p/big")
    assert head["ETag"].strip('"').endswith("-3")  # an S3 multipart ETag: md5-of-parts, dash, part count
    assert head["ContentLength"] == src.stat().st_size


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint_is_one_clear_error():
    storage = S3Storage("some-bucket", "p", endpoint_url=f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(StorageError, match=r"cannot reach the S3 endpoint http://127\.0\.0\.1:\d+"):
        storage.read_bytes("k")


def test_missing_bucket_is_named(s3_endpoint):
    storage = S3Storage("no-such-bucket-here", "p", endpoint_url=s3_endpoint)
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        storage.write_bytes("k", b"1")


def test_missing_credentials_say_which_variables_to_set(s3_endpoint, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match="no S3 credentials found; set AWS_ACCESS_KEY_ID"):
        S3Storage("some-bucket", "p", endpoint_url=s3_endpoint).read_bytes("k")


def test_store_uris_are_normalised(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert normalize_store_uri("rel/store") == (tmp_path / "rel/store").as_uri()
    assert normalize_store_uri("s3://bkt/a/b/") == "s3://bkt/a/b"
    assert normalize_store_uri("s3://bkt") == "s3://bkt"
    with pytest.raises(StorageError, match="unsupported store URI"):
        normalize_store_uri("gs://bkt/x")
    with pytest.raises(StorageError, match="invalid S3 bucket name"):
        normalize_store_uri("s3://B/x")


def test_file_store_never_shows_temporary_files(tmp_path):
    store = open_storage(str(tmp_path))
    store.write_bytes("d/real", b"1")
    Path(tmp_path, "d", ".vlkd-tmp-123-partial").write_bytes(b"half")
    assert [i.key for i in store.list("d")] == ["d/real"]
    assert store.children("d") == ["real"]
