"""The S3 store through the faults a cloud's S3 shows: 503 SlowDown, connections dropped before an answer, bodies
cut short. A proxy (tests/s3_faults.py) in front of the moto server injects them; every test also checks that the
faults it survived happened."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import pytest
from s3_faults import CUT, DROP, KINDS, SLOWDOWN, FaultyS3Proxy

from vlkd.artifacts import ArtifactStore, Manifest, collect_files
from vlkd.data.synth import TEXT_DIR
from vlkd.errors import NotFoundError, StorageError
from vlkd.storage import S3Storage, attempts

DATA = bytes(range(256)) * 64  # 16 KiB: a body long enough to be cut in the middle


@pytest.fixture
def faulty_s3(s3_endpoint: str) -> Iterator[Callable[..., FaultyS3Proxy]]:
    """`faulty_s3(share, seed=0, kinds=KINDS, limit=None)`: a started proxy in front of the moto server."""
    with contextlib.ExitStack() as running:
        yield lambda share, **options: running.enter_context(FaultyS3Proxy(s3_endpoint, share, **options))


@pytest.fixture
def bucket(new_bucket, s3_endpoint: str) -> str:
    """A bucket holding DATA at `p/data`, written past the proxy."""
    name = new_bucket()
    S3Storage(name, "p", endpoint_url=s3_endpoint).write_bytes("data", DATA)
    return name


def test_every_verb_succeeds_through_30_percent_transient_faults(faulty_s3, bucket, tmp_path):
    proxy = faulty_s3(0.3, seed=2)
    storage = S3Storage(bucket, "p", endpoint_url=proxy.url)
    for i in range(6):
        storage.write_bytes(f"many/{i:02d}", DATA[i:])
    for i in range(6):
        assert storage.read_bytes(f"many/{i:02d}") == DATA[i:]
        assert storage.read_range("data", 100 * i, 100 * i + 5000) == DATA[100 * i : 100 * i + 5000]
        assert storage.exists(f"many/{i:02d}") and not storage.exists(f"many/{i:02d}-not")
    assert [info.key for info in storage.list("many")] == [f"many/{i:02d}" for i in range(6)]
    assert storage.size("data") == len(DATA)
    storage.download("data", tmp_path / "data")
    assert (tmp_path / "data").read_bytes() == DATA
    assert all(proxy.faults[kind] > 0 for kind in KINDS), proxy.faults  # seed 2: 4 SlowDown, 4 dropped, 2 cut


def test_a_body_cut_short_is_asked_for_again(faulty_s3, bucket):
    """botocore retries a request until its answer's headers arrive, never a body that breaks off afterwards."""
    proxy = faulty_s3(1.0, kinds=(CUT,), limit=2)
    storage = S3Storage(bucket, "p", endpoint_url=proxy.url)
    assert storage.read_bytes("data") == DATA
    assert storage.read_range("data", 1000, 9000) == DATA[1000:9000]
    assert proxy.faults == {CUT: 2}


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (SLOWDOWN, r"failed 3 times, last with SlowDown .*throttling or unavailable: try again later"),
        (DROP, r"failed despite retries, last with: Connection was closed .*check the network to http://"),
        (CUT, r"broke off 3 times, last with: .*IncompleteRead.*check the network to http://"),
    ],
    ids=[SLOWDOWN, DROP, CUT],
)
def test_a_fault_that_persists_is_one_clear_error_after_a_bounded_number_of_attempts(
    faulty_s3, bucket, monkeypatch, kind, message
):
    monkeypatch.setattr(attempts, "S3_MAX_ATTEMPTS", 3)
    proxy = faulty_s3(1.0, kinds=(kind,))
    storage = S3Storage(bucket, "p", endpoint_url=proxy.url)
    started = time.monotonic()
    with pytest.raises(StorageError, match=rf"s3://{bucket}/p/data {message}"):
        storage.read_bytes("data")
    assert proxy.faults == {kind: 3}
    assert time.monotonic() - started < 10  # botocore's backoff for throttling: at most 1 s, then 2 s


def test_a_download_whose_body_keeps_breaking_off_is_one_clear_error(faulty_s3, bucket, monkeypatch, tmp_path):
    """boto3's download retries a broken body itself (s3transfer), then raises its own error, not botocore's."""
    monkeypatch.setattr(attempts, "S3_MAX_ATTEMPTS", 3)
    proxy = faulty_s3(1.0, kinds=(CUT,))
    storage = S3Storage(bucket, "p", endpoint_url=proxy.url)
    with pytest.raises(
        StorageError, match=rf"s3://{bucket}/p/data failed despite retries, last with: 8192 read, .* 16384"
    ):
        storage.download("data", tmp_path / "data")
    assert proxy.faults == {CUT: 3}


def test_an_error_s3_answers_is_not_retried(faulty_s3, bucket):
    proxy = faulty_s3(0.0)
    storage = S3Storage(bucket, "p", endpoint_url=proxy.url)
    with pytest.raises(NotFoundError, match="does not exist"):
        storage.read_bytes("missing")
    assert proxy.requests == {"GET": 1}


@pytest.mark.timeout(300)
def test_a_text_stage_job_publishes_the_same_artifact_through_transient_faults(
    ray_session, faulty_s3, new_bucket, s3_endpoint, synth_root, tmp_path
):
    """The whole job, its Ray Data tasks included (they get the pickled store, the proxy its endpoint), against a
    run of the same spec on a store without faults. Seed 23 gives faults of every kind, among them the body of a
    manifest the job reads cut short, which ended the job while bodies were not read again."""
    from test_text_job import text_spec

    from vlkd.jobs import text as text_job
    from vlkd.runtime import JobContext

    spec = text_spec()
    proxy = faulty_s3(0.25, seed=23)

    def run(endpoint: str, folder: str) -> list[Manifest]:
        store = ArtifactStore.open(f"s3://{new_bucket()}/vlkd", endpoint_url=endpoint)
        store.publish("dataset", "synth-text", collect_files([synth_root / TEXT_DIR]))
        (tmp_path / folder).mkdir()
        return text_job.run(spec, JobContext(f"faults-{folder}", store, tmp_path / folder))

    clean = run(s3_endpoint, "clean")
    faulty = run(proxy.url, "faulty")
    assert [m.ref for m in faulty] == [m.ref for m in clean]
    for got, expected in zip(faulty, clean, strict=True):
        assert {(f.path, f.sha256) for f in got.files} == {(f.path, f.sha256) for f in expected.files}
    assert all(proxy.faults[kind] > 0 for kind in KINDS), proxy.faults
