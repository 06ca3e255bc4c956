"""Starting a job's local Ray: on a busy machine the raylet can miss Ray's fixed 30 s start window."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from vlkd.embedded_ray import worker_env
from vlkd.runtime import LOCAL_START_ATTEMPTS, alive, ensure_ray, start_local_ray

TIMED_OUT = (
    "The current node timed out during startup. This could happen because some of the raylet failed to startup or "
    "the GCS has become overloaded."
)


def a_process() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


@dataclass
class FakeInit:
    """`ray.init` that fails its first `fail` calls with `error`, each leaving a process behind as a half-started
    node leaves its GCS and raylet; records every call's arguments."""

    fail: int = LOCAL_START_ATTEMPTS - 1
    error: str = TIMED_OUT
    calls: list[dict] = field(default_factory=list)
    leftovers: list[subprocess.Popen] = field(default_factory=list)

    def __call__(self, **kwargs) -> None:
        self.calls.append(kwargs)
        if len(self.calls) <= self.fail:
            self.leftovers.append(a_process())
            raise Exception(self.error)


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeInit]:
    import ray

    init = FakeInit()
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield init
    for process in init.leftovers:
        process.kill()
        process.wait()


def test_a_local_ray_that_misses_its_start_window_is_started_again_and_its_leftovers_stopped(fake_ray):
    bystander = a_process()  # a child the job had before: not the failed start's
    try:
        assert ensure_ray(2) is True
        assert len(fake_ray.calls) == LOCAL_START_ATTEMPTS
        assert all(call == fake_ray.calls[0] for call in fake_ray.calls)
        assert fake_ray.calls[0]["address"] == "local"
        assert [p.wait(timeout=10) for p in fake_ray.leftovers] == [-signal.SIGKILL] * (LOCAL_START_ATTEMPTS - 1)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_local_ray_that_misses_every_start_window_fails_the_job_with_rays_error(fake_ray):
    fake_ray.fail = LOCAL_START_ATTEMPTS
    with pytest.raises(Exception, match="timed out during startup"):
        ensure_ray(2)
    assert len(fake_ray.calls) == LOCAL_START_ATTEMPTS


def test_any_other_failure_to_start_a_local_ray_is_not_tried_again(fake_ray):
    fake_ray.error = "Failed to start the GCS: address already in use"
    with pytest.raises(Exception, match="address already in use"):
        ensure_ray(2)
    assert len(fake_ray.calls) == 1


def test_a_local_rays_options_reach_ray_init_over_the_jobs_defaults(fake_ray):
    fake_ray.fail = 0
    start_local_ray(8, log_to_driver=False, runtime_env={"env_vars": {"A": "1"}})
    (call,) = fake_ray.calls
    assert (call["address"], call["num_cpus"], call["include_dashboard"]) == ("local", 8, False)
    assert call["log_to_driver"] is False
    assert call["runtime_env"]["env_vars"] == {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "A": "1"}
    assert call["runtime_env"]["worker_process_setup_hook"] == "vlkd.embedded_ray.setup_worker"
    assert call["_system_config"] == {"prestart_worker_first_driver": False}


def test_the_embedded_rays_workers_run_without_ray_trains_preemption_watcher_unless_the_user_set_it():
    """One machine is never drained; the switch is the one Ray Train reads (ray/train/v2/_internal/constants.py)."""
    from ray.train.v2._internal.constants import ENABLE_PREEMPTION_WATCHER_ENV_VAR

    assert worker_env({}) == {ENABLE_PREEMPTION_WATCHER_ENV_VAR: "0"}
    assert worker_env({ENABLE_PREEMPTION_WATCHER_ENV_VAR: "1"}) == {}


EMBEDDED_WORKER = """
import logging, threading
from vlkd.embedded_ray import PG_CLEANER_LOGGER, PG_CLEANER_THREAD, setup_worker
logging.basicConfig(format="%(levelname)s %(message)s")
setup_worker()
cleaner = logging.getLogger(PG_CLEANER_LOGGER)
cleaner.warning("Failed to query Ray Train Controller actor state.")
cleaner.error("Failed to clean up placement group")
def fail(why):
    raise ConnectionError(why)
for name, why in ((PG_CLEANER_THREAD, "Found multiple active Ray instances"), ("Other", "the other thread's error")):
    thread = threading.Thread(target=fail, args=(why,), name=name)
    thread.start()
    thread.join()
"""


def test_an_embedded_ray_worker_hides_what_the_placement_group_cleaner_cannot_help_and_nothing_else():
    """What `setup_worker` does in a worker of the embedded Ray, in a process of its own (it sets the process's
    thread excepthook): the cleaner's warning and its thread's death are hidden, its errors and any other thread's
    death still show."""
    result = subprocess.run([sys.executable, "-c", EMBEDDED_WORKER], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Failed to query" not in result.stderr and "Found multiple active Ray instances" not in result.stderr
    assert "ERROR Failed to clean up placement group" in result.stderr
    assert "ConnectionError: the other thread's error" in result.stderr


def test_a_process_is_alive_until_it_ends_and_a_zombie_is_not():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    assert alive(child.pid)
    child.stdin.close()  # it ends; unreaped, it stays a zombie
    deadline = time.monotonic() + 30
    while alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child.pid) and child.poll() == 0  # ended (not yet reaped), then reaped
    assert not alive(child.pid)


def test_a_user_error_raised_in_a_ray_task_prints_as_the_one_line_it_was_raised_with():
    """The eval's finetuning runs, preprocess's encoders and training workers raise VlkdErrors in Ray workers; the
    driver catches Ray's wrapper, whose message is the worker's traceback."""
    from ray.exceptions import RayTaskError

    from vlkd.errors import VlkdError, error_lines

    raised = VlkdError("/models/x lacks 4 of the encoder's weights: finetune a student's language model")
    wrapped = RayTaskError("run", f"Traceback (most recent call last):\n  ...\nVlkdError: {raised}", raised)
    caught = wrapped.as_instanceof_cause()
    assert isinstance(caught, VlkdError) and len(str(caught).splitlines()) > 1  # what the job printed before
    assert error_lines(caught) == [str(raised)]
