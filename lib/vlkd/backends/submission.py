"""Turning a validated spec into a job on a backend, and finding a submitted job again by its id.

Nothing is sent, and nothing uploaded, until everything vlkd can check has passed: the job id is a plain name that
names no other stage's job nor one that still runs (nor, unforced, one that succeeded: a resubmission resumes an
interrupted job), and every artifact the spec reads exists in the store."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from vlkd import __version__
from vlkd.artifacts import ArtifactStore
from vlkd.backends import get_backend
from vlkd.backends.base import Backend, JobDescription, JobState, JobStatus
from vlkd.backends.reconcile import of_this_attempt, reconcile, with_cancel
from vlkd.errors import NotFoundError, VlkdError
from vlkd.joblog import ENDED, has_log, read_log, read_state, worker_lines
from vlkd.jobstate import check_job_id, note_cancel, recall, remember
from vlkd.published import outputs_of, pin_spec
from vlkd.refs import ArtifactRef, spec_ref
from vlkd.runtime import new_job_id
from vlkd.specs import PipelineSpec, StageSpec
from vlkd.storage import Storage

# The image a cluster runs when neither the spec nor --image names one (built from this repository's Dockerfile).
DEFAULT_IMAGE = f"ghcr.io/vlkd/vlkd:{__version__}"
# Non-secret settings a job needs to reach the same store; credentials go by the backend's secret mechanism.
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
SPEC_KEY = "jobs/{job_id}/spec.yaml"


def job_store(spec: StageSpec, store_uri: str | None) -> ArtifactStore:
    if store_uri:
        return ArtifactStore.open(store_uri)
    if spec.storage is not None:
        return ArtifactStore.open(spec.storage.root, spec.storage.endpoint_url, spec.storage.region)
    return ArtifactStore.open()


def prepare_file(
    stage: str, spec_file: Path, store_uri: str | None, backend: str, image: str | None, job_id: str | None
) -> tuple[JobDescription, ArtifactStore]:
    """The job of a spec file and the store it publishes to (`job_store`). The spec is validated here, so an
    invalid one is never submitted."""
    from vlkd.specs import load_spec

    spec = load_spec(spec_file, stage)
    store = job_store(spec, store_uri)
    return prepare(stage, spec, spec_file, store, backend, image, job_id), store


def prepare(
    stage: str,
    spec: StageSpec,
    spec_path: Path,
    store: ArtifactStore,
    backend: str,
    image: str | None,
    job_id: str | None,
) -> JobDescription:
    """The job description; remote backends read the spec from the store, where `submit` uploads it."""
    job_id = check_job_id(job_id) if job_id else new_job_id(stage)
    if backend == "local":
        spec_uri = str(spec_path.resolve())
    else:
        spec_uri = f"{store.uri}/{SPEC_KEY.format(job_id=job_id)}"
        if backend == "k8s" and not store.uri.startswith("s3://"):
            raise VlkdError(
                f"a Kubernetes job cannot read the store {store.uri}: use an s3:// store (--store or VLKD_STORE)"
            )
    # A Kubernetes job gets its endpoint from the cluster's own config (k8s/: ConfigMap vlkd-store); a laptop's
    # endpoint (often a port-forward on localhost) would be wrong inside the cluster.
    forwarded = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    env = _bucket_region(store) if backend == "k8s" else forwarded
    return JobDescription(
        job_id, stage, spec, spec_uri, store.uri, image or spec.kubernetes.image or DEFAULT_IMAGE, env
    )


def _bucket_region(store: ArtifactStore) -> dict[str, str]:
    """AWS_REGION for the pods of a Kubernetes job: the bucket's region, which no pod's environment names (pyarrow,
    which Ray Train checkpoints through, would assume us-east-1, and SDKs use it for their regional endpoints). A
    store this machine cannot reach leaves it to the pods, whose stores ask the bucket themselves."""
    try:
        return {"AWS_REGION": store.storage.bucket_region()}
    except VlkdError:
        return {}


def upload_spec(job: JobDescription, spec_text: str, store: ArtifactStore) -> bool:
    """Put the validated spec where a remote job reads it (`jobs/<job id>/spec.yaml` in the store); False for a
    job that reads its spec file where it is (the local backend)."""
    if not job.spec_uri.startswith(store.uri + "/"):
        return False
    store.storage.write_bytes(job.spec_uri[len(store.uri) + 1 :], spec_text.encode())
    return True


def submit(
    backend: Backend,
    options: dict[str, Any],
    job: JobDescription,
    spec_text: str,
    store: ArtifactStore,
    *,
    source: str = "the spec",
    unless_published: bool = False,
) -> None:
    """Check the spec's inputs (`check_inputs`; `source` names the spec in what it says) and, `unless_published`,
    that its outputs do not stand already (`AlreadyPublished`), then upload the spec (remote backends), send the
    job, and remember where it went."""
    check_inputs(job.spec, store, source)
    if unless_published:
        _refuse_published(job.spec, store, source)
    upload_spec(job, spec_text, store)
    record = backend.submit(job)
    remember(
        job.job_id,
        {
            "backend": backend.name,
            "options": options,
            "record": record,
            "stage": job.stage,
            "spec_uri": job.spec_uri,
            "store": job.store_uri,
        },
    )


class NothingToRun(VlkdError):
    """What `submit` would run is done already: `job_id` names the job whose outputs stand. Not an error to the
    user, who is told so and gets that job's id, as a submission would give its own."""

    def __init__(self, message: str, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class AlreadySucceeded(NothingToRun):
    """A job id given again names a job that succeeded: there is nothing to resume, and running it again would
    publish its outputs again."""


class AlreadyPublished(NothingToRun):
    """The spec's outputs are already published for it and for the input versions its refs name now (the skip
    rule, `vlkd.published`)."""


def claim(job_id: str, stage: str, force: bool) -> None:
    """Let a job id this machine submitted before be submitted again (to resume the job it names) only for the
    same stage, once that job has ended, and, if it succeeded, only when `force`d (`AlreadySucceeded`)."""
    try:
        entry = recall(job_id)
    except NotFoundError:
        return  # a new id, or one submitted elsewhere: its backend refuses it if it still runs there
    if entry["stage"] != stage:
        raise VlkdError(f"job {job_id} is a {entry['stage']} job: a {stage} job needs its own id (leave out --job-id)")
    current = job_status(job_id)
    if not current.state.finished or current.state == JobState.LOST:  # a lost job's backend still says it runs
        raise VlkdError(
            f"job {job_id} is {current.state.value}, not ended: follow it with `vlkd logs -f {job_id}`, or stop it "
            f"with `vlkd cancel {job_id}` before resubmitting it"
        )
    if current.state == JobState.SUCCEEDED and not force:
        raise AlreadySucceeded(f"job {job_id} already succeeded: nothing to resume (--force runs it again)", job_id)


def _refuse_published(spec: StageSpec, store: ArtifactStore, source: str) -> None:
    """Refuse (`AlreadyPublished`) a spec whose outputs are already published for it and its inputs as they are
    now: a second job would retrain the same model into new versions, and every stage after it would redo its
    work on them. Its inputs must exist (`check_inputs`)."""
    existing = outputs_of(pin_spec(spec, store, source), store)
    if existing:
        made = " and ".join(str(m.ref) for m in existing)
        raise AlreadyPublished(
            f"{source}: {made} {'is' if len(existing) == 1 else 'are'} already published for this spec and these "
            f"inputs (job {existing[0].job_id}): nothing to run (--force runs it again)",
            existing[0].job_id,
        )


def input_refs(spec: StageSpec) -> list[tuple[str, ArtifactRef]]:
    """(field path, ref) of every artifact a spec reads; of a pipeline, those its own stages do not publish."""
    if isinstance(spec, PipelineSpec):
        stages = dict(spec.stages())
        made = {f"{kind}/{stage.name}" for stage in stages.values() for kind in type(stage).outputs}
        found = [(f"{key}: {path}", ref) for key, stage in stages.items() for path, ref in input_refs(stage)]
        return [(path, ref) for path, ref in found if ref.path not in made]
    return list(_refs_in(spec.model_dump(mode="json"), ""))


def _refs_in(value: Any, path: str) -> Iterator[tuple[str, ArtifactRef]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _refs_in(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _refs_in(item, f"{path}[{i}]")
    elif (ref := spec_ref(value)) is not None:
        yield path, ref


def check_inputs(spec: StageSpec, store: ArtifactStore, source: str) -> None:
    """Refuse a spec that reads an artifact the store lacks, before a job starts for it: one line naming the spec,
    the field and the ref, and the artifact of that kind whose name is close, if one is."""
    for path, ref in input_refs(spec):
        try:
            store.resolve(ref)
        except NotFoundError as exc:
            names = store.names(ref.kind)
            close = difflib.get_close_matches(ref.name, names, n=1) if ref.name not in names else []
            found = f"{ref} has no published version; did you mean {ref.kind}/{close[0]}?" if close else str(exc)
            raise NotFoundError(f"{source}: {path}: {found}") from None


def find(job_id: str) -> tuple[Backend, dict[str, Any]]:
    """The backend a job was submitted to (with the same address/context) and its record."""
    entry = recall(job_id)
    return get_backend(entry["backend"], **entry["options"]), entry["record"]


def _job_storage(entry: dict[str, Any], store_uri: str | None) -> Storage:
    """The store a job records itself in (`vlkd.joblog`)."""
    return ArtifactStore.open(store_uri or entry["store"]).storage


def job_status(job_id: str, store_uri: str | None = None) -> JobStatus:
    """A job's state: the backend's, reconciled with what the job recorded in the store (`reconcile`): that it
    waits for resources (and why), how it ended (also once the backend has forgotten it: cluster deleted, head gone),
    or that its driver stopped beating while the backend still says it runs; STOPPING at once once it was cancelled.
    A failed job says its error, a running one how far it is."""
    entry, backend = _entry(job_id, store_uri)
    now = datetime.now().astimezone()
    try:
        recorded = read_state(_job_storage(entry, store_uri), job_id, now)
    except VlkdError:
        if backend is None:
            raise
        recorded = None  # the store is out of reach from here: the backend's word alone
    if recorded is not None and not of_this_attempt(recorded, entry.get("submitted_at")):
        recorded = None  # an earlier attempt's (the job id was submitted again)
    current = with_cancel(_witnessed(job_id, entry, backend, recorded, now), entry.get("cancel_requested_at"), now)
    if current.state == JobState.FAILED:
        error = recorded.get("error", "") if recorded else _printed_error(job_id, entry, backend)
        return replace(current, error=error)
    if current.state == JobState.RUNNING and recorded is not None:
        return replace(current, progress=recorded.get("progress"))
    return current


def _witnessed(
    job_id: str, entry: dict[str, Any], backend: Backend | None, recorded: dict[str, Any] | None, now: datetime
) -> JobStatus:
    """What the backend and the job's record say together (see `job_status`)."""
    if backend is None:
        return _from_record(job_id, recorded, "this machine did not submit it")
    try:
        current = backend.status(job_id, entry["record"])
    except VlkdError as exc:
        if recorded is None or recorded["state"] != ENDED:
            raise
        return _from_record(job_id, recorded, f"{backend.name} backend: {exc}")
    return reconcile(current, recorded, now)


def _printed_error(job_id: str, entry: dict[str, Any], backend: Backend | None) -> str:
    """The last `error:` line in the log of a job that failed before it could record itself (its spec or its store
    out of reach): a short log, read from the backend."""
    if backend is None:
        return ""
    try:
        lines = list(backend.logs(job_id, entry["record"]))
    except (VlkdError, OSError):
        return ""
    return next((line[len("error: ") :].strip() for line in reversed(lines) if line.startswith("error: ")), "")


def _from_record(job_id: str, recorded: dict[str, Any] | None, why_not_live: str) -> JobStatus:
    if recorded is None or recorded["state"] != ENDED:
        last = f"; it last recorded itself {recorded['state']} at {recorded['stored_at']}" if recorded else ""
        raise NotFoundError(f"job {job_id}: {why_not_live}, and it has not recorded an end in the store{last}")
    code = recorded["exit_code"]
    state = JobState.SUCCEEDED if code == 0 else JobState.FAILED
    message = f"exit code {code} at {recorded['stored_at']} (recorded in the store; {why_not_live})"
    return JobStatus(job_id, state, message)


def job_logs(
    job_id: str, follow: bool = False, worker: int | None = None, store_uri: str | None = None
) -> Iterator[str]:
    """A job's log: from the backend while the job runs, from the store once it has ended (or when the backend
    no longer has it); `worker` keeps one training worker's lines."""
    entry, backend = _entry(job_id, store_uri)
    storage = _job_storage(entry, store_uri)
    try:
        live = backend is not None and not backend.status(job_id, entry["record"]).state.finished
    except VlkdError:
        live = False
    if not live and has_log(storage, job_id):
        lines = read_log(storage, job_id)
    elif backend is not None:
        lines = backend.logs(job_id, entry["record"], follow=follow)
    else:
        raise NotFoundError(f"job {job_id} has no log in {store_uri or entry['store']}")
    return _worker_lines(job_id, lines, worker) if worker is not None else lines


def _worker_lines(job_id: str, lines: Iterator[str], worker: int) -> Iterator[str]:
    """Training worker `worker`'s lines (`worker_lines`); a log that has none of them is an error that says which
    workers the log has."""
    named: set[int] = set()
    found = False
    for line in worker_lines(lines, worker, named):
        found = True
        yield line
    if not found:
        which = f"workers {', '.join(map(str, sorted(named)))}" if named else "no training workers"
        raise NotFoundError(f"job {job_id} has no training worker {worker}: its log names {which}")


def cancel(job_id: str) -> JobStatus | None:
    """Ask a job's backend to stop it, the request recorded first, so that `vlkd status` says STOPPING from then on
    (its driver's exit on SIGTERM alone would read FAILED until the backend notices); None once asked. A job that
    had already ended is left alone: its status is returned."""
    current = job_status(job_id)
    if current.state.finished and current.state != JobState.LOST:  # a lost job's backend may still run it
        return current
    backend, record = find(job_id)
    first = current.state != JobState.STOPPING  # else asked before: ask again, keep when
    if first:
        note_cancel(job_id)
    try:
        backend.cancel(job_id, record)
    except Exception:
        if first:  # the backend did not take it: the job runs on as before
            note_cancel(job_id, asked=False)
        raise
    return None


def _entry(job_id: str, store_uri: str | None) -> tuple[dict[str, Any], Backend | None]:
    """The local record of a job and its backend; with a store given, a job submitted elsewhere is still found
    there (its id is in the manifest of what it published)."""
    try:
        entry = recall(job_id)
    except NotFoundError:
        if store_uri is None:
            raise
        return {"job_id": job_id, "store": store_uri}, None
    return entry, get_backend(entry["backend"], **entry["options"])
