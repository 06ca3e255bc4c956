"""Submitting, watching and cancelling stage jobs on the `local` backend and on a real Ray head (`ray start`)
on 127.0.0.1, as a user does it: through the `vlkd` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlkd.artifacts import ArtifactStore, collect_files
from vlkd.backends.ray import NOTHING_ANSWERS, RayBackend
from vlkd.errors import VlkdError
from vlkd.joblog import read_log, read_state
from vlkd.jobstate import jobs_dir

EXAMPLES = Path(__file__).parent.parent / "examples" / "tiny"
pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def text_inputs(synth_root, tmp_path) -> dict[str, str]:
    """A store holding the synthetic corpus, and the environment pointing the CLI at it."""
    store = ArtifactStore.open((tmp_path / "store").as_uri())
    store.publish("dataset", "synth-text", collect_files([synth_root / "text"]))
    return {"VLKD_STORE": store.uri}


@pytest.fixture
def s3_text_inputs(synth_root, new_bucket, s3_endpoint) -> dict[str, str]:
    """The same on an S3 store (the moto server), as every cluster run has it: the laptop's environment names the
    endpoint, and the cluster has its own credentials (the head was started with them)."""
    uri = f"s3://{new_bucket()}/vlkd"
    store = ArtifactStore.open(uri, endpoint_url=s3_endpoint)
    store.publish("dataset", "synth-text", collect_files([synth_root / "text"]))
    return {"VLKD_STORE": uri, "AWS_ENDPOINT_URL": s3_endpoint}


def long_text_spec(tmp_path: Path) -> Path:
    """A text job that takes long enough to be cancelled: a vocabulary trained many times over is not possible, so
    a corpus of many files, each its own Ray task."""
    spec = tmp_path / "long.yaml"
    spec.write_text((EXAMPLES / "text.yaml").read_text().replace("dataset/synth-text", "dataset/big-text"))
    return spec


def wait_for(predicate, timeout: float = 120.0) -> None:
    """Poll `predicate` (here a `vlkd` command: about a CPU-second each, so not more often than this)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(2)


def test_local_submit_wait_status_logs_and_list(vlkd_cli, text_inputs):
    submitted = vlkd_cli("submit", "text", "--spec", str(EXAMPLES / "text.yaml"), "--wait", env=text_inputs)
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    job_id = submitted.stdout.splitlines()[0]
    assert job_id.startswith("vlkd-text-") and "published corpus/tiny:v1" in submitted.stdout
    assert f"job {job_id}: SUCCEEDED" in submitted.stderr
    assert "has not noticed" not in submitted.stderr  # --wait gave the supervisor time to see the job exit
    assert vlkd_cli("status", job_id).stdout.split()[:2] == [job_id, "SUCCEEDED"]
    assert "published tokenizer/tiny:v1" in vlkd_cli("logs", job_id).stdout
    listing = vlkd_cli("list").stdout
    assert job_id in listing and "SUCCEEDED" in listing

    # The job kept its log in the store: with this machine's copy gone, `vlkd logs` reads that one.
    (jobs_dir() / job_id / "log").unlink()
    assert "published tokenizer/tiny:v1" in vlkd_cli("logs", job_id).stdout
    # What it cost is in the manifest: the text stage holds 2 CPUs (tokenising tasks, driver), no GPU.
    manifest = ArtifactStore.open(text_inputs["VLKD_STORE"]).manifest("corpus/tiny")
    assert manifest.cost["gpu_hours"] == 0 and manifest.cost["wall_seconds"] > 0
    assert manifest.cost["cpu_hours"] == pytest.approx(2 * manifest.cost["wall_seconds"] / 3600, rel=0.05)
    assert manifest.log == f"jobs/{job_id}/log/"
    shown = vlkd_cli("artifacts", "show", "corpus/tiny", env=text_inputs).stdout
    assert f"  job       {job_id}  (log: vlkd logs {job_id})" in shown and " CPU-hours, 0 GPU-hours held" in shown


def gpu_preprocess_spec(tmp_path: Path, synth_root: Path, store: ArtifactStore) -> Path:
    """The tiny preprocess job, asking for a GPU per encoder actor."""
    store.publish("dataset", "synth-videos", collect_files([synth_root / "videos"]))
    spec = tmp_path / "gpu.yaml"
    text = (EXAMPLES / "preprocess.yaml").read_text()
    spec.write_text(text.replace("{num_workers: 1, cpus_per_worker: 1}", "{num_workers: 2, gpus_per_worker: 1}"))
    return spec


