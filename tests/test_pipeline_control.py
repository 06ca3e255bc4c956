"""`vlkd pipeline run` interrupted and run again, on the local backend as a user does it (issue 35): Ctrl-C says
which stage job runs on and how to follow or stop it; the same command again follows that job instead of training
the same model a second time; and `vlkd pipeline status` reads a stage's state from its job once the job has been
cancelled. The pipeline: the tiny data stages on the synthetic dataset, then a teacher that trains for far more
steps than the tests wait."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import sigint_as_in_a_terminal
from test_backends import wait_for

from vlkd.artifacts import ArtifactStore, collect_files
from vlkd.joblog import read_progress
from vlkd.pipeline import PipelineRun, StageRun

EXAMPLES = Path(__file__).parent.parent / "examples" / "tiny"
pytestmark = pytest.mark.timeout(600)


@dataclass
class Pipeline:
    spec: Path
    store: ArtifactStore
    env: dict[str, str]

    def run(self, out: Path) -> subprocess.Popen:
        """`vlkd pipeline run`, its stderr to `out`."""
        with open(out, "w") as stderr:
            return subprocess.Popen(
                [sys.executable, "-m", "vlkd.cli.main", "pipeline", "run", str(self.spec)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, **self.env},
                preexec_fn=sigint_as_in_a_terminal,
            )

    def teacher(self) -> StageRun:
        """The teacher stage as the pipeline's last run recorded it."""
        return next(stage for stage in PipelineRun.load("control", self.store.uri).stages if stage.key == "teacher")


def interrupt(run: subprocess.Popen) -> int:
    """Ctrl-C (SIGINT to the command alone: a local job runs in a session of its own)."""
    run.send_signal(signal.SIGINT)
    try:
        return run.wait(timeout=30)
    finally:
        run.kill()


@pytest.fixture(scope="module")
def pipeline(vlkd_cli, synth_root, tmp_path_factory) -> Iterator[Pipeline]:
    folder = tmp_path_factory.mktemp("pipeline-control")
    store = ArtifactStore.open((folder / "store").as_uri())
    for part in ("videos", "text"):
        store.publish("dataset", f"synth-{part}", collect_files([synth_root / part]))
    spec = yaml.safe_load((EXAMPLES / "pipeline.yaml").read_text())
    spec["name"] = "control"
    spec["parallelism"] = 1  # the teacher is the one stage job running when interrupted (several: test_pipeline_dag)
    spec["text"]["val_size"] = 16
    spec["teacher"]["train"] = {"batch_size": 4, "max_steps": 100000, "log_every": 10, "val_size": 4}
    spec["students"] = [s for s in spec["students"] if s["name"] == "tiny-baseline"]
    del spec["eval"]
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {"VLKD_STORE": store.uri, "HOME": str(folder / "home")}
    yield Pipeline(path, store, env)
    for line in vlkd_cli("list", env=env).stdout.splitlines()[1:]:
        vlkd_cli("cancel", line.split()[0], env=env)


@pytest.fixture(scope="module")
def interrupted(pipeline, tmp_path_factory) -> tuple[str, int, str]:
    """(the teacher's job id, the exit code and stderr of `vlkd pipeline run` interrupted while it trains)."""
    err = tmp_path_factory.mktemp("first-run") / "stderr"
    first = pipeline.run(err)
    try:
        wait_for(lambda: pipeline.store.storage.exists("pipelines/control/run.json") and pipeline.teacher().job_id, 400)
        teacher = pipeline.teacher().job_id
        wait_for(lambda: read_progress(pipeline.store.storage, teacher) is not None, timeout=300)
    finally:
        code = interrupt(first)
    return teacher, code, err.read_text()


def test_ctrl_c_on_pipeline_run_says_which_stage_job_runs_on_and_how_to_follow_or_stop_it(interrupted):
    teacher, code, stderr = interrupted
    assert code == 130
    assert stderr.strip().splitlines()[-4:] == [
        f"interrupted: stage teacher (job {teacher}) still runs; vlkd stopped following it, not the job",
        "  the same command again follows it, then runs the stages after it",
        f"  follow it: vlkd logs -f {teacher}  (or: vlkd status {teacher})",
        f"  stop it:   vlkd cancel {teacher}",
    ], stderr[-2000:]


def test_pipeline_run_again_follows_the_stage_job_that_still_runs(vlkd_cli, pipeline, interrupted, tmp_path):
    teacher, _, _ = interrupted
    first_run = PipelineRun.load("control", pipeline.store.uri).started_at
    again = pipeline.run(tmp_path / "stderr")
    try:
        wait_for(
            lambda: (
                PipelineRun.load("control", pipeline.store.uri).started_at != first_run
                and pipeline.teacher().state == "running"
            )
        )
    finally:
        assert interrupt(again) == 130
    followed = pipeline.teacher()
    assert (followed.job_id, followed.message) == (teacher, "followed: its job was still running")
    assert f"vlkd cancel {teacher}" in (tmp_path / "stderr").read_text()
    assert vlkd_cli("list", env=pipeline.env).stdout.count("vlkd-teacher-") == 1


def test_pipeline_status_reads_a_cancelled_stages_state_from_its_job(vlkd_cli, pipeline, interrupted):
    teacher, _, _ = interrupted
    assert vlkd_cli("cancel", teacher, env=pipeline.env).returncode == 0
    wait_for(lambda: vlkd_cli("status", teacher, env=pipeline.env).stdout.split()[1] == "STOPPED", timeout=60)
    status = vlkd_cli("pipeline", "status", "control", env=pipeline.env).stdout
    line = next(line for line in status.splitlines() if line.startswith("teacher "))
    assert line.split()[1:4] == ["failed", teacher, "STOPPED:"], status
