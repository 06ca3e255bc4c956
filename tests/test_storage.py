"""The byte stores, both backends, through their one interface."""

from __future__ import annotations

import pickle
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest

from vlkd.artifacts import ArtifactStore, sha256_file
from vlkd.errors import KeyExistsError, NotFoundError, StorageError
from vlkd.storage import S3Storage, attempts, normalize_store_uri, open_storage
from vlkd.storage import s3 as s3_storage


@pytest.fixture
def storage(store_uri):
    return open_storage(store_uri)


def test_bytes_round_trip_and_missing_key(storage):
    storage.write_bytes("a/b.txt", b"hello")
    assert storage.read_bytes("a/b.txt") == b"hello"
    assert storage.exists("a/b.txt") and not storage.exists("a/c.txt")
    with pytest.raises(NotFoundError, match=r"a/c\.txt does not exist"):
        storage.read_bytes("a/c.txt")


def test_a_range_of_an_object_and_its_size_are_read_without_the_rest(storage):
    """What training's row-group reader asks of a store (`vlkd.data.row_groups`)."""
    data = bytes(range(256)) * 40
    storage.write_bytes("shards/s.parquet", data)
    assert storage.size("shards/s.parquet") == len(data)
    assert storage.read_range("shards/s.parquet", 100, 1100) == data[100:1100]
    assert storage.read_range("shards/s.parquet", len(data) - 8, len(data)) == data[-8:]
    assert storage.read_range("shards/s.parquet", 5, 5) == b""
    with pytest.raises(NotFoundError):
        storage.read_range("shards/missing.parquet", 0, 10)
    with pytest.raises(NotFoundError):
        storage.size("shards/missing.parquet")


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


@pytest.mark.parametrize("slash", ["", "/"], ids=["no-slash", "trailing-slash"])
def test_a_prefix_names_the_same_folder_with_or_without_a_trailing_slash(storage, slash):
    assert list(storage.list(f"jobs/j/log{slash}")) == []  # a job's first listing, before it wrote anything
    assert storage.children(f"jobs/j/log{slash}") == []
    for key in ("jobs/j/log/000001.log", "jobs/j/log/000002.log", "jobs/j/state.json", "jobs/j2/state.json"):
        storage.write_bytes(key, b"x")
    assert [i.key for i in storage.list(f"jobs/j/log{slash}")] == ["jobs/j/log/000001.log", "jobs/j/log/000002.log"]
    assert storage.children(f"jobs/j{slash}") == ["log", "state.json"]
    assert storage.children(f"jobs{slash}") == ["j", "j2"]
    assert sorted(i.key for i in storage.list(slash)) == sorted(i.key for i in storage.list(""))
    assert storage.delete_prefix(f"jobs/j/log{slash}") == 2
    assert [i.key for i in storage.list("jobs")] == ["jobs/j/state.json", "jobs/j2/state.json"]


def test_a_prefix_is_a_folder_never_an_object(storage):
    storage.write_bytes("a/b", b"1")
    storage.write_bytes("a/bc/d", b"1")
    assert list(storage.list("a/b")) == [] and storage.children("a/b") == []  # neither `a/b` itself nor `a/bc/d`
    assert storage.delete_prefix("a/b") == 0 and storage.exists("a/b")
    with pytest.raises(ValueError, match="invalid storage key"):
        list(storage.list("a/../b"))


def test_listing_and_deleting_go_past_one_page_of_1000_keys(storage):
    keys = [f"many/{i:04d}" for i in range(1001)]  # S3 answers ListObjectsV2 and DeleteObjects 1,000 keys at a time
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: storage.write_bytes(key, b"k"), keys))
    assert [i.key for i in storage.list("many/")] == keys
    assert storage.children("many") == [k.split("/")[1] for k in keys]
    assert storage.delete_prefix("many") == 1001
    assert list(storage.list("many")) == [] and storage.children("") == []


def test_an_s3_endpoint_that_ignores_conditional_writes_is_refused_before_anything_is_written(s3_endpoint, new_bucket):
    """Older S3-compatible servers drop `If-None-Match`; there two publishers would silently share a version. The
    header is stripped from the requests as such a server would ignore it."""
    bucket = new_bucket()
    storage = S3Storage(bucket, "p", endpoint_url=s3_endpoint)

    def ignore_condition(request, **_):
        del request.headers["If-None-Match"]

    storage.client.meta.events.register("before-sign.s3.PutObject", ignore_condition)
    with pytest.raises(StorageError, match=r"ignores conditional writes \(If-None-Match\)"):
        storage.write_bytes("artifacts/weights/w/v1/claim.json", b"{}", exclusive=True)
    assert list(storage.list("")) == []  # neither the claim nor the probe object is left behind
    storage.write_bytes("plain", b"ok")  # ordinary writes do not depend on it