def test_a_local_job_that_needs_gpus_this_machine_lacks_fails_saying_so(vlkd_cli, synth_root, tmp_path):
    store = ArtifactStore.open((tmp_path / "store").as_uri())
    spec = gpu_preprocess_spec(tmp_path, synth_root, store)
    result = vlkd_cli("submit", "preprocess", "--spec", str(spec), "--wait", env={"VLKD_STORE": store.uri})
    assert result.returncode == 1
    assert (
        "error: this machine cannot run the job: needs 2 GPU, cluster has 0 GPU: no node offers GPUs" in result.stdout
    )


def test_local_cancel_stops_a_running_job(vlkd_cli, synth_root, tmp_path):
    store = ArtifactStore.open((tmp_path / "store").as_uri())
    big = tmp_path / "big"
    big.mkdir()
    corpus = (synth_root / "text" / "corpus.txt").read_text()
    for i in range(200):
        (big / f"part-{i:03d}.txt").write_text(corpus)
    store.publish("dataset", "big-text", collect_files([big]))
    env = {"VLKD_STORE": store.uri}
    job_id = vlkd_cli("submit", "text", "--spec", str(long_text_spec(tmp_path)), env=env).stdout.strip()
    wait_for(lambda: "vlkd: job" in vlkd_cli("logs", job_id).stdout)
    assert vlkd_cli("cancel", job_id).returncode == 0
    wait_for(lambda: vlkd_cli("status", job_id).stdout.split()[1] == "STOPPED", timeout=60)
    assert store.versions("corpus", "tiny") == []


def test_a_failed_job_exits_non_zero_with_its_error(vlkd_cli, text_inputs, tmp_path):
    spec = tmp_path / "captions.yaml"  # its corpus has no captions file: the job fails as it starts
    spec.write_text((EXAMPLES / "text.yaml").read_text() + "format: captions\n")
    result = vlkd_cli("submit", "text", "--spec", str(spec), "--wait", env=text_inputs)
    assert result.returncode == 1
    assert "error: dataset/synth-text:v1/captions.jsonl not found" in result.stdout
    job_id = result.stdout.splitlines()[0]
    status = vlkd_cli("status", job_id).stdout
    assert "FAILED" in status and "exit code 1" in status


def test_unknown_job_ids_are_one_line_errors(vlkd_cli):
    result = vlkd_cli("status", "vlkd-text-nope")
    assert result.returncode == 1 and result.stderr.strip() == (
        "error: no job 'vlkd-text-nope' was submitted from this machine; `vlkd list` shows the known jobs"
    )


def test_render_shows_what_would_be_sent_and_sends_nothing(vlkd_cli, text_inputs, tmp_path):
    result = vlkd_cli(
        "render",
        "text",
        "--spec",
        str(EXAMPLES / "text.yaml"),
        "--backend",
        "ray",
        "--address",
        "http://127.0.0.1:1",
        env=text_inputs,
    )
    assert result.returncode == 0, result.stderr
    request = json.loads(result.stdout.split("\n", 1)[1])
    assert request["entrypoint"].startswith("python -m vlkd.jobs.text --spec ")
    assert request["metadata"]["vlkd.io/stage"] == "text"
    assert vlkd_cli("list").stdout.count("vlkd-text") == 0
    spec_key = "jobs/vlkd-text-rendered/spec.yaml"
    store = ArtifactStore.open(text_inputs["VLKD_STORE"])
    assert f"reads its spec from {store.uri}/{spec_key}: add --upload-spec" in result.stderr
    assert not store.storage.exists(spec_key)

    uploaded = vlkd_cli(*result.args[3:], "--upload-spec", env=text_inputs)  # the same command, spec uploaded
    assert uploaded.returncode == 0 and uploaded.stdout == result.stdout
    assert store.storage.read_bytes(spec_key).decode() == (EXAMPLES / "text.yaml").read_text()


@pytest.fixture(scope="module")
def ray_head_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ray-head")


@pytest.fixture(scope="module")
def ray_head(start_ray_head, ray_head_dir):
    with start_ray_head(ray_head_dir) as address:
        yield address


