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


def _s3_store(endpoint: str, root: Path, datasets: dict[str, str]) -> dict[str, str]:
    """A new S3 store holding `datasets` (name: folder under `root`); the environment that reaches it."""
    from conftest import _make_bucket

    uri = f"s3://{_make_bucket(endpoint)}/vlkd"
    store = ArtifactStore.open(uri, endpoint_url=endpoint)
    for name, part in datasets.items():
        store.publish("dataset", name, collect_files([root / part]))
    return {"VLKD_STORE": uri, "AWS_ENDPOINT_URL": endpoint}


@pytest.fixture(scope="module")
def datasets(synth_root, s3_endpoint) -> dict[str, str]:
    """The synthetic datasets under the tiny examples' names, on S3."""
    names = {"synth-videos": "videos", "synth-text": "text", "synth-sst2": "tasks/sst2", "synth-qnli": "tasks/qnli"}
    return _s3_store(s3_endpoint, synth_root, names)


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


def _head_state(ray_head: str, job_id: str) -> str:
    """The job's state from the head's Job API, asked in this process: a wait loop's poll (a `vlkd status` process
    costs about a CPU-second, a poll every fraction of one kept a core busy)."""
    from vlkd.backends.ray import RayBackend

    return RayBackend(ray_head).status(job_id, {}).state.value


def _ends_failed(vlkd_cli, ray_head: str, env, job_id: str) -> None:
    """Wait for the head to see the killed job fail, then check `vlkd status` says so."""
    _wait_for(lambda: _head_state(ray_head, job_id) == "FAILED", timeout=60, poll=1)
    assert _state(vlkd_cli, env, job_id) == "FAILED"


@pytest.fixture(scope="module")
def tiny_inputs(vlkd_cli, ray_head, datasets) -> dict[str, str]:
    """The datasets' store once the tiny examples' preprocess and text jobs ran on the head: the teacher's inputs,
    published once for the tests below (the pipeline's blocks are the same specs, so its runs skip them)."""
    for stage in ("preprocess", "text"):
        done = _submit(vlkd_cli, ray_head, datasets, stage, EXAMPLES / f"{stage}.yaml", "--wait")
        assert done.returncode == 0, done.stderr[-2000:]
    return datasets


def test_a_killed_teacher_job_resubmitted_with_its_id_resumes_from_its_latest_checkpoint(
    vlkd_cli, ray_head, tiny_inputs, tmp_path
):
    datasets = tiny_inputs
    store = _store(datasets)
    train = {"batch_size": 2, "max_steps": 60, "log_every": 5, "eval_every": 10, "checkpoint_every": 10, "val_size": 4}
    spec = _spec(tmp_path, "teacher", train=train)
    job_id = _submit(vlkd_cli, ray_head, datasets, "teacher", spec).stdout.strip()

    def complete_checkpoints() -> list[int]:
        """The steps of the checkpoints whose upload finished: a kill can land while the next one uploads, and
        the resumed run restores only a complete one."""
        names = [c for c in store.storage.children(f"checkpoints/{job_id}") if c.startswith("step-")]
        complete = [c for c in names if store.storage.exists(f"checkpoints/{job_id}/{c}/.complete")]
        return [int(c.removeprefix("step-")) for c in complete]

    def checkpointed() -> bool:
        assert _head_state(ray_head, job_id) not in ("FAILED", "SUCCEEDED")
        return bool(complete_checkpoints())

    _wait_for(checkpointed)
    _kill_driver("vlkd.jobs.teacher", job_id)
    _ends_failed(vlkd_cli, ray_head, datasets, job_id)
    latest = max(complete_checkpoints())
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


@pytest.fixture
def many_videos(s3_endpoint, tmp_path) -> dict[str, str]:
    """Forty short synthetic videos, enough that a preprocess job can be stopped halfway, in a store of their own."""
    from vlkd.data.synth import SynthConfig, generate

    generate(tmp_path / "data", SynthConfig(num_videos=40, max_seconds=6.0, corpus_paragraphs=10))
    return _s3_store(s3_endpoint, tmp_path / "data", {"many-videos": "videos"})


