"""The artifact store on both backends: publish, resolve, fetch, lineage, aliases, atomicity, concurrency."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from vlkd import __version__
from vlkd.artifacts import ArtifactStore, collect_files, sha256_file
from vlkd.errors import ChecksumError, DamagedManifestError, NotFoundError, RefError, VlkdError
from vlkd.housekeeping import gc
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
    assert store.list().artifacts == []


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
    assert [(s.kind, s.name, s.versions, s.aliases) for s in store.list().artifacts] == [
        ("dataset", "a", [1, 2], {"golden": 1}),
        ("corpus", "b", [1], {}),
    ]
    assert [s.name for s in store.list("corpus").artifacts] == ["b"]
    assert store.list("teacher").artifacts == []
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


def test_fetch_keeps_the_files_already_there_and_refuses_to_replace_one_that_differs(store, data_dir, tmp_path):
    ref = publish_dir(store, "dataset/a", data_dir)
    dest = tmp_path / "out"
    store.fetch(ref, dest)
    store.fetch(ref, dest)  # the same files again: kept, as an interrupted fetch resumes
    video = dest / "nested" / "video.bin"
    video.unlink()
    (dest / "captions.jsonl").write_text("edited locally")
    with pytest.raises(VlkdError, match=re.escape(f"{dest / 'captions.jsonl'} is not dataset/a:v1's captions.jsonl")):
        store.fetch(ref, dest)
    assert (dest / "captions.jsonl").read_text() == "edited locally" and not video.exists()  # nothing was fetched
    store.fetch(ref, dest, overwrite=True)
    for path in ("captions.jsonl", "nested/video.bin"):
        assert (dest / path).read_bytes() == (data_dir / path).read_bytes()


def test_fetch_refuses_a_file_where_its_folder_should_be(store, data_dir, tmp_path):
    ref = publish_dir(store, "dataset/a", data_dir)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(VlkdError, match="a-file is a file: give a folder to download dataset/a:v1 into"):
        store.fetch(ref, tmp_path / "a-file")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "nested").write_text("a file where the folder nested/ goes")
    with pytest.raises(VlkdError, match=re.escape(f"{tmp_path / 'out' / 'nested'} is not dataset/a:v1's nested/video")):
        store.fetch(ref, tmp_path / "out")


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
    assert [str(s.latest.ref) for s in store.list().artifacts] == ["dataset/a:v1"]

    assert gc(store, timedelta(hours=1)).drafts == []  # too recent: maybe still running
    assert gc(store, timedelta(0), dry_run=True).drafts == [ArtifactRef("dataset", "a", 2)]
    assert gc(store, timedelta(0)).drafts == [ArtifactRef("dataset", "a", 2)]
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


def test_an_aborted_publish_leaves_no_trace_of_its_name(store, data_dir):
    with pytest.raises(RuntimeError, match="no usable clips"), store.draft("features", "f") as draft:
        draft.add_bytes("shards/shard-00000.parquet", b"half a shard")
        raise RuntimeError("no usable clips")
    assert store.names("features") == [] and list(store.storage.list("")) == []
    with pytest.raises(NotFoundError, match="holds no features artifacts"):
        store.resolve("features/f")


def test_identical_content_keeps_the_latest_version_and_any_change_makes_a_new_one(store, data_dir):
    files = collect_files([data_dir])
    first, new = store.publish_unless_unchanged("dataset", "a", files, attributes={"seed": 0})
    assert (str(first.ref), new) == ("dataset/a:v1", True)
    assert store.publish_unless_unchanged("dataset", "a", files, attributes={"seed": 0}) == (first, False)
    assert store.publish_unless_unchanged("dataset", "a", files, attributes={"seed": 1})[0].version == 2
    (data_dir / "captions.jsonl").write_text((data_dir / "captions.jsonl").read_text().replace("red", "tan"))
    changed, new = store.publish_unless_unchanged("dataset", "a", files, attributes={"seed": 1})  # same size
    assert (changed.version, new) == (3, True)
    assert store.publish_unless_unchanged("dataset", "a", files, attributes={"seed": 1}, spec={"k": 1})[0].version == 4
    publish_dir(store, "weights/w", data_dir)
    assert store.publish_unless_unchanged("dataset", "a", files, parents=["weights/w"], spec={"k": 1})[0].version == 5


DAMAGES = {"empty": b"", "truncated": b'{"schema_version": 1, "kind": "dataset", "na', "not a manifest": b'{"a": 1}'}


@pytest.fixture(params=DAMAGES, ids=list(DAMAGES))
def damaged(request, store, data_dir) -> ArtifactRef:
    """dataset/a:v2 with a damaged manifest, between a good v1 and a version made from it."""
    publish_dir(store, "dataset/a", data_dir)
    ref = publish_dir(store, "dataset/a", data_dir)
    publish_dir(store, "features/f", data_dir, parents=[ref])
    store.storage.write_bytes(f"{store.version_prefix(ref)}/manifest.json", DAMAGES[request.param])
    return ref


def test_a_damaged_manifest_is_an_error_naming_its_version(damaged, store):
    fresh = ArtifactStore(store.storage)  # not the publisher's cache
    for ref in ("dataset/a:v2", "dataset/a"):
        with pytest.raises(DamagedManifestError, match=r"dataset/a:v2 is damaged: .*/v2/manifest.json does not read"):
            fresh.manifest(ref)


def test_listing_leaves_out_a_damaged_version_and_names_it(damaged, store):
    listing = ArtifactStore(store.storage).list()
    listed = [(str(s.latest.ref), s.versions) for s in listing.artifacts]
    assert listed == [("dataset/a:v1", [1]), ("features/f:v1", [1])]
    assert [str(e).split(" is damaged")[0] for e in listing.damaged] == ["dataset/a:v2"]


def test_lineage_through_a_damaged_version_says_so(damaged, store):
    fresh = ArtifactStore(store.storage)
    root = fresh.lineage("features/f")
    assert [(p.ref, p.manifest, "dataset/a:v2 is damaged" in p.damaged) for p in root.parents] == [
        ("dataset/a:v2", None, True)
    ]
    with pytest.raises(DamagedManifestError, match="dataset/a:v2 is damaged"):
        fresh.lineage("dataset/a:v2")


def test_gc_reports_a_damaged_version_and_keeps_it(damaged, store):
    garbage = gc(ArtifactStore(store.storage), timedelta(0))
    assert [str(e).split(" is damaged")[0] for e in garbage.damaged] == ["dataset/a:v2"] and garbage.drafts == []
    assert store.storage.exists(f"{store.version_prefix(damaged)}/manifest.json")


def finished_job(store: ArtifactStore, job_id: str, state: dict, publishes: Path | None) -> str:
    """A training job's record as it leaves it: checkpoints where `RunPlace` keeps them, its state, its output."""
    from vlkd.checkpoints import RunPlace
    from vlkd.joblog import STATE_KEY

    prefix = RunPlace(store.storage, job_id).prefix
    store.storage.write_bytes(f"{prefix}/step-000000100/state.pt", b"x" * 1000)
    store.storage.write_bytes(STATE_KEY.format(job_id=job_id), json.dumps({"job_id": job_id, **state}).encode())
    if publishes is not None:
        store.publish("teacher", job_id, collect_files([publishes]), job_id=job_id)
    return prefix