@pytest.fixture(scope="module")
def text_job_on_head(
    vlkd_cli, ray_head, synth_root, s3_endpoint, tmp_path_factory
) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """(`vlkd submit text ... --wait` run once on the head with an S3 store, the environment that reaches that
    store and the home that knows the job): read by the test of the run and by the test of what outlives the head."""
    from conftest import _make_bucket

    env = {
        "VLKD_STORE": f"s3://{_make_bucket(s3_endpoint)}/vlkd",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "HOME": str(tmp_path_factory.mktemp("submitter-home")),  # set up before the tests' own home is
    }
    store = ArtifactStore.open(env["VLKD_STORE"], endpoint_url=s3_endpoint)
    store.publish("dataset", "synth-text", collect_files([synth_root / "text"]))
    submit = ["submit", "text", "--spec", str(EXAMPLES / "text.yaml"), "--backend", "ray", "--address", ray_head]
    return vlkd_cli(*submit, "--wait", env=env), env


@pytest.mark.slow
def test_ray_backend_runs_a_stage_on_a_ray_head_with_an_s3_store(vlkd_cli, text_job_on_head):
    submitted, s3_text_inputs = text_job_on_head
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    job_id = submitted.stdout.splitlines()[0]
    assert "published corpus/tiny:v1" in submitted.stdout
    assert vlkd_cli("status", job_id, env=s3_text_inputs).stdout.split()[:2] == [job_id, "SUCCEEDED"]
    assert "published tokenizer/tiny:v1" in vlkd_cli("logs", job_id, env=s3_text_inputs).stdout
    store = ArtifactStore.open(s3_text_inputs["VLKD_STORE"], endpoint_url=s3_text_inputs["AWS_ENDPOINT_URL"])
    assert store.manifest("corpus/tiny").job_id == job_id
    assert store.storage.exists(f"jobs/{job_id}/spec.yaml")  # the job read the uploaded, validated spec
    # ... and kept its log and its end in that store
    assert read_state(store.storage, job_id)["exit_code"] == 0
    assert any("published corpus/tiny:v1" in line for line in read_log(store.storage, job_id))


@pytest.mark.slow
def test_a_token_authenticated_head_is_reached_with_the_token_from_wherever_ray_keeps_it(
    vlkd_cli, ray_head, ray_head_dir, s3_text_inputs, monkeypatch
):
    """The head is stock (`ray start --head` with a token in its home): vlkd sends the token found in
    RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, or ~/.ray/auth_token, and without one says how to give it
    in one line."""
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    token_file = ray_head_dir / "home" / ".ray" / "auth_token"
    token = token_file.read_text().strip()
    submit = ["submit", "text", "--spec", str(EXAMPLES / "text.yaml"), "--backend", "ray", "--address", ray_head]
    how = "set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a file holding it, or put it in ~/.ray/auth_token"

    refused = vlkd_cli(*submit, env=s3_text_inputs)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip() == (
        f"error: the Ray cluster at {ray_head} requires a token (Ray token authentication): {how} "
        "(`ray get-auth-token` on the head prints it)"
    )

    submitted = vlkd_cli(*submit, env={**s3_text_inputs, "RAY_AUTH_TOKEN": token})
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    job_id = submitted.stdout.strip()
    cancel = vlkd_cli("cancel", job_id, env=s3_text_inputs)  # no token: refused before anything is stopped
    assert cancel.returncode == 1 and cancel.stderr.count("\n") == 1 and "requires a token" in cancel.stderr

    (Path(os.environ["HOME"]) / ".ray").mkdir()
    (Path(os.environ["HOME"]) / ".ray" / "auth_token").write_text(token + "\n")
    wait_for(lambda: vlkd_cli("status", job_id, env=s3_text_inputs).stdout.split()[1] == "SUCCEEDED")
    for source in ({"RAY_AUTH_TOKEN": token}, {"RAY_AUTH_TOKEN_PATH": str(token_file)}):
        status = vlkd_cli("status", job_id, env={**s3_text_inputs, **source})
        assert status.stdout.split()[1] == "SUCCEEDED" and "recorded in the store" not in status.stdout, source
    wrong = vlkd_cli("status", job_id, env={**s3_text_inputs, "RAY_AUTH_TOKEN": "not-the-token"})
    assert wrong.stdout.split()[1] == "SUCCEEDED"  # from the store, which says why the head did not answer
    assert f"the Ray cluster at {ray_head} refused the token it was given" in wrong.stdout