def test_s3_folder_markers_are_not_files(s3_endpoint, new_bucket):
    """S3 consoles make a "folder" as a zero-byte object `name/`; a listing of inputs must not see it as a file."""
    bucket = new_bucket()
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    for key in ("p/videos/", "p/videos/a.mp4", "p/videos/sub/"):
        client.put_object(Bucket=bucket, Key=key, Body=b"" if key.endswith("/") else b"mp4")
    storage = S3Storage(bucket, "p", endpoint_url=s3_endpoint)
    assert [i.key for i in storage.list("videos")] == ["videos/a.mp4"]
    assert storage.children("videos") == ["a.mp4", "sub"]
    assert storage.children("") == ["videos"]


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


def test_files_above_64_mib_go_up_in_parts_and_come_back_verified(s3_endpoint, new_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    bucket = new_bucket()
    src = tmp_path / "big"
    with open(src, "wb") as f:  # 65 MiB of varied bytes: a part boundary at 64 MiB that a wrong join would show
        for i in range(65):
            f.write(i.to_bytes(1, "big") * 2**20)
    store = ArtifactStore.open(f"s3://{bucket}/p")
    manifest = store.publish("weights", "big", {"big.bin": src})
    key = f"p/{store.version_prefix(manifest.ref)}/files/big.bin"
    head = boto3.client("s3", endpoint_url=s3_endpoint).head_object(Bucket=bucket, Key=key)
    assert s3_storage.MULTIPART_THRESHOLD == 64 * 2**20
    assert head["ETag"].strip('"').endswith("-2")  # an S3 multipart ETag: md5-of-parts, dash, part count
    assert head["ContentLength"] == src.stat().st_size
    store.fetch(manifest.ref, tmp_path / "back")  # ranged GETs above the threshold, then the sha256 check
    assert sha256_file(tmp_path / "back" / "big.bin") == sha256_file(src)


def test_unreachable_endpoint_is_one_clear_error(monkeypatch, refused_port):
    monkeypatch.setattr(attempts, "S3_MAX_ATTEMPTS", 2)  # not ten attempts' backoff, up to 25 s in all
    storage = S3Storage("some-bucket", "p", endpoint_url=f"http://127.0.0.1:{refused_port}")
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


def test_storages_unpickled_in_a_process_share_its_session_until_its_credentials_change(
    s3_endpoint, new_bucket, monkeypatch
):
    """Every Ray task reading a shard unpickles a storage without a client; each new boto3 session loads S3's
    service model again (70-200 ms of CPU), so the process keeps one session, and a fresh one once the variables
    that choose credentials change."""
    bucket = new_bucket()
    first = S3Storage(bucket, "p", endpoint_url=s3_endpoint)
    first.write_bytes("k", b"v")
    made = []
    session_class = boto3.session.Session
    monkeypatch.setattr(boto3.session, "Session", lambda **kw: made.append(kw) or session_class(**kw))
    shipped = pickle.dumps(first)
    clients = [first.client]
    for _ in range(3):
        storage = pickle.loads(shipped)
        assert storage.read_bytes("k") == b"v"
        clients.append(storage.client)
    assert made == [] and len({id(c) for c in clients}) == 4  # the first storage's session, a client each
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "another-key")
    seen = []
    storage = pickle.loads(shipped)
    storage.client.meta.events.register("before-send.s3.GetObject", lambda request, **_: seen.append(request))
    assert storage.read_bytes("k") == b"v"
    assert "Credential=another-key/" in seen[0].headers["Authorization"].decode()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(StorageError, match="no S3 credentials found"):
        pickle.loads(shipped).read_bytes("k")


