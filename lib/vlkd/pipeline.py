"""Running a `PipelineSpec`: data -> teacher -> students -> eval, each stage a job on a backend.

Before a stage is submitted its input refs are pinned to the versions that exist now (`features/x` ->
`features/x:v3`), so the lineage records exactly what it consumed; a stage whose output already exists for the
very same pinned spec is skipped (the skip rule), unless forced. Progress is kept in a small state file, so
`vlkd pipeline status` can show the DAG while it runs and after.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import yaml

from vlkd.artifacts import ArtifactStore, Manifest
from vlkd.backends.base import Backend, JobState
from vlkd.backends.submission import prepare, submit
from vlkd.errors import NotFoundError, RefError, VlkdError
from vlkd.jobstate import vlkd_home
from vlkd.refs import KINDS, ArtifactRef
from vlkd.specs import PipelineSpec, StageSpec, parse_spec


@dataclass
class StageRun:
    key: str
    stage: str
    state: str = "pending"
    """pending, running, skipped, succeeded, failed"""
    job_id: str | None = None
    outputs: list[str] = field(default_factory=list)
    message: str = ""


@dataclass
class PipelineRun:
    name: str
    store: str
    backend: str
    started_at: str
    stages: list[StageRun]

    @property
    def path(self) -> Path:
        return vlkd_home() / "pipelines" / f"{self.name}.json"

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(self.path)

    @classmethod
    def load(cls, name: str) -> PipelineRun:
        path = vlkd_home() / "pipelines" / f"{name}.json"
        if not path.is_file():
            raise NotFoundError(f"no run of pipeline {name!r} from this machine; start one with `vlkd pipeline run`")
        data = json.loads(path.read_text())
        return cls(**{**data, "stages": [StageRun(**s) for s in data["stages"]]})


def pin_refs(value: Any, store: ArtifactStore) -> Any:
    """Every artifact ref in a spec's data, pinned to the version it names now."""
    if isinstance(value, dict):
        return {k: pin_refs(v, store) for k, v in value.items()}
    if isinstance(value, list):
        return [pin_refs(v, store) for v in value]
    if isinstance(value, str) and "/" in value and value.split("/", 1)[0] in KINDS:
        try:
            return str(store.resolve(ArtifactRef.parse(value)))
        except RefError:
            return value
    return value


def outputs_of(spec: StageSpec, store: ArtifactStore) -> list[Manifest] | None:
    """The artifacts this exact spec already published (the latest version of each output), or None."""
    wanted = spec.model_dump(mode="json")
    found = []
    for kind in type(spec).outputs:
        try:
            manifest = store.manifest(ArtifactRef(kind, spec.name))
        except NotFoundError:
            return None
        if manifest.spec != wanted:
            return None
        found.append(manifest)
    return found


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
) -> PipelineRun:
    stages = pipeline.stages()
    run = PipelineRun(
        pipeline.name,
        store.uri,
        backend.name,
        datetime.now(timezone.utc).isoformat(),
        [StageRun(key, spec.stage) for key, spec in stages],
    )
    run.save()
    for (key, spec), record in zip(stages, run.stages, strict=True):
        pinned = parse_spec(pin_refs(spec.model_dump(mode="json"), store), spec.stage, key)
        existing = None if force else outputs_of(pinned, store)
        if existing is not None:
            record.state, record.outputs = "skipped", [str(m.ref) for m in existing]
            record.message = "already published for this spec and these inputs"
            run.save()
            reporter.done(record)
            continue
        with tempfile.TemporaryDirectory(prefix="vlkd-pipeline-") as tmp:
            spec_file = Path(tmp) / f"{key.replace(':', '-')}.yaml"
            spec_text = yaml.safe_dump(pinned.model_dump(mode="json"), sort_keys=False)
            spec_file.write_text(spec_text)
            job = prepare(spec.stage, pinned, spec_file, store, backend.name, image, None)
            submit(backend, options, job, spec_text, store)
            record.state, record.job_id = "running", job.job_id
            run.save()
            final = reporter.follow(record, backend, _recall(job.job_id))
        if final != JobState.SUCCEEDED:
            record.state, record.message = "failed", f"{final.value}: see `vlkd logs {record.job_id}`"
            run.save()
            reporter.done(record)
            raise VlkdError(
                f"pipeline {pipeline.name}: stage {key} {final.value.lower()} (job {record.job_id}); "
                f"see `vlkd logs {record.job_id}`"
            )
        record.state = "succeeded"
        record.outputs = [str(m.ref) for m in outputs_of(pinned, store) or []]
        run.save()
        reporter.done(record)
    return run


def _recall(job_id: str) -> dict[str, Any]:
    from vlkd.jobstate import recall

    return recall(job_id)["record"]


def wait_until_finished(backend: Backend, job_id: str, record: dict[str, Any], poll: float = 1.0) -> JobState:
    while not (status := backend.status(job_id, record)).state.finished:
        time.sleep(poll)
    return status.state