@pytest.mark.slow
def test_ray_backend_cancel_stops_the_job(vlkd_cli, ray_head, synth_root, tmp_path):
    store = ArtifactStore.open((tmp_path / "store").as_uri())
    big = tmp_path / "big"
    big.mkdir()
    corpus = (synth_root / "text" / "corpus.txt").read_text()
    for i in range(200):
        (big / f"part-{i:03d}.txt").write_text(corpus)
    store.publish("dataset", "big-text", collect_files([big]))
    env = {"VLKD_STORE": store.uri}
    job_id = vlkd_cli(
        "submit", "text", "--spec", str(long_text_spec(tmp_path)), "--backend", "ray", "--address", ray_head, env=env
    ).stdout.strip()
    wait_for(lambda: vlkd_cli("status", job_id).stdout.split()[1] == "RUNNING")
    assert vlkd_cli("cancel", job_id).returncode == 0
    wait_for(lambda: vlkd_cli("status", job_id).stdout.split()[1] == "STOPPED", timeout=60)


@pytest.mark.slow
def test_a_job_needing_gpus_on_a_cpu_only_ray_cluster_is_explained_as_pending(vlkd_cli, ray_head, synth_root, tmp_path):
    store = ArtifactStore.open((tmp_path / "store").as_uri())
    spec = gpu_preprocess_spec(tmp_path, synth_root, store)
    command = [sys.executable, "-m", "vlkd.cli.main", "submit", "preprocess", "--spec", str(spec), "--backend", "ray"]
    waiting = subprocess.Popen(
        [*command, "--address", ray_head, "--wait", "--pending-notice", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "VLKD_STORE": store.uri},
    )
    reason = "needs 2 GPU, cluster has 0 GPU: no node offers GPUs"
    try:
        job_id = waiting.stdout.readline().strip()
        told = [waiting.stderr.readline().strip()]  # "submitted ...", then what --wait says while it waits
        while told[-1] != reason and len(told) < 10:
            told.append(waiting.stderr.readline().strip())
    finally:
        waiting.kill()
    assert told[-1] == reason and told[-2].startswith(f"job {job_id} is pending: "), told
    status = vlkd_cli("status", job_id).stdout.splitlines()
    assert status[0].split()[:2] == [job_id, "PENDING"] and status[1].strip() == reason
    assert "waiting for resources: " + reason in vlkd_cli("logs", job_id).stdout
    assert vlkd_cli("cancel", job_id).returncode == 0
    wait_for(lambda: vlkd_cli("status", job_id).stdout.split()[1] == "STOPPED", timeout=60)


@pytest.mark.slow
def test_logs_and_status_outlive_the_ray_cluster(vlkd_cli, text_job_on_head, ray_head, ray_head_dir, stop_ray_head):
    """The module's last test: it shuts the head down."""
    submitted, s3_text_inputs = text_job_on_head
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    job_id = submitted.stdout.splitlines()[0]
    following = RayBackend(ray_head)  # as `vlkd logs -f` holds its client while the head goes
    assert job_id in {s.job_id for s in following.list()}
    stop_ray_head(ray_head_dir)
    gone = f"cannot reach the Ray cluster at {ray_head}: {NOTHING_ANSWERS}"
    with pytest.raises(VlkdError) as error:
        following.list()
    assert str(error.value) == gone  # not the HTTP library's retries and connection pool
    # The head and its dashboard are gone: the store still has the log and how the job ended.
    status = vlkd_cli("status", job_id, env=s3_text_inputs)
    assert status.returncode == 0, status.stderr
    assert status.stdout.split()[:2] == [job_id, "SUCCEEDED"] and "recorded in the store" in status.stdout
    assert gone in status.stdout
    log = vlkd_cli("logs", job_id, env=s3_text_inputs).stdout
    assert "published tokenizer/tiny:v1" in log and "published corpus/tiny:v1" in log
    no_workers = vlkd_cli("logs", job_id, "--worker", "0", env=s3_text_inputs)
    assert no_workers.stdout == ""  # the text stage has no training workers
