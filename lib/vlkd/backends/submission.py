"""Turning a validated spec into a job on a backend, and finding a submitted job again by its id."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vlkd import __version__
from vlkd.artifacts import ArtifactStore
from vlkd.backends import get_backend
from vlkd.backends.base import Backend, JobDescription
from vlkd.errors import VlkdError
from vlkd.jobstate import recall, remember
from vlkd.runtime import new_job_id
from vlkd.specs import StageSpec

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
    env = {} if backend == "k8s" else {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    return JobDescription(
        job_id, stage, spec, spec_uri, store.uri, image or spec.kubernetes.image or DEFAULT_IMAGE, env
    )


def submit(
    backend: Backend, options: dict[str, Any], job: JobDescription, spec_text: str, store: ArtifactStore
) -> None:
    """Upload the spec (remote backends), send the job, and remember where it went."""
    if job.spec_uri.startswith(store.uri + "/"):
        store.storage.write_bytes(job.spec_uri[len(store.uri) + 1 :], spec_text.encode())
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
