"""The pipeline as one cluster job (`vlkd pipeline submit`): this driver runs on the cluster and submits each
stage as a job of its own to the same Ray cluster, each with its own resources, so the machine that submitted the
pipeline may disconnect. A retry of this job (resubmitted with its id, or by KubeRay's backoff) skips the stages
that published and resumes the interrupted one (`vlkd.pipeline`)."""

from __future__ import annotations

import logging
import os
from typing import Any

from vlkd.artifacts import Manifest
from vlkd.backends.base import Backend, JobState
from vlkd.pipeline import StageRun, run_pipeline, wait_until_finished
from vlkd.runtime import JobContext, job_main
from vlkd.specs import PipelineSpec

log = logging.getLogger("vlkd.pipeline")
POLL_SECONDS = 5.0


class LogReporter:
    """A stage's progress as lines in the pipeline job's log (read with `vlkd logs`); the stage's own log stays
    in its job's."""

    def follow(self, stage: StageRun, backend: Backend, record: dict[str, Any]) -> JobState:
        log.info("stage %s: job %s running (`vlkd logs %s`)", stage.key, stage.job_id, stage.job_id)
        return wait_until_finished(backend, stage.job_id, record, poll=POLL_SECONDS)

    def done(self, stage: StageRun) -> None:
        log.info("stage %s: %s %s", stage.key, stage.state, " ".join(stage.outputs) or stage.message)


def own_cluster_dashboard() -> str:
    """The Job Submission address of the Ray cluster this driver runs on."""
    import ray

    started = ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), log_to_driver=False)
    try:
        return "http://" + started.address_info["webui_url"].removeprefix("http://")
    finally:
        ray.shutdown()


def run(spec: PipelineSpec, context: JobContext) -> list[Manifest]:
    from vlkd.backends.ray import RayBackend

    address = own_cluster_dashboard()
    log.info("pipeline %s: stages go to the Ray cluster at %s", spec.name, address)
    options = {"address": address}
    run_pipeline(spec, context.store, RayBackend(**options), options, LogReporter(), job_id=context.job_id)
    return []


if __name__ == "__main__":
    job_main("pipeline")
