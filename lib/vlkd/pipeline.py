"""Running a `PipelineSpec`: data -> teacher -> students -> eval, each stage a job on a backend. A stage starts
once the stages whose outputs it reads have published (`stage_needs`), so independent ones (preprocess and text,
the baseline student and the teacher) run at once, up to the pipeline's `parallelism`.

Before a stage is submitted its input refs are pinned to the versions that exist now (`features/x` ->
`features/x:v3`), so the lineage records exactly what it consumed; a stage whose output already exists for the
very same pinned spec is skipped (the skip rule, `vlkd.published`), unless forced. Progress is kept in the store
(`pipelines/<name>/run.json`), so `vlkd pipeline status` shows the DAG from any machine while it runs and after.

Run as one cluster job (`vlkd pipeline submit`, `vlkd.jobs.pipeline`), each stage's job id derives from the
pipeline job's (`<pipeline job id>-<stage>`): a resubmitted or retried pipeline job skips the stages that
published, follows a stage job that is still running, and resubmits an interrupted one under its own id, which
resumes it from its checkpoints (training) or its run cache (preprocess). Run from this machine (`vlkd pipeline
run`), stages get new job ids; a run started again after the last one was interrupted follows the stage job the
last run recorded as running, if it still runs for the same pinned spec (`StageRun.spec_sha256`), rather than start
a second job that trains the same model.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import queue
import re
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import yaml

from vlkd.ablation_table import AblationTable
from vlkd.artifacts import ArtifactStore, Manifest
from vlkd.backends.base import Backend, JobState
from vlkd.backends.submission import job_status, prepare, submit
from vlkd.errors import NotFoundError, VlkdError
from vlkd.jobstate import recall, vlkd_home
from vlkd.published import outputs_of, pin_spec, refs_in
from vlkd.refs import ArtifactRef
from vlkd.specs import PipelineSpec, StageSpec
from vlkd.stage_dag import artifact_makers, made_here, stage_needs


@dataclass
class StageRun:
    key: str
    stage: str
    state: str = "pending"
    """pending, running, skipped, succeeded, failed"""
    job_id: str | None = None
    outputs: list[str] = field(default_factory=list)
    message: str = ""
    spec_sha256: str = ""
    """of the pinned spec its job was submitted with: a later run follows that job only for the same spec"""


@dataclass
class PipelineRun:
    name: str
    store: str
    backend: str
    started_at: str
    stages: list[StageRun]
    job_id: str | None = None
    """the pipeline's own job, when it runs as one cluster job"""
    tables: list[AblationTable] = field(default_factory=list)
    """the pipeline's ablation tables, whose cells' states `vlkd pipeline status` shows from the stages'"""

    def save(self, store: ArtifactStore) -> None:
        store.storage.write_bytes(run_key(self.name), json.dumps(asdict(self), indent=2).encode())
        pointer = _pointer(self.name)  # so that `vlkd pipeline status NAME` on this machine finds the store
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.write_text(json.dumps({"store": store.uri}))

    @classmethod
    def load(cls, name: str, store_uri: str | None = None) -> PipelineRun:
        """The last run of pipeline `name`, from `store_uri`, else from the store this machine last ran it in."""
        if store_uri is None and _pointer(name).is_file():
            store_uri = json.loads(_pointer(name).read_text())["store"]
        store = ArtifactStore.open(store_uri)
        try:
            data = json.loads(store.storage.read_bytes(run_key(name)))
        except NotFoundError:
            raise NotFoundError(
                f"no run of pipeline {name!r} in {store.uri}: start one with `vlkd pipeline run` or "
                "`vlkd pipeline submit`, or name its store with --store"
            ) from None
        stages = [StageRun(**s) for s in data["stages"]]
        tables = [AblationTable.from_json(t) for t in data.get("tables", [])]
        return cls(**{**data, "stages": stages, "tables": tables})


def run_key(name: str) -> str:
    return f"pipelines/{name}/run.json"


