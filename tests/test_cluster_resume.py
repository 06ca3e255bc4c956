"""Multi-day runs on a cluster backend, on a real token-authenticated Ray head on 127.0.0.1: a stage job whose
driver dies resumes where it left off when its id is submitted again, and a pipeline runs as one cluster job that
survives its own driver's death."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
import yaml

from vlkd.artifacts import ArtifactStore, collect_files

EXAMPLES = Path(__file__).parent.parent / "examples" / "tiny"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def ray_head(start_ray_head, tmp_path_factory):
    with start_ray_head(tmp_path_factory.mktemp("ray-head")) as address:
        yield address


@pytest.fixture(scope="module")
def datasets(synth_root, s3_endpoint, tmp_path_factory) -> dict[str, str]:
    """An S3 store holding the synthetic datasets under the tiny examples' names; the environment that reaches it."""
    from conftest import _make_bucket

    uri = f"s3://{_make_bucket(s3_endpoint)}/vlkd"
    store = ArtifactStore.open(uri, endpoint_url=s3_endpoint)
    for part, name in (("videos", "synth-videos"), ("text", "synth-text"), ("tasks/sst2", "synth-sst2")):
        store.publish("dataset", name, collect_files([synth_root / part]))
    return {"VLKD_STORE": uri, "AWS_ENDPOINT_URL": s3_endpoint}


def _store(env: dict[str, str]) -> ArtifactStore:
    return ArtifactStore.open(env["VLKD_STORE"], endpoint_url=env["AWS_ENDPOINT_URL"])


def _spec(tmp_path: Path, stage: str, **changes) -> Path:
    spec = yaml.safe_load((EXAMPLES / f"{stage}.yaml").read_text()) | changes
    path = tmp_path / f"{stage}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _kill_driver(module: str, job_id: str) -> None:
    """SIGKILL the job's driver process on the head, as a node loss or an OOM kill would end it."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"-m" in args and module.encode() in args and job_id.encode() in args:
            os.kill(int(proc.name), signal.SIGKILL)
            return
    raise AssertionError(f"no driver process of {job_id}")


def _wait_for(predicate, timeout: float = 300.0, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll)
    return value


def _submit(vlkd_cli, ray_head, env, stage: str, spec: Path, *extra: str):
    command = ["submit", stage, "--spec", str(spec), "--backend", "ray", "--address", ray_head, *extra]
    return vlkd_cli(*command, env=env, timeout=600)


def _state(vlkd_cli, env, job_id: str) -> str:
    return vlkd_cli("status", job_id, env=env).stdout.split()[1]


def test_a_killed_teacher_job_resubmitted_with_its_id_resumes_from_its_latest_checkpoint(
    vlkd_cli, ray_head, datasets, tmp_path
):
    store = _store(datasets)
    for stage in ("preprocess", "text"):
        done = _submit(vlkd_cli, ray_head, datasets, stage, EXAMPLES / f"{stage}.yaml", "--wait")
        assert done.returncode == 0, done.stderr[-2000:]
    train = {"batch_size": 2, "max_steps": 60, "log_every": 5, "eval_every": 10, "checkpoint_every": 10, "val_size": 4}
    spec = _spec(tmp_path, "teacher", train=train)
    job_id = _submit(vlkd_cli, ray_head, datasets, "teacher", spec).stdout.strip()

    def checkpoints() -> list[str]:
        return [c for c in store.storage.children(f"checkpoints/{job_id}") if c.startswith("step-")]

    def checkpointed() -> bool:
        assert vlkd_cli("status", job_id, env=datasets).stdout.split()[1] not in ("FAILED", "SUCCEEDED")
        return any(store.storage.exists(f"checkpoints/{job_id}/{c}/.complete") for c in checkpoints())

    _wait_for(checkpointed)
    _kill_driver("vlkd.jobs.teacher", job_id)
    _wait_for(lambda: _state(vlkd_cli, datasets, job_id) == "FAILED", timeout=60, poll=1)
    latest = max(int(c.removeprefix("step-")) for c in checkpoints())
    # The last step the killed run logged, from the head's copy of its output (the store's copy can lack the last
    # seconds: a SIGKILL leaves no time to upload them).
    from vlkd.backends.ray import RayBackend

    logged = [re.search(r"step (\d+)/60 \(", line) for line in RayBackend(ray_head).logs(job_id, {})]
    killed_at = max(int(m.group(1)) for m in logged if m)

    again = _submit(vlkd_cli, ray_head, datasets, "teacher", spec, "--job-id", job_id, "--wait")
    assert again.returncode == 0, again.stderr[-2000:]
    metrics = store.manifest("teacher/tiny").metrics
    assert metrics["steps"] == 60 and metrics["resumed_from"] == [latest], (metrics, latest)
    assert 0 <= killed_at - latest <= train["checkpoint_every"], (killed_at, latest)
    assert store.manifest("teacher/tiny").job_id == job_id
