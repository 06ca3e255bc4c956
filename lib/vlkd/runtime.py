"""What a stage job gets at run time, whichever backend launched it: its spec, the store, a job id, scratch
space and a Ray connection. `python -m vlkd.jobs.<stage> --spec URI` enters through `job_main`."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vlkd.artifacts import ArtifactStore, Manifest
from vlkd.errors import SpecError, VlkdError
from vlkd.specs import StageSpec, parse_spec, parse_yaml
from vlkd.storage import open_storage

log = logging.getLogger("vlkd")

# Logical CPUs a local Ray starts with at least: trainers, Ray Data tasks and actors each reserve CPUs, and on a
# 2-core laptop a pipeline asking for more than the cores would otherwise wait for resources forever. The work
# still shares the physical cores.
LOCAL_MIN_CPUS = 8


@dataclass
class JobContext:
    job_id: str
    store: ArtifactStore
    scratch: Path
    """local working space, deleted when the job ends"""


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


def ensure_ray(min_cpus: float = 0) -> None:
    """Connect to the cluster the job runs on (`RAY_ADDRESS`, set by `ray job submit` and KubeRay), or start
    a local Ray with enough logical CPUs for what the job will ask."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        cpus = max(LOCAL_MIN_CPUS, os.cpu_count() or 1, int(min_cpus + 0.999) + 1)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=True)


def job_main(stage: str, run: Callable[[Any, JobContext], list[Manifest]], argv: Sequence[str] | None = None) -> None:
    """Entry point of every stage job: parse arguments, run, print what was published; exit non-zero on error."""
    parser = argparse.ArgumentParser(prog=f"python -m vlkd.jobs.{stage}")
    parser.add_argument("--spec", required=True, help="spec file path or URI")
    parser.add_argument("--store", default=None, help="artifact store URI (default: the spec's, then $VLKD_STORE)")
    parser.add_argument("--job-id", default=None)
    args = parser.parse_args(argv)
    # `vlkd cancel` and Kubernetes stop jobs with SIGTERM: exit through Python so cleanup (ray.shutdown) runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        spec = read_spec(args.spec, stage)
        job_id = args.job_id or new_job_id(stage)
        with tempfile.TemporaryDirectory(prefix=f"{job_id}-") as scratch:
            context = JobContext(job_id, open_job_store(spec, args.store), Path(scratch))
            log.info("job %s: %s %s -> %s", job_id, stage, spec.name, context.store.uri)
            manifests = run(spec, context)
    except SpecError as exc:
        for problem in exc.problems:
            print(f"error: {exc.source}: {problem}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except VlkdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    for manifest in manifests:
        print(f"published {manifest.ref}", flush=True)