def _pointer(name: str) -> Path:
    return vlkd_home() / "pipelines" / f"{name}.json"


def stage_job_id(pipeline_job_id: str, key: str) -> str:
    """`distill:tiny-baseline` of job `vlkd-pipeline-...` -> `vlkd-pipeline-...-distill-tiny-baseline`."""
    return f"{pipeline_job_id}-{re.sub(r'[^A-Za-z0-9-]+', '-', key).strip('-')}"


class Reporter(Protocol):
    """How a pipeline run shows itself (the CLI draws progress bars; tests stay quiet)."""

    def follow(self, stage: StageRun, backend: Backend, record: dict[str, Any]) -> JobState:
        """Watch a submitted stage until it ends; return its final state."""

    def done(self, stage: StageRun) -> None:
        """A stage was skipped or has ended."""


def run_pipeline(
    pipeline: PipelineSpec,
    store: ArtifactStore,
    backend: Backend,
    options: dict[str, Any],
    reporter: Reporter,
    force: bool = False,
    image: str | None = None,
    job_id: str | None = None,
) -> PipelineRun:
    """`job_id`: the pipeline's own job, which names its stages' jobs; None for new ids (`vlkd pipeline run`).
    Stages run as their inputs allow (`stage_needs`), up to the pipeline's parallelism on `backend` at once."""
    stages = pipeline.stages()
    needs = stage_needs(stages)
    check_inputs(stages, store)
    earlier = _last_run(pipeline.name, store, backend.name)
    run = PipelineRun(
        pipeline.name,
        store.uri,
        backend.name,
        datetime.now(timezone.utc).isoformat(),
        [StageRun(key, spec.stage, message=_waits_for(needs[key])) for key, spec in stages],
        job_id,
        pipeline.ablation_tables(),
    )
    run.save(store)
    parallelism = pipeline.parallelism_on(backend.name)
    env = _cores_shared(parallelism) if backend.name == "local" else {}
    # A local job reads its spec file where it is: the folder lives until the last stage has ended.
    with tempfile.TemporaryDirectory(prefix="vlkd-pipeline-") as specs:
        submitter = _Submitter(store, backend, options, image, job_id, Path(specs), env)
        _Stages(run, submitter, reporter, force, earlier).run_all(stages, needs, parallelism)
    return run


def _cores_shared(parallelism: int) -> dict[str, str]:
    """The environment of local stage jobs that run `parallelism` at once: each gets its share of this machine's
    cores for torch's threads (OMP_NUM_THREADS), unless the user set them. Two jobs that each take every core wait
    on each other's spinning threads: the small quickstart's teacher and baseline student, each 2 threads on 2
    cores, trained at 0.9 and 2 steps/s, against 20 and 34 alone."""
    if parallelism == 1 or "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // parallelism))}


def _waits_for(keys: set[str]) -> str:
    """What a pending stage's line says until it starts (`vlkd pipeline status`)."""
    return f"waits for {', '.join(sorted(keys))}" if keys else ""


def check_inputs(stages: list[tuple[str, StageSpec]], store: ArtifactStore) -> None:
    """Every input that no stage makes exists now: a missing dataset fails the run before anything runs, not
    after the days the stages before its reader take."""
    makers = artifact_makers(stages)
    readers: dict[ArtifactRef, str] = {}  # each ref once, with the first stage that reads it
    for key, spec in stages:
        for ref in refs_in(spec.model_dump(mode="json")):
            readers.setdefault(ref, key)
    for ref, key in readers.items():
        if not made_here(ref, makers):
            try:
                store.resolve(ref)
            except NotFoundError as missing:
                raise NotFoundError(f"stage {key} reads {ref}, which is missing: {missing}") from None


def _last_run(name: str, store: ArtifactStore, backend: str) -> dict[str, StageRun]:
    """The stages of the pipeline's last run in `store` on `backend`, by key (none before its first there)."""
    try:
        last = PipelineRun.load(name, store.uri)
    except NotFoundError:
        return {}
    return {stage.key: stage for stage in last.stages} if last.backend == backend else {}