def test_gc_removes_the_checkpoints_of_jobs_that_ended_and_published_and_keeps_those_a_resume_needs(store, data_dir):
    from vlkd.joblog import ENDED, RUNNING

    done = finished_job(store, "done", {"state": ENDED, "exit_code": 0}, data_dir)
    kept = [
        finished_job(store, "running", {"state": RUNNING}, None),
        finished_job(store, "failed", {"state": ENDED, "exit_code": 1}, None),
        finished_job(store, "failed-after-publishing", {"state": ENDED, "exit_code": 1}, data_dir),
        finished_job(store, "resumed-after-publishing", {"state": RUNNING}, data_dir),  # its id submitted again
        finished_job(store, "ended-unpublished", {"state": ENDED, "exit_code": 0}, None),
    ]
    dry = gc(store, timedelta(hours=1), dry_run=True)
    assert [(r.job_id, r.prefix, r.size, r.published) for r in dry.checkpoints] == [
        ("done", done, 1000, [ArtifactRef("teacher", "done", 1)])
    ]
    assert store.storage.exists(f"{done}/step-000000100/state.pt")
    assert [r.job_id for r in gc(store, timedelta(hours=1)).checkpoints] == ["done"]
    assert list(store.storage.list(done)) == []
    assert all(store.storage.exists(f"{prefix}/step-000000100/state.pt") for prefix in kept)
