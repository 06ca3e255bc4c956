"""A stage's inputs named by artifact ref: each file checked against its manifest's sha256 wherever it is fetched,
Ray tasks included, without the artifact's listing travelling with every task."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from vlkd.artifacts import FILES, ArtifactStore, collect_files
from vlkd.errors import ChecksumError
from vlkd.inputs import open_input


def _dataset(store: ArtifactStore, root: Path, name: str, files: int) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    for i in range(files):
        (folder / f"video_{i:04d}.mp4").write_bytes(f"video {i}".encode())
    store.publish("dataset", name, collect_files([folder]))


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    store = ArtifactStore.open((tmp_path / "store").as_uri())
    _dataset(store, tmp_path / "data", "few", 2)
    _dataset(store, tmp_path / "data", "many", 2000)
    return store


def test_a_source_for_tasks_pickles_to_the_same_size_however_many_files_its_artifact_holds(store):
    few, many = open_input("dataset/few", store), open_input("dataset/many", store)
    assert len(many.files()) == 2000
    assert len(pickle.dumps(many)) > 100 * len(pickle.dumps(few))  # the listing: 2,000 paths and sha256s
    assert abs(len(pickle.dumps(many.unlisted())) - len(pickle.dumps(few.unlisted()))) <= 8  # the names' lengths


def test_a_fetch_checks_the_sha256_a_task_was_given_as_one_with_the_listing_does(store, tmp_path):
    listed = open_input("dataset/many", store)
    unlisted = listed.unlisted()
    path = "video_0007.mp4"
    (sha,) = [f.sha256 for f in listed.files() if f.path == path]
    assert unlisted.local_path(path) is None  # an artifact's file is fetched, hence checked, even from a folder
    assert unlisted.fetch(path, tmp_path / "a" / path, sha).read_bytes() == b"video 7"

    stored = Path(store.storage.root) / store.version_prefix(listed.ref) / FILES / path
    stored.write_bytes(b"changed after publishing")
    for source, given in ((unlisted, sha), (listed, None)):
        with pytest.raises(ChecksumError, match=r"video_0007\.mp4 does not match its manifest's sha256"):
            source.fetch(path, tmp_path / "b" / path, given)
        assert not (tmp_path / "b" / path).exists()  # nothing unchecked is left behind
