"""What a stage job gets at run time, whichever backend launched it: its spec, the store, a job id, scratch
space and a Ray connection. `python -m vlkd.jobs.<stage> --spec URI` enters through `job_main`."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vlkd.artifacts import ArtifactStore, Manifest
from vlkd.embedded_ray import setup_worker, worker_env
from vlkd.errors import SpecError, VlkdError, error_lines
from vlkd.joblog import JobRecorder
from vlkd.specs import Resources, StageSpec, parse_spec, parse_yaml
from vlkd.storage import open_storage

log = logging.getLogger("vlkd")

# Logical CPUs a local Ray starts with at least: trainers, Ray Data tasks and actors each reserve CPUs, and on a
# 2-core laptop a pipeline asking for more than the cores would otherwise wait for resources forever. The work
# still shares the physical cores.
LOCAL_MIN_CPUS = 8
# A local Ray whose raylet has not registered within Ray's fixed 30 s raises this (seen on a 2-core machine under
# a full test suite's load); the start is tried again, a few times, rather than failing the job.
LOCAL_START_TIMEOUT = "timed out during startup"
LOCAL_START_ATTEMPTS = 3
# What every job process runs with, set before anything reads it. A job's log is a file: Ray would merge alike lines
# of different workers into one (the stored log keeps each worker's own), and transformers' and the Hub's progress
# bars (on loading and saving models) write a line per redraw there, while the job records its own progress. A job
# sets them for itself where they are unset (`job_main`), which covers the local Ray it starts; the cluster backends
# give them to every process of the job on every node (`JobDescription.environment`): a cluster's Ray workers, which
# load frame encoders' weights, do not get the driver's environment.
JOB_ENV = {"RAY_DEDUP_LOGS": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


@dataclass
class JobContext:
    job_id: str
    store: ArtifactStore
    scratch: Path
    """local working space, deleted when the job ends"""
    recorder: JobRecorder | None = None
    """the job's log and state in the store (set by `job_main`)"""
    started: float = field(default_factory=time.time)
    held: dict[str, float] = field(default_factory=dict)
    """the Ray resources the job asks for (CPU, GPU), which its cost counts as held from start to publish"""

    def hold(self, resources: Resources | None = None, extra_cpus: float = 0) -> dict[str, float]:
        """Count `resources` (workers, or encoder actors; at least one) plus `extra_cpus` for the driver's own
        tasks as what this job holds; returns one worker's ask."""
        workers = max(1, resources.num_workers) if resources else 0
        per_worker = {"CPU": resources.cpus_per_worker, "GPU": resources.gpus_per_worker} if resources else {}
        self.held = {name: workers * amount for name, amount in per_worker.items()}
        self.held["CPU"] = self.held.get("CPU", 0) + extra_cpus
        return per_worker

    def start_ray(self, resources: Resources | None = None, extra_cpus: float = 0) -> None:
        """Connect to Ray (see `ensure_ray`) for what `hold` counts, and say what the job will wait for if the
        cluster cannot give it that."""
        per_worker = self.hold(resources, extra_cpus)
        started_here = ensure_ray(self.held["CPU"])
        why = resource_shortfall(self.held, per_worker)
        if not why:
            return
        if started_here:  # a Ray this job started on this machine never grows: waiting would be forever
            raise VlkdError(f"this machine cannot run the job: {'; '.join(why)}")
        log.warning("waiting for resources: %s", "; ".join(why))
        if self.recorder is not None:
            self.recorder.waiting(why, recheck=lambda: resource_shortfall(self.held, per_worker))

    def cost(self) -> dict[str, float]:
        """Wall time and the CPU- and GPU-hours held: what "what did this artifact cost?" is answered with."""
        seconds = time.time() - self.started
        hours = seconds / 3600
        return {
            "wall_seconds": round(seconds, 1),
            "cpu_hours": round(self.held.get("CPU", 0) * hours, 6),
            "gpu_hours": round(self.held.get("GPU", 0) * hours, 6),
        }


# Stages whose job module is not named after the stage.
_JOB_MODULES = {"eval": "evaluate"}


def job_module(stage: str) -> str:
    """The module that runs a stage: `python -m vlkd.jobs.<module>`."""
    return f"vlkd.jobs.{_JOB_MODULES.get(stage, stage)}"


