"""`vlkd artifacts ...` and `vlkd data synth` as a user runs them, where they used to surprise: where `get` writes
and what it overwrites, store URIs, an endpoint that is not S3, identical content, damaged manifests, `show`,
`lineage`, `gc` and the help."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from test_artifacts import finished_job
from test_cli import assert_one_line_error

from vlkd.artifacts import ArtifactStore, collect_files
from vlkd.data.synth import TASKS

SYNTH_PARTS = ["videos", "text", *TASKS]


def folder(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_get_names_its_folder_with_the_kind_so_artifacts_of_one_name_stay_apart(vlkd_cli, store_uri, tmp_path):
    """A stage's outputs share its name (tokenizer/tiny, corpus/tiny): they used to merge into ./tiny-v1, the
    corpus's index.json replacing the features'."""
    for kind in ("tokenizer", "features", "corpus"):
        files = folder(tmp_path / "in" / kind, {"index.json": f'{{"kind": "{kind}"}}'})
        assert vlkd_cli("artifacts", "push", f"{kind}/tiny", str(files), "--store", store_uri).returncode == 0
    for kind in ("tokenizer", "features", "corpus"):
        got = vlkd_cli("artifacts", "get", f"{kind}/tiny", "--store", store_uri, cwd=tmp_path)
        assert got.stdout.strip() == f"fetched {kind}/tiny:v1 into {kind}-tiny-v1 (1 file, verified)", got.stderr
    for kind in ("tokenizer", "features", "corpus"):
        assert json.loads((tmp_path / f"{kind}-tiny-v1" / "index.json").read_text()) == {"kind": kind}


def test_get_refuses_to_overwrite_a_file_it_would_change_unless_forced(vlkd_cli, tmp_path):
    store = ("--store", str(tmp_path / "store"))
    files = folder(tmp_path / "in", {"index.json": "{}", "shards/a.parquet": "rows"})
    assert vlkd_cli("artifacts", "push", "features/f", str(files), *store).returncode == 0
    out = tmp_path / "out"
    assert vlkd_cli("artifacts", "get", "features/f", "-o", str(out), *store).returncode == 0
    assert vlkd_cli("artifacts", "get", "features/f", "-o", str(out), *store).returncode == 0  # same files: kept
    (out / "index.json").write_text('{"edited": true}')
    refused = vlkd_cli("artifacts", "get", "features/f", "-o", str(out), *store)
    assert_one_line_error(refused, f"{out / 'index.json'} is not features/f:v1's index.json")
    assert "`vlkd artifacts get --force`" in refused.stderr
    assert (out / "index.json").read_text() == '{"edited": true}'
    forced = vlkd_cli("artifacts", "get", "features/f", "-o", str(out), "--force", *store)
    assert forced.returncode == 0 and (out / "index.json").read_text() == "{}"


def test_get_into_a_file_is_one_line(vlkd_cli, tmp_path):
    store = ("--store", str(tmp_path / "store"))
    assert vlkd_cli("artifacts", "push", "dataset/d", str(folder(tmp_path / "in", {"a": "1"})), *store).returncode == 0
    (tmp_path / "taken").write_text("a file")
    result = vlkd_cli("artifacts", "get", "dataset/d", "-o", str(tmp_path / "taken"), *store)
    assert_one_line_error(result, f"{tmp_path / 'taken'} is a file: give a folder to download dataset/d:v1 into")


@pytest.mark.parametrize(
    ("store", "fragment"),
    [
        ("file:../store", "a file: URI needs an absolute path; use file:///ABSOLUTE/PATH, the folder's path itself"),
        ("s3://bkt/vlkd/../other", "S3 takes '.', '..' and empty segments literally"),
    ],
)
def test_a_store_uri_that_cannot_work_is_one_line_saying_what_would(vlkd_cli, store, fragment):
    assert_one_line_error(vlkd_cli("artifacts", "ls", "--store", store), fragment)


class NotS3(http.server.BaseHTTPRequestHandler):
    """An HTTP server that is not S3 (a wrong port, MinIO's console): 404 and a web page, whatever is asked, with
    `headers_to_send`."""

    headers_to_send: ClassVar[dict[str, str]] = {}

    def answer(self) -> None:
        page = b"<html><body><h1>404 Not Found</h1></body></html>"
        self.send_response(404)
        for name, value in {"Content-Type": "text/html", **self.headers_to_send}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(page)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_404() -> Iterator[callable]:
    """Start a NotS3 server with the given extra headers; yields its address."""
    servers = []

    def start(headers: dict[str, str]) -> str:
        handler = type("Handler", (NotS3,), {"headers_to_send": headers})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_an_endpoint_that_is_not_s3_is_named_as_such_not_as_a_missing_artifact(vlkd_cli, http_404, tmp_path):
    endpoint = http_404({})
    env = {"AWS_ENDPOINT_URL": endpoint}
    store = ("--store", "s3://bkt/vlkd")
    payload = str(folder(tmp_path / "in", {"a": "1"}))
    for command in (["push", "dataset/d", payload], ["ls"], ["show", "dataset/d"]):
        result = vlkd_cli("artifacts", *command, *store, env=env)
        assert_one_line_error(result, f"the endpoint {endpoint} does not answer as S3 (")
        assert "check AWS_ENDPOINT_URL" in result.stderr and "does not exist" not in result.stderr


def test_an_s3_service_that_says_its_bucket_is_missing_only_in_headers_is_told_apart(vlkd_cli, http_404):
    endpoint = http_404({"x-amz-request-id": "0"})
    result = vlkd_cli("artifacts", "ls", "--store", "s3://bkt/vlkd", env={"AWS_ENDPOINT_URL": endpoint})
    assert_one_line_error(result, f"bucket 'bkt' does not exist at {endpoint}; create it or fix the store URI")


def test_pushing_identical_content_again_keeps_the_version_unless_asked(vlkd_cli, store_uri, tmp_path):
    store = ("--store", store_uri)
    payload = str(folder(tmp_path / "in", {"vocab.txt": "[PAD]\nred\n", "sub/w.bin": "weights"}))
    assert vlkd_cli("artifacts", "push", "weights/w", payload, *store).stdout.startswith("published weights/w:v1 ")
    again = vlkd_cli("artifacts", "push", "weights/w", payload, *store)
    assert again.stdout.strip() == (
        "unchanged: weights/w:v1 already holds these files, parents and attributes (--new-version publishes anyway)"
    )
    forced = vlkd_cli("artifacts", "push", "weights/w", payload, "--new-version", *store)
    assert forced.stdout.startswith("published weights/w:v2 ")
    attributed = vlkd_cli("artifacts", "push", "weights/w", payload, "--attr", "source=hub", *store)
    assert attributed.stdout.startswith("published weights/w:v3 ")


def synth_lines(result) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.startswith(("published", "unchanged"))]


def test_data_synth_again_republishes_nothing_unless_asked(vlkd_cli, tmp_path):
    store = ("--store", str(tmp_path / "store"), "--videos", "2")
    first = synth_lines(vlkd_cli("data", "synth", "--out", str(tmp_path / "a"), *store))
    assert first == [f"published dataset/synth-{part}:v1" for part in SYNTH_PARTS]
    again = synth_lines(vlkd_cli("data", "synth", "--out", str(tmp_path / "b"), *store))
    assert again == [f"unchanged dataset/synth-{part}:v1 (already holds these files)" for part in SYNTH_PARTS]
    forced = synth_lines(vlkd_cli("data", "synth", "--out", str(tmp_path / "c"), "--new-version", *store))
    assert forced == [f"published dataset/synth-{part}:v2" for part in SYNTH_PARTS]


def test_artifacts_help_names_every_command():
    from vlkd.cli.artifacts import app

    names = [command.name or command.callback.__name__ for command in app.registered_commands]
    assert app.info.help == f"Versioned artifacts in the store: {', '.join(names)}."
    assert "gc" in names


def test_show_prints_nested_values_as_yaml(vlkd_cli, tmp_path):
    store = ArtifactStore.open(str(tmp_path / "store"))
    attributes = {
        "encoder_2d": {"name": "pixels", "init": "random", "weights": None},
        "random_init": False,
        "skipped": [{"item": "a.mp4", "reason": "corrupt"}],
    }
    metrics = {"kd": {"nst": 1.0, "crd": 1.0}, "val_r10": 0.5}
    files = collect_files([folder(tmp_path / "in", {"a": "1"})])
    store.publish("student", "s", files, attributes=attributes, metrics=metrics, spec={"stage": "distill"})
    shown = vlkd_cli("artifacts", "show", "student/s", "--store", str(tmp_path / "store")).stdout.splitlines()
    attributes_at, metrics_at = shown.index("  attributes"), shown.index("  metrics")
    assert shown[attributes_at + 1 : attributes_at + 6] == [
        "    encoder_2d: {name: pixels, init: random, weights: null}",
        "    random_init: false",
        "    skipped:",
        "    - {item: a.mp4, reason: corrupt}",
        "  metrics",
    ]
    assert shown[metrics_at + 1 : metrics_at + 3] == ["    kd: {nst: 1.0, crd: 1.0}", "    val_r10: 0.5"]


def test_lineage_shows_a_shared_parent_once(vlkd_cli, tmp_path):
    store = ArtifactStore.open(str(tmp_path / "store"))
    files = collect_files([folder(tmp_path / "in", {"a": "1"})])
    for ref, parents in (
        ("features/f", []),
        ("corpus/c", []),
        ("teacher/t", ["features/f", "corpus/c"]),
        ("student/kd", ["teacher/t", "corpus/c"]),
        ("student/base", ["corpus/c"]),
        ("eval/e", ["student/kd", "student/base", "teacher/t"]),
    ):
        store.publish(*ref.split("/"), files, parents=parents)
    tree = vlkd_cli("artifacts", "lineage", "eval/e", "--store", str(tmp_path / "store")).stdout.splitlines()
    refs = [line.lstrip("│├└─ ").split("  ")[0] + ("  (see above)" if "(see above)" in line else "") for line in tree]
    assert refs == [
        "eval/e:v1",
        "student/kd:v1",
        "teacher/t:v1",
        "features/f:v1",
        "corpus/c:v1",
        "corpus/c:v1",
        "student/base:v1",
        "corpus/c:v1",
        "teacher/t:v1  (see above)",
    ]


def test_a_damaged_manifest_is_named_by_every_command_and_spares_the_rest_of_the_store(vlkd_cli, store_uri, tmp_path):
    store = ArtifactStore.open(store_uri)
    files = collect_files([folder(tmp_path / "in", {"a": "1"})])
    store.publish("dataset", "d", files)
    store.publish("dataset", "d", files)
    store.publish("features", "f", files, parents=["dataset/d:v2"])
    store.storage.write_bytes("artifacts/dataset/d/v2/manifest.json", b'{"schema_version": 1, "kind": "data')
    damaged = "dataset/d:v2 is damaged: "
    args = ("--store", store_uri)

    for command in (["show", "dataset/d"], ["show", "dataset/d:v2"], ["get", "dataset/d"], ["lineage", "dataset/d"]):
        result = vlkd_cli("artifacts", *command, *args, cwd=tmp_path)
        assert_one_line_error(result, damaged)
        assert "/artifacts/dataset/d/v2/manifest.json does not read as a manifest (Invalid JSON" in result.stderr
    listing = vlkd_cli("artifacts", "ls", "--json", *args)
    assert listing.returncode == 0 and listing.stderr.startswith(f"warning: left out: {damaged}")
    assert [(row["latest"], row["versions"]) for row in json.loads(listing.stdout)] == [
        ("dataset/d:v1", [1]),
        ("features/f:v1", [1]),
    ]
    lineage = vlkd_cli("artifacts", "lineage", "features/f", *args).stdout.splitlines()
    assert lineage[1].endswith("dataset/d:v2  (damaged manifest: see `vlkd artifacts show dataset/d:v2`)")
    gc = vlkd_cli("artifacts", "gc", "--dry-run", *args)
    assert gc.returncode == 0 and gc.stderr.startswith(f"warning: kept: {damaged}")


def test_gc_removes_the_checkpoints_of_a_job_that_ended_and_published(vlkd_cli, tmp_path):
    from vlkd.joblog import ENDED, RUNNING

    store = ArtifactStore.open(str(tmp_path / "store"))
    done = finished_job(store, "done", {"state": ENDED, "exit_code": 0}, folder(tmp_path / "in", {"a": "1"}))
    running = finished_job(store, "running", {"state": RUNNING}, None)
    result = vlkd_cli("artifacts", "gc", "--store", str(tmp_path / "store"))
    assert result.stdout.splitlines() == [
        f"removed {done}/ (1000 B; its job ended and published teacher/done:v1)",
        "removed 0 abandoned drafts and the checkpoints of 1 finished job (1000 B)",
    ]
    assert not store.storage.children(done) and store.storage.children(running) == ["step-000000100"]