def test_store_uris_are_normalised(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert normalize_store_uri("rel/store") == (tmp_path / "rel/store").as_uri()
    assert normalize_store_uri("s3://bkt/a/b/") == "s3://bkt/a/b"
    assert normalize_store_uri("s3://bkt") == "s3://bkt"
    with pytest.raises(StorageError, match="unsupported store URI"):
        normalize_store_uri("gs://bkt/x")
    with pytest.raises(StorageError, match="invalid S3 bucket name"):
        normalize_store_uri("s3://B/x")


@pytest.mark.parametrize("uri", ["s3://bkt/vlkd/../other", "s3://bkt/./vlkd", "s3://bkt/vlkd//x"])
def test_an_s3_prefix_with_dot_or_empty_segments_is_refused_not_used_literally(uri, store):
    from vlkd.inputs import open_input

    refused = "S3 takes '.', '..' and empty segments literally, as folder names; write the prefix without them"
    with pytest.raises(StorageError, match=re.escape(f"{uri!r}: {refused}")):
        normalize_store_uri(uri)
    with pytest.raises(StorageError, match=re.escape(refused)):
        open_input(uri, store)


@pytest.mark.parametrize("uri", ["file:../store", "file:store"])
def test_a_file_uri_without_an_absolute_path_names_the_forms_that_work(uri):
    folder = uri.removeprefix("file:")
    forms = f"use file:///ABSOLUTE/PATH, the folder's path itself ({folder}) or s3://BUCKET/PREFIX"
    message = f"store URI {uri!r}: a file: URI needs an absolute path; {forms}"
    with pytest.raises(StorageError, match=re.escape(message)):
        normalize_store_uri(uri)


def test_deleting_a_prefix_removes_the_folders_it_empties_as_on_s3(tmp_path):
    storage = open_storage(str(tmp_path))
    storage.write_bytes("artifacts/features/f/v1/claim.json", b"{}")
    storage.write_bytes("artifacts/dataset/d/v1/manifest.json", b"{}")
    assert storage.delete_prefix("artifacts/features/f/v1") == 1
    assert storage.children("artifacts") == ["dataset"] and not (tmp_path / "artifacts" / "features").exists()
    storage.write_bytes("artifacts/features/f/v1/claim.json", b"{}")  # the emptied folders are made again
    assert storage.children("artifacts/features/f") == ["v1"]


def test_file_store_never_shows_temporary_files(tmp_path):
    store = open_storage(str(tmp_path))
    store.write_bytes("d/real", b"1")
    Path(tmp_path, "d", ".vlkd-tmp-123-partial").write_bytes(b"half")
    assert [i.key for i in store.list("d")] == ["d/real"]
    assert store.children("d") == ["real"]


def _bucket_in(endpoint: str, region: str) -> str:
    name = f"vlkd-test-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    return name


def _count_requests(storage: S3Storage, operation: str) -> list:
    sent: list = []
    storage.client.meta.events.register(f"before-send.s3.{operation}", lambda request, **_: sent.append(request))
    return sent


def test_a_store_asks_s3_for_its_buckets_region_once_and_checkpoints_use_it(s3_endpoint, monkeypatch):
    """pyarrow (Ray Train's checkpoints) does not follow S3's redirects and assumes us-east-1 unless told."""
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    storage = S3Storage(_bucket_in(s3_endpoint, "eu-west-1"), "p", endpoint_url=s3_endpoint)
    asked = _count_requests(storage, "HeadBucket")
    assert storage.bucket_region() == storage.bucket_region() == "eu-west-1"
    path, filesystem = storage.pyarrow_location("checkpoints")
    assert filesystem.region == "eu-west-1" and len(asked) == 1
    with filesystem.open_output_stream(f"{path}/probe") as out:
        out.write(b"written by pyarrow")
    assert storage.read_bytes("checkpoints/probe") == b"written by pyarrow"
    shipped = pickle.loads(pickle.dumps(storage))  # as Ray ships it to a worker: the answer travels with it
    asked_again = _count_requests(shipped, "HeadBucket")
    assert shipped.bucket_region() == "eu-west-1" and asked_again == []


def test_the_buckets_answer_wins_over_the_machines_region_and_a_given_one_over_both(s3_endpoint, monkeypatch):
    """A laptop's AWS_REGION (`aws configure` suggests us-east-1) says where it works, not where the bucket is."""
    bucket = _bucket_in(s3_endpoint, "eu-west-1")
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert S3Storage(bucket, "p", endpoint_url=s3_endpoint).bucket_region() == "eu-west-1"
    given = S3Storage(bucket, "p", endpoint_url=s3_endpoint, region="sa-east-1")
    asked = _count_requests(given, "HeadBucket")
    assert given.bucket_region() == "sa-east-1" and asked == []


def test_an_endpoint_that_names_no_bucket_region_gets_the_clients_region(s3_endpoint, monkeypatch):
    """Some S3-compatible servers send no `x-amz-bucket-region`; there the client's region (us-east-1 unless
    configured) is the only answer."""
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    storage = S3Storage(_bucket_in(s3_endpoint, "eu-west-1"), "p", endpoint_url=s3_endpoint)

    def drop_region(response_dict, **_):
        del response_dict["headers"]["x-amz-bucket-region"]

    storage.client.meta.events.register("before-parse.s3.HeadBucket", drop_region)
    assert storage.bucket_region() == "us-east-1"


def test_the_region_of_a_missing_bucket_is_a_clear_error(s3_endpoint, monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        S3Storage("no-such-bucket-here", "p", endpoint_url=s3_endpoint).bucket_region()


def test_a_pod_with_a_workload_identity_needs_no_static_keys(s3_endpoint, new_bucket, monkeypatch, tmp_path):
    """EKS IRSA gives a pod a web identity token and a role (Pod Identity and GKE do the same through other
    variables); boto3's default credential chain trades them for temporary keys at STS (here moto's)."""
    bucket = new_bucket()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    (tmp_path / "token").write_text("eyJhbGciOiJSUzI1NiJ9.e30.signature")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/vlkd-job")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", s3_endpoint)  # the moto server answers STS too
    storage = S3Storage(bucket, "p", endpoint_url=s3_endpoint)
    sent = _count_requests(storage, "PutObject")
    storage.write_bytes("k", b"v")
    assert storage.read_bytes("k") == b"v"
    authorization = sent[0].headers["Authorization"].decode()
    assert "Credential=ASIA" in authorization and "x-amz-security-token" in authorization  # temporary keys