def new_job_id(stage: str) -> str:
    return f"vlkd-{stage}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def read_spec(uri: str, stage: str) -> Any:
    """Load the spec a job was given: a local path, `file://` or `s3://` URI (the backends upload it first)."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        text = open_storage(f"s3://{parsed.netloc}").read_bytes(parsed.path.strip("/")).decode()
    else:
        path = Path(parsed.path if parsed.scheme == "file" else uri)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpecError(uri, [f"cannot read: {exc.strerror or exc}"]) from None
    return parse_spec(parse_yaml(text, uri), stage, uri)


def open_job_store(spec: StageSpec, override: str | None) -> ArtifactStore:
    """The command line's store wins, then the spec's, then `$VLKD_STORE` and the default."""
    if override:
        return ArtifactStore.open(override)
    if spec.storage is not None:
        return ArtifactStore.open(spec.storage.root, spec.storage.endpoint_url, spec.storage.region)
    return ArtifactStore.open()


def ensure_ray(min_cpus: float = 0) -> bool:
    """Connect to the cluster the job runs on (`RAY_ADDRESS`, set by `ray job submit` and KubeRay), or start
    a local Ray (`start_local_ray`) with enough logical CPUs for what the job will ask. True when it started one."""
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return False
    start_local_ray(max(LOCAL_MIN_CPUS, os.cpu_count() or 1, int(min_cpus + 0.999) + 1))
    return True


def start_local_ray(cpus: int, **options: Any) -> None:
    """Start a Ray on this machine with `cpus` logical CPUs (`options` go to `ray.init`), again if its start times
    out (LOCAL_START_TIMEOUT)."""
    for attempt in range(1, LOCAL_START_ATTEMPTS):
        before = descendants({os.getpid()})
        try:
            _init_local_ray(cpus, options)
            return
        except Exception as error:
            if LOCAL_START_TIMEOUT not in str(error):
                raise
            log.warning(
                "the local Ray did not start within Ray's 30 s (attempt %d of %d; is the machine busy?): "
                "starting it again",
                attempt,
                LOCAL_START_ATTEMPTS,
            )
            # Ray keeps no handle on a node whose start raised: its GCS, raylet and agents would run on.
            for pid in descendants({os.getpid()}) - before:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
    _init_local_ray(cpus, options)


def _init_local_ray(cpus: int, options: dict[str, Any]) -> None:
    import ray

    # Ray starts a worker process per logical CPU for the first driver by default; here the logical CPUs outnumber
    # the cores on purpose (see LOCAL_MIN_CPUS), and a job uses a few workers: start them when tasks need them.
    defaults = {
        "address": "local",
        "include_dashboard": False,
        "log_to_driver": True,
        "_system_config": {"prestart_worker_first_driver": False},
    }
    # Without a dashboard, what Ray Train's placement-group cleaner asks of it fails noisily, and one machine needs
    # no preemption watcher (vlkd.embedded_ray).
    theirs = options.get("runtime_env", {})
    setup = {"worker_process_setup_hook": f"{setup_worker.__module__}.{setup_worker.__name__}"}
    env_vars = worker_env(os.environ) | theirs.get("env_vars", {})
    runtime_env = setup | theirs | {"env_vars": env_vars}
    ray.init(num_cpus=cpus, **(defaults | options | {"runtime_env": runtime_env}))


def descendants(roots: set[int]) -> set[int]:
    """The processes `roots` started, and theirs (Linux, from /proc; elsewhere none are found)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, grew = set(roots), True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return found - roots


def alive(pid: int) -> bool:
    """Whether process `pid` still runs: a zombie has ended (it only waits for its parent to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc to ask (not Linux): the signal found it


def resource_shortfall(total_ask: dict[str, float], per_worker: dict[str, float]) -> list[str]:
    """What the Ray cluster lacks for a job: its whole ask against the cluster's resources, and one worker's ask
    against the largest node (4 GPUs on four 1-GPU nodes still cannot place a 2-GPU worker)."""
    import ray

    have = ray.cluster_resources()
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    why = []
    for name, amount in total_ask.items():
        largest = max((n.get(name, 0) for n in nodes), default=0)
        if amount > have.get(name, 0) + 1e-9:
            reason = "no node offers GPUs" if name == "GPU" and not have.get(name) else "not enough in all"
            why.append(f"needs {amount:g} {name}, cluster has {have.get(name, 0):g} {name}: {reason}")
        elif per_worker.get(name, 0) > largest + 1e-9:
            why.append(f"a worker needs {per_worker[name]:g} {name}, the largest node has {largest:g} {name}")
    if why and os.environ.get("RAY_ADDRESS"):
        why.append("it runs once nodes that offer them join (an autoscaler adds them if the cluster has one)")
    return why


def job_main(stage: str, argv: Sequence[str] | None = None) -> None:
    """Entry point of every stage job (`python -m vlkd.jobs.<stage>`): parse arguments, run, print what was
    published; exit non-zero on error. The stage's `run` is taken from its module imported by name, not from the
    `__main__` that `python -m` executes: what it gives Ray (a training task, a rows preparer) is then pickled by
    reference and imported on the workers. A class of `__main__` is pickled by value, descriptors and all, and
    Python 3.11's `functools.cached_property` holds an RLock, which cannot be pickled (`TeacherTask.prepare_rows`):
    a teacher with Ray Train workers would fail to start."""
    run: Callable[[Any, JobContext], list[Manifest]] = importlib.import_module(job_module(stage)).run
    parser = argparse.ArgumentParser(prog=f"python -m vlkd.jobs.{stage}")
    parser.add_argument("--spec", required=True, help="spec file path or URI")
    parser.add_argument("--store", default=None, help="artifact store URI (default: the spec's, then $VLKD_STORE)")
    parser.add_argument("--job-id", default=None)
    args = parser.parse_args(argv)
    for name, value in JOB_ENV.items():
        os.environ.setdefault(name, value)
    # `vlkd cancel` and Kubernetes stop jobs with SIGTERM: exit through Python so cleanup (ray.shutdown) runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    job_id = args.job_id or new_job_id(stage)
    recorder: JobRecorder | None = None
    with contextlib.ExitStack() as job:
        try:
            spec = read_spec(args.spec, stage)
            store = open_job_store(spec, args.store)
            # What is printed from here on is kept in the store, and SystemExit's code recorded as the job's end.
            recorder = job.enter_context(JobRecorder(store.storage, job_id))
            scratch = job.enter_context(tempfile.TemporaryDirectory(prefix=f"{job_id}-"))
            context = JobContext(job_id, store, Path(scratch), recorder)
            log.info("job %s: %s %s -> %s", job_id, stage, spec.name, context.store.uri)
            for manifest in run(spec, context):
                print(f"published {manifest.ref}", flush=True)
        except VlkdError as exc:
            if recorder is not None:  # what `vlkd status` shows of the failure
                recorder.failed("; ".join(error_lines(exc)))
            sys.exit(_print_error(exc))


def _print_error(exc: VlkdError) -> int:
    """One line per problem, for the user (or the job's log) to read; the exit code says which kind."""
    for line in error_lines(exc):
        print(f"error: {line}", file=sys.stderr, flush=True)
    return exc.exit_code
