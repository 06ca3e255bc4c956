"""Following and stopping real local jobs through the `vlkd` command (issue 35): a succeeded job's id given again
runs nothing unless forced, nor does a new submission of a spec whose outputs are published (the skip rule); Ctrl-C
on `submit --wait` leaves the job running and says how to follow or stop it; `vlkd status` shows a running job's
progress; a cancelled job is STOPPING at once, then STOPPED, never FAILED in between. The jobs: the tiny text stage,
then a text-only student trained for far more steps than the tests wait."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import sigint_as_in_a_terminal
from test_backends import wait_for

from vlkd.artifacts import ArtifactStore, collect_files
from vlkd.joblog import read_progress

EXAMPLES = Path(__file__).parent.parent / "examples" / "tiny"
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def corpus(vlkd_cli, synth_root, tmp_path_factory) -> tuple[str, ArtifactStore, dict[str, str]]:
    """(the id of the tiny text job that published corpus/tiny:v1, the store, the environment that knows the job)."""
    folder = tmp_path_factory.mktemp("job-control")
    store = ArtifactStore.open((folder / "store").as_uri())
    store.publish("dataset", "synth-text", collect_files([synth_root / "text"]))
    env = {"VLKD_STORE": store.uri, "HOME": str(folder / "home")}
    result = vlkd_cli("submit", "text", "-f", str(EXAMPLES / "text.yaml"), "--wait", env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines()[0], store, env


def state(vlkd_cli, job_id: str, env: dict[str, str]) -> str:
    return vlkd_cli("status", job_id, env=env).stdout.split()[1]


def test_a_succeeded_jobs_id_given_again_runs_nothing_unless_forced(vlkd_cli, corpus):
    job_id, store, env = corpus
    command = ["submit", "text", "-f", str(EXAMPLES / "text.yaml"), "--job-id", job_id]
    again = vlkd_cli(*command, "--wait", env=env)
    assert (again.returncode, again.stdout) == (0, f"{job_id}\n"), again.stderr
    assert again.stderr.strip() == f"job {job_id} already succeeded: nothing to resume (--force runs it again)"
    assert store.versions("corpus", "tiny") == [1] and state(vlkd_cli, job_id, env) == "SUCCEEDED"

    forced = vlkd_cli(*command, "--force", env=env)
    assert (forced.returncode, forced.stdout) == (0, f"{job_id}\n"), forced.stderr
    assert state(vlkd_cli, job_id, env) in ("PENDING", "RUNNING")  # a new attempt
    assert vlkd_cli("cancel", job_id, env=env).returncode == 0
    wait_for(lambda: state(vlkd_cli, job_id, env) == "STOPPED", timeout=60)


def test_a_spec_whose_outputs_are_published_is_not_run_again_unless_forced(vlkd_cli, corpus):
    """A new submission of the spec that published corpus/tiny, on the inputs it read, is the skip rule's case: the
    user is told which versions stand and gets the id of the job that made them, as `$(vlkd submit ...)` expects."""
    job_id, store, env = corpus
    versions = {kind: store.versions(kind, "tiny") for kind in ("tokenizer", "corpus")}
    made = " and ".join(f"{kind}/tiny:v{v[-1]}" for kind, v in versions.items())
    spec = str(EXAMPLES / "text.yaml")
    again = vlkd_cli("submit", "text", "-f", spec, "--wait", env=env)
    assert (again.returncode, again.stdout) == (0, f"{job_id}\n"), again.stderr
    assert again.stderr.strip() == (
        f"{spec}: {made} are already published for this spec and these inputs (job {job_id}): nothing to run "
        "(--force runs it again)"
    )
    assert {kind: store.versions(kind, "tiny") for kind in versions} == versions

    changed = Path(env["HOME"]).parent / "text-longer.yaml"  # another spec on the same inputs runs
    changed.write_text(Path(spec).read_text().replace("max_len: 32", "max_len: 48"))
    for command in (["-f", spec, "--force"], ["-f", str(changed)]):
        sent = vlkd_cli("submit", "text", *command, env=env)
        assert sent.returncode == 0 and sent.stderr.startswith("submitted text job "), sent.stderr
        new_id = sent.stdout.strip()
        assert new_id != job_id and state(vlkd_cli, new_id, env) in ("PENDING", "RUNNING", "SUCCEEDED")
        assert vlkd_cli("cancel", new_id, env=env).returncode == 0


@pytest.fixture(scope="module")
def interrupted_wait(vlkd_cli, corpus, tmp_path_factory):
    """`vlkd submit distill --wait` of a student that trains for 100000 steps, interrupted (SIGINT, as Ctrl-C sends
    it) once the job has recorded its progress and rate: (job id, the command's exit code, its stderr). The job is
    cancelled afterwards if a test left it running."""
    _, store, env = corpus
    folder = tmp_path_factory.mktemp("long-student")
    spec = folder / "student.yaml"
    spec.write_text(
        (EXAMPLES / "distill-baseline.yaml")
        .read_text()
        .replace("max_steps: 300, log_every: 50, eval_every: 100, checkpoint_every: 100", "max_steps: 100000")
    )
    out, err = folder / "stdout", folder / "stderr"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        waiting = subprocess.Popen(
            [sys.executable, "-m", "vlkd.cli.main", "submit", "distill", "-f", str(spec), "--wait"],
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, **env},
            preexec_fn=sigint_as_in_a_terminal,
        )
    job_id = None
    try:
        wait_for(lambda: out.read_text().strip(), timeout=60)
        job_id = out.read_text().splitlines()[0]
        wait_for(lambda: (read_progress(store.storage, job_id) or {}).get("rate"), timeout=300)  # a rate: an ETA
        waiting.send_signal(signal.SIGINT)
        code = waiting.wait(timeout=30)
        yield job_id, code, err.read_text()
    finally:  # also when the setup failed: a job left training would take a core from the rest of the suite
        waiting.kill()
        if job_id is not None:
            vlkd_cli("cancel", job_id, env=env)


def test_ctrl_c_while_waiting_leaves_the_job_running_and_says_how_to_follow_or_stop_it(
    vlkd_cli, corpus, interrupted_wait
):
    job_id, code, stderr = interrupted_wait
    assert code == 130
    said = stderr.strip().splitlines()[-3:]
    assert said == [
        f"interrupted: job {job_id} still runs; vlkd stopped following it, not the job",
        f"  follow it: vlkd logs -f {job_id}  (or: vlkd status {job_id})",
        f"  stop it:   vlkd cancel {job_id}",
    ], stderr[-2000:]
    assert state(vlkd_cli, job_id, corpus[2]) == "RUNNING"


def test_status_of_a_running_job_shows_its_progress(vlkd_cli, corpus, interrupted_wait):
    job_id, _, _ = interrupted_wait
    status = vlkd_cli("status", job_id, env=corpus[2]).stdout.splitlines()
    assert status[0].split()[:2] == [job_id, "RUNNING"]
    eta = r"(\d+d \d\d|\d+):\d\d:\d\d"  # days beyond 24 hours: the rate is the test machine's
    usage = r"[0-9.e+-]+ TFLOP/s per worker"  # the device's use (`vlkd.flops`); no MFU: a CPU has no known peak
    assert re.fullmatch(rf"  progress: \d+/100000 steps, [0-9.e+]+ steps/s, eta {eta}, {usage}", status[1]), status


def test_a_cancelled_job_is_stopping_at_once_then_stopped_never_failed(vlkd_cli, corpus, interrupted_wait):
    job_id, _, _ = interrupted_wait
    env = corpus[2]
    cancelled = vlkd_cli("cancel", job_id, env=env)
    seen = [state(vlkd_cli, job_id, env)]
    deadline = time.monotonic() + 60
    while seen[-1] != "STOPPED" and time.monotonic() < deadline:
        seen.append(state(vlkd_cli, job_id, env))
    assert seen[-1] == "STOPPED" and set(seen) <= {"STOPPING", "STOPPED"}, seen
    assert cancelled.stdout.strip() == f"cancelled {job_id}: STOPPING until its backend has stopped it"
    again = vlkd_cli("cancel", job_id, env=env)
    assert again.stdout.startswith(f"job {job_id} had already ended (STOPPED: "), again.stdout
    assert again.stdout.rstrip().endswith("): nothing to cancel")
