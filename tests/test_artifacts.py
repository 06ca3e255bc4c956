"""The artifact store on both backends: publish, resolve, fetch, lineage, aliases, atomicity, concurrency."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from vlkd import __version__
from vlkd.artifacts import ArtifactStore, collect_files, sha256_file
from vlkd.errors import ChecksumError, NotFoundError, RefError, VlkdError
from vlkd.refs import ArtifactRef


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "nested").mkdir(parents=True)
    (root / "captions.jsonl").write_text('{"video_id": "v1", "start": 0, "end": 2, "text": "a red circle"}\n')
    (root / "nested" / "video.bin").write_bytes(bytes(range(256)) * 400)
    return root


def publish_dir(store: ArtifactStore, ref: str, directory: Path, **kwargs) -> ArtifactRef:
    kind, name = ref.split("/")
    return store.publish(kind, name, collect_files([directory]), **kwargs).ref


def test_publish_writes_a_complete_manifest(store, data_dir):
    spec = {"stage": "preprocess", "name": "synth"}
    manifest = store.publish(
        "dataset",
        "synth",
        collect_files([data_dir]),
        spec=spec,
        metrics={"videos": 1},
        attributes={"init": "random"},
        job_id="job-123",
    )
    assert str(manifest.ref) == "dataset/synth:v1"
    assert manifest.vlkd_version == __version__ and manifest.job_id == "job-123"
    assert manifest.spec == spec and manifest.metrics == {"videos": 1} and manifest.attributes == {"init": "random"}
    files = {f.path: f for f in manifest.files}
    assert set(files) == {"captions.jsonl", "nested/video.bin"}
    video = data_dir / "nested" / "video.bin"
    assert files["nested/video.bin"].size == video.stat().st_size
    assert files["nested/video.bin"].sha256 == sha256_file(video)
    assert manifest.created_at.tzinfo is not None
    assert store.manifest("dataset/synth:v1") == manifest  # what was written is what is read


def test_versions_count_up_and_latest_follows(store, data_dir):
    refs = [publish_dir(store, "dataset/synth", data_dir) for _ in range(3)]
    assert [r.version for r in refs] == [1, 2, 3]
    assert store.versions("dataset", "synth") == [1, 2, 3]
    assert store.resolve("dataset/synth") == ArtifactRef("dataset", "synth", 3)
    assert store.resolve("dataset/synth:latest").version == 3


def test_parents_are_pinned_and_lineage_is_a_tree(store, data_dir):
    publish_dir(store, "dataset/videos", data_dir)
    publish_dir(store, "weights/clip", data_dir)
    publish_dir(store, "features/f", data_dir, parents=["dataset/videos", "weights/clip:v1"])
    publish_dir(store, "tokenizer/w", data_dir)
    publish_dir(store, "teacher/t", data_dir, parents=["features/f:latest", "tokenizer/w"])
    publish_dir(store, "dataset/videos", data_dir)  # moving latest must not rewrite history

    assert store.manifest("teacher/t").parents == ["features/f:v1", "tokenizer/w:v1"]
    root = store.lineage("teacher/t")
    assert root.ref == "teacher/t:v1"
    assert [p.ref for p in root.parents] == ["features/f:v1", "tokenizer/w:v1"]
    assert [p.ref for p in root.parents[0].parents] == ["dataset/videos:v1", "weights/clip:v1"]
    assert root.parents[1].parents == []


def test_publishing_with_a_missing_parent_fails_and_publishes_nothing(store, data_dir):
    with pytest.raises(NotFoundError, match="features/ghost has no published version"):
        publish_dir(store, "teacher/t", data_dir, parents=["features/ghost"])
    assert store.versions("teacher", "t") == []
    assert store.list() == []


def test_aliases_point_at_versions_and_move(store, data_dir):
    publish_dir(store, "student/s", data_dir)
    publish_dir(store, "student/s", data_dir)
    assert store.tag("student/s:v1", "best") == ArtifactRef("student", "s", 1)
    assert store.resolve("student/s:best").version == 1
    store.tag("student/s", "best")
    assert store.resolve("student/s:best").version == 2
    assert store.aliases("student", "s") == {"best": 2}
    with pytest.raises(NotFoundError, match="aliases of student/s: best, latest"):
        store.resolve("student/s:golden")
    with pytest.raises(RefError, match="'latest' always means the newest"):
        store.tag("student/s:v1", "latest")


def test_missing_versions_say_what_exists(store, data_dir):
    publish_dir(store, "corpus/wiki", data_dir)
    with pytest.raises(NotFoundError, match="corpus/wiki:v5 does not exist; published versions: v1"):
        store.resolve("corpus/wiki:v5")
    with pytest.raises(NotFoundError, match="corpus artifacts here: wiki"):
        store.resolve("corpus/wikk")
    with pytest.raises(NotFoundError, match="holds no teacher artifacts"):
        store.manifest("teacher/x")


def test_list_by_kind_and_all(store, data_dir):
    publish_dir(store, "dataset/a", data_dir)
    publish_dir(store, "dataset/a", data_dir)
    publish_dir(store, "corpus/b", data_dir)
    store.tag("dataset/a:v1", "golden")
    assert [(s.kind, s.name, s.versions, s.aliases) for s in store.list()] == [
        ("dataset", "a", [1, 2], {"golden": 1}),
        ("corpus", "b", [1], {}),
    ]
    assert [s.name for s in store.list("corpus")] == ["b"]
    assert store.list("teacher") == []
    with pytest.raises(RefError, match="unknown artifact kind 'model'"):
        store.list("model")


def test_fetch_reproduces_the_files(store, data_dir, tmp_path):
    publish_dir(store, "dataset/a", data_dir)
    dest = tmp_path / "out"
    manifest = store.fetch("dataset/a", dest)
    for entry in manifest.files:
        assert (dest / entry.path).read_bytes() == (data_dir / entry.path).read_bytes()
    assert sorted(p.name for p in dest.rglob("*")) == ["captions.jsonl", "nested", "video.bin"]  # no leftovers


def test_fetch_detects_a_corrupted_stored_file(store, data_dir, tmp_path):
    ref = publish_dir(store, "dataset/a", data_dir)
    key = f"{store.version_prefix(ref)}/files/nested/video.bin"
    store.storage.write_bytes(key, b"tampered")  # the bytes in the store no longer match the manifest
    dest = tmp_path / "out"
    with pytest.raises(ChecksumError, match=re.escape("dataset/a:v1 file 'nested/video.bin' is corrupt in the store")):
        store.fetch(ref, dest)
    assert not (dest / "nested" / "video.bin").exists()
    assert not list((dest / "nested").glob(".*"))  # the partial download is gone too


def test_fetch_resumes_and_replaces_wrong_local_files(store, data_dir, tmp_path):
    ref = publish_dir(store, "dataset/a", data_dir)
    dest = tmp_path / "out"
    store.fetch(ref, dest)
    (dest / "captions.jsonl").write_text("edited locally")
    store.fetch(ref, dest)
    assert (dest / "captions.jsonl").read_bytes() == (data_dir / "captions.jsonl").read_bytes()


def test_concurrent_publishers_get_distinct_versions(store, data_dir):
    files = collect_files([data_dir / "captions.jsonl"])
    got: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def publisher() -> None:
        try:
            barrier.wait()
            for _ in range(3):
                got.append(store.publish("features", "shared", files).version)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=publisher) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(got) == list(range(1, 19))
    assert store.versions("features", "shared") == list(range(1, 19))


def test_a_failed_publish_leaves_no_visible_version(store, data_dir):
    publish_dir(store, "dataset/a", data_dir)
    with pytest.raises(RuntimeError, match="disk on fire"), store.draft("dataset", "a") as draft:
        draft.add_bytes("first.txt", b"1")
        raise RuntimeError("disk on fire")
    assert store.versions("dataset", "a") == [1]
    assert store.resolve("dataset/a").version == 1
    assert publish_dir(store, "dataset/a", data_dir).version == 2  # the aborted number is free again


KILLED_PUBLISH = """
import os, sys
from pathlib import Path
from vlkd.artifacts import ArtifactStore
store = ArtifactStore.open(sys.argv[1])
draft = store.draft("dataset", "a", job_id="doomed")
draft.add_file(Path(sys.argv[2]), "video.bin")
os._exit(9)  # killed between the data and the manifest
"""


def test_a_killed_publisher_leaves_an_invisible_draft_that_gc_removes(store, store_uri, data_dir):
    publish_dir(store, "dataset/a", data_dir)
    subprocess.run(
        [sys.executable, "-c", KILLED_PUBLISH, store_uri, str(data_dir / "nested" / "video.bin")], check=False
    )
    assert [i.key.rsplit("/", 1)[-1] for i in store.storage.list("artifacts/dataset/a/v2")] == [
        "claim.json",
        "video.bin",
    ]
    assert store.versions("dataset", "a") == [1]
    assert store.resolve("dataset/a").version == 1
    assert [str(s.latest.ref) for s in store.list()] == ["dataset/a:v1"]

    assert store.gc(timedelta(hours=1)) == []  # too recent: maybe still running
    assert store.gc(timedelta(0), dry_run=True) == [ArtifactRef("dataset", "a", 2)]
    assert store.gc(timedelta(0)) == [ArtifactRef("dataset", "a", 2)]
    assert list(store.storage.list("artifacts/dataset/a/v2")) == []
    assert store.versions("dataset", "a") == [1]


def test_file_paths_cannot_escape_the_version(store):
    with store.draft("dataset", "a") as draft, pytest.raises(VlkdError, match="invalid file path"):
        draft.add_bytes("../../escape", b"x")


def test_collect_files_refuses_colliding_names(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.txt").write_text("1")
    (tmp_path / "b" / "x.txt").write_text("2")
    with pytest.raises(VlkdError, match=re.escape("both be stored as 'x.txt'")):
        collect_files([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(VlkdError, match="no such file or directory"):
        collect_files([tmp_path / "missing"])