@dataclass(frozen=True)
class _Submitter:
    """Where and how a pipeline's stages are sent."""

    store: ArtifactStore
    backend: Backend
    options: dict[str, Any]
    image: str | None
    job_id: str | None
    """the pipeline's own job, which names its stages' jobs"""
    specs: Path
    """where the stages' spec files are written"""
    env: dict[str, str]
    """what the pipeline adds to each stage job's environment"""

    def submit(self, key: str, spec: StageSpec, stage_id: str | None) -> str:
        spec_file = self.specs / f"{key.replace(':', '-')}.yaml"
        spec_text = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
        spec_file.write_text(spec_text)
        job = prepare(spec.stage, spec, spec_file, self.store, self.backend.name, self.image, stage_id)
        job.env.update(self.env)
        submit(self.backend, self.options, job, spec_text, self.store, source=f"stage {key}")
        return job.job_id


@dataclass
class _Stages:
    """One run of a pipeline's stages. This thread pins, skips and submits them in the DAG's order; a thread per
    stage job follows it (`Reporter.follow`) while others run. After a failure no stage starts, the ones running
    are followed to their end (what they publish, a rerun skips), then the first failure is raised."""

    run: PipelineRun
    to: _Submitter
    reporter: Reporter
    force: bool
    earlier: dict[str, StageRun]
    saving: threading.Lock = field(default_factory=threading.Lock)

    def run_all(self, stages: list[tuple[str, StageSpec]], needs: dict[str, set[str]], parallelism: int) -> None:
        records = {record.key: record for record in self.run.stages}
        waiting = dict(stages)  # in the DAG's order: a stage comes after those it needs
        ended: queue.Queue[tuple[str, Exception | None]] = queue.Queue()
        running: set[str] = set()
        published: set[str] = set()
        failures: list[Exception] = []
        while True:
            while not failures and len(running) < parallelism:
                key = next((k for k in waiting if needs[k] <= published), None)
                if key is None:
                    break
                try:
                    started = self._start(key, waiting.pop(key), records[key])
                except Exception as error:  # a submission that failed: the running stages still end
                    records[key].state, records[key].message = "failed", f"not submitted: {error}"
                    self.save()
                    failures.append(error)
                    break
                if started is None:
                    published.add(key)
                    continue
                running.add(key)
                follow = functools.partial(self._follow, key, records[key], *started, ended)
                threading.Thread(target=follow, name=f"vlkd-stage-{key}", daemon=True).start()
            if not running:
                break
            key, error = _next(ended)
            running.discard(key)
            if error is None:
                published.add(key)
            else:
                failures.append(error)
        if failures:
            raise failures[0]

    def save(self) -> None:
        """Write the run's record: one writer at a time, so the last write has the latest state of every stage."""
        with self.saving:
            self.run.save(self.to.store)

    def _start(self, key: str, spec: StageSpec, record: StageRun) -> tuple[StageSpec, dict[str, Any]] | None:
        """Skip the stage (None) if its outputs exist for this pinned spec; else submit its job, or find the one
        still running for this pinned spec (the stage job of this pipeline job's interrupted attempt, or the job the
        earlier run recorded): its pinned spec, and how the backend finds its job. Outputs that this pipeline job's
        own stage job published (it finished while an earlier attempt's driver was down) are that job's success,
        not a skip, forced or not."""
        store, backend = self.to.store, self.to.backend
        pinned = pin_spec(spec, store, key)
        stage_id = stage_job_id(self.to.job_id, key) if self.to.job_id else None
        existing = outputs_of(pinned, store)
        if existing is not None and (ended := published_before(existing, stage_id, self.force)):
            record.state, record.message = ended
            record.job_id = stage_id if record.state == "succeeded" else None
            record.outputs = [str(m.ref) for m in existing]
            self.save()
            self.reporter.done(record)
            return None
        record.state, record.spec_sha256, record.message = "running", _sha256(pinned), ""
        earlier = self.earlier.get(key)
        if earlier is not None and earlier.state == "running" and earlier.spec_sha256 == record.spec_sha256:
            stage_id = stage_id or earlier.job_id
        record.job_id = stage_id
        if stage_id and _still_running(backend, stage_id):
            record.message = "followed: its job was still running"
        else:
            record.job_id = self.to.submit(key, pinned, stage_id if self.to.job_id else None)
        self.save()
        return pinned, _record(record.job_id)

    def _follow(
        self,
        key: str,
        record: StageRun,
        pinned: StageSpec,
        job: dict[str, Any],
        ended: queue.Queue[tuple[str, Exception | None]],
    ) -> None:
        """Follow the stage's job to its end and record how it ended; say so on `ended`."""
        try:
            final = self.reporter.follow(record, self.to.backend, job)
            if final != JobState.SUCCEEDED:
                record.state, record.message = "failed", f"{final.value}: see `vlkd logs {record.job_id}`"
                self.save()
                self.reporter.done(record)
                raise VlkdError(
                    f"pipeline {self.run.name}: stage {key} {final.value.lower()} (job {record.job_id}); "
                    f"see `vlkd logs {record.job_id}`"
                )
            record.state = "succeeded"
            record.outputs = [str(m.ref) for m in outputs_of(pinned, self.to.store) or []]
            self.save()
            self.reporter.done(record)
        except Exception as error:
            ended.put((key, error))
        else:
            ended.put((key, None))


