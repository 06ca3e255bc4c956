"""Turning a validated spec into a job on a backend, and finding a submitted job again by its id."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from vlkd import __version__
from vlkd.artifacts import ArtifactStore
from vlkd.backends import get_backend
from vlkd.backends.base import Backend, JobDescription, JobState, JobStatus
from vlkd.backends.reconcile import of_this_attempt, reconcile
from vlkd.errors import NotFoundError, VlkdError
from vlkd.joblog import ENDED, has_log, read_log, read_state, worker_lines
from vlkd.jobstate import recall, remember
from vlkd.runtime import new_job_id
from vlkd.specs import StageSpec
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
    job_id = job_id or new_job_id(stage)
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
    backend: Backend, options: dict[str, Any], job: JobDescription, spec_text: str, store: ArtifactStore
) -> None:
    """Upload the spec (remote backends), send the job, and remember where it went."""
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
    or that its driver stopped beating while the backend still says it runs."""
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
    if backend is None:
        return _from_record(job_id, recorded, "this machine did not submit it")
    try:
        current = backend.status(job_id, entry["record"])
    except VlkdError as exc:
        if recorded is None or recorded["state"] != ENDED:
            raise
        return _from_record(job_id, recorded, f"{backend.name} backend: {exc}")
    return reconcile(current, recorded, now)


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
    return worker_lines(lines, worker) if worker is not None else lines


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