def test_a_killed_preprocess_job_resubmitted_takes_its_finished_videos_from_the_run_cache(
    vlkd_cli, ray_head, many_videos, tmp_path
):
    store = _store(many_videos)
    spec = _spec(tmp_path, "preprocess", name="many", videos="dataset/many-videos")
    job_id = _submit(vlkd_cli, ray_head, many_videos, "preprocess", spec).stdout.strip()

    def finished_videos() -> int:
        ends = [i.key for i in store.storage.list("cache/preprocess") if ".end-" in i.key]
        return len({key.rsplit("/", 1)[1].split(".")[0] for key in ends})

    _wait_for(lambda: finished_videos() >= 1, poll=0.1)
    _kill_driver("vlkd.jobs.preprocess", job_id)
    done_before = finished_videos()
    assert done_before < 40, "the job finished before it could be killed"
    _ends_failed(vlkd_cli, ray_head, many_videos, job_id)

    again = _submit(vlkd_cli, ray_head, many_videos, "preprocess", spec, "--job-id", job_id, "--wait")
    assert again.returncode == 0, again.stderr[-2000:]
    metrics = store.manifest("features/many").metrics
    assert metrics["reused_videos"] >= done_before > 0, (metrics, done_before)
    assert metrics["videos"] + metrics["skipped"] == 40, metrics


def _small_pipeline(tmp_path: Path) -> Path:
    """The tiny pipeline, named `cluster`, with a few steps per stage and one eval task and seed; its data stages
    keep the name `tiny`, so they are the tiny examples' jobs (`tiny_inputs`). Its teacher trains on a Ray Train
    worker, as on a cluster: its job (`python -m vlkd.jobs.teacher`) ships the task to that worker."""
    spec = yaml.safe_load((EXAMPLES / "pipeline.yaml").read_text())
    short = {"log_every": 5, "eval_every": 10, "checkpoint_every": 10, "val_size": 4}
    spec["name"] = "cluster"
    spec["preprocess"]["name"] = spec["text"]["name"] = "tiny"
    spec["teacher"]["train"] = {**short, "batch_size": 2, "max_steps": 60}
    spec["teacher"]["resources"] = {"num_workers": 1, "cpus_per_worker": 1}
    for student in spec["students"]:
        student["train"] = {**short, "batch_size": 4, "max_steps": 10}
    spec["eval"] |= {"tasks": spec["eval"]["tasks"][:1], "seeds": [0]}
    spec["eval"]["finetune"]["epochs"] = 1
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_pipeline_submitted_as_one_cluster_job_outlives_its_driver_and_resumes(
    vlkd_cli, ray_head, tiny_inputs, tmp_path
):
    """`vlkd pipeline submit` returns at once (the laptop may go); the pipeline's driver runs on the head. Killed
    while the teacher trains, the pipeline job resubmitted with its id skips what published, follows the teacher's
    job (which its driver's death did not stop; had it published meanwhile, the retry shows that job's success), and
    runs the rest; any machine reads its progress from the store."""
    datasets = tiny_inputs
    store = _store(datasets)
    spec = _small_pipeline(tmp_path)
    submit = ["pipeline", "submit", str(spec), "--backend", "ray", "--address", ray_head]
    job_id = vlkd_cli(*submit, env=datasets).stdout.strip()
    teacher_job = f"{job_id}-teacher"

    def teacher_checkpointed() -> bool:
        assert _head_state(ray_head, job_id) not in ("FAILED", "SUCCEEDED")  # a failed stage ends it
        return bool(store.storage.children(f"checkpoints/{teacher_job}"))

    _wait_for(teacher_checkpointed, timeout=400, poll=1)
    _kill_driver("vlkd.jobs.pipeline", job_id)
    _ends_failed(vlkd_cli, ray_head, datasets, job_id)

    again = vlkd_cli(*submit, "--job-id", job_id, "--wait", env=datasets, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    teacher = store.manifest("teacher/cluster")
    assert teacher.job_id == teacher_job and teacher.metrics["steps"] == 60 and teacher.metrics["resumed_from"] == []

    elsewhere = {**datasets, "HOME": str(tmp_path / "another-machine")}  # knows nothing of these jobs but the store
    status = vlkd_cli("pipeline", "status", "cluster", "--store", datasets["VLKD_STORE"], env=elsewhere)
    assert status.returncode == 0, status.stderr
    lines = {line.split()[0]: line.split()[1:3] for line in status.stdout.splitlines()[1:]}
    assert lines["preprocess"][0] == lines["text"][0] == "skipped", status.stdout  # published before
    assert lines["teacher"] == ["succeeded", teacher_job], status.stdout
    assert all(lines[key][0] == "succeeded" for key in ("distill:tiny-nst-crd", "distill:tiny-baseline", "eval"))
    log = vlkd_cli("logs", job_id, "--store", datasets["VLKD_STORE"], env=elsewhere).stdout
    assert f"stage teacher: job {teacher_job} running" in log and "stage eval: succeeded eval/cluster:v1" in log

    rerun = vlkd_cli(*submit, "--wait", env=datasets, timeout=300)  # a new pipeline job: everything is published
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    status = vlkd_cli("pipeline", "status", "cluster", env=datasets).stdout
    assert status.count("skipped") == 6, status