def _next(ended: queue.Queue[tuple[str, Exception | None]]) -> tuple[str, Exception | None]:
    """The next stage to end, waiting in short slices so that Ctrl-C reaches this thread at once."""
    while True:
        try:
            return ended.get(timeout=1.0)
        except queue.Empty:
            continue


def _sha256(spec: StageSpec) -> str:
    return hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def published_before(outputs: list[Manifest], stage_id: str | None, force: bool) -> tuple[str, str] | None:
    """The state and message of a stage whose outputs exist for its pinned spec; None to run it (forced)."""
    if stage_id and all(m.job_id == stage_id for m in outputs):
        return "succeeded", "its job published before this attempt of the pipeline"
    return None if force else ("skipped", "already published for this spec and these inputs")


def _still_running(backend: Backend, job_id: str) -> bool:
    """Whether the backend runs this job now (a retried pipeline finds its interrupted stage's job alive)."""
    try:
        return not backend.status(job_id, _record(job_id)).state.finished
    except VlkdError:
        return False  # the backend does not know it


def _record(job_id: str) -> dict[str, Any]:
    """How the backend finds the job, as this machine remembers its submission; a job another process submitted
    (an earlier attempt of a pipeline job, on another pod) is found by its id alone."""
    try:
        return recall(job_id)["record"]
    except NotFoundError:
        return {}


def with_job_states(run: PipelineRun) -> PipelineRun:
    """The run with each stage it recorded as running in the state its job is in now: a stage job runs on when its
    pipeline's driver is interrupted, and may since have ended (cancelled, failed, or succeeded) unrecorded. A
    stage whose job neither this machine nor the store can say more of stays as recorded."""
    for stage in run.stages:
        if stage.state != "running" or not stage.job_id:
            continue
        try:
            current = job_status(stage.job_id, run.store)
        except VlkdError:
            continue
        if current.state == JobState.SUCCEEDED:
            stage.state, stage.message = "succeeded", "its job ended after the pipeline stopped following it"
        elif current.state.finished:
            stage.state, stage.message = "failed", f"{current.state.value}: {current.message}".rstrip(": ")
    return run


def wait_until_finished(backend: Backend, job_id: str, record: dict[str, Any], poll: float = 1.0) -> JobState:
    while not (status := backend.status(job_id, record)).state.finished:
        time.sleep(poll)
    return status.state
