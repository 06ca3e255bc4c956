"""Backends turn one job description into a run: `local` (a Ray on this machine), `ray` (a Ray cluster's Job
Submission API), `k8s` (a KubeRay RayJob). Each renders (the dry run), submits what it rendered, and reports status,
logs and list, and cancels. Backends are loaded by name and import their client libraries lazily."""

from __future__ import annotations

import importlib

from vlkd.backends.base import Backend, JobDescription, JobState, JobStatus
from vlkd.errors import VlkdError

BACKENDS = {
    "local": "vlkd.backends.local:LocalBackend",
    "ray": "vlkd.backends.ray:RayBackend",
    "k8s": "vlkd.backends.k8s:KubernetesBackend",
}


def get_backend(name: str, **options: object) -> Backend:
    if name not in BACKENDS:
        raise VlkdError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)


__all__ = ["BACKENDS", "Backend", "JobDescription", "JobState", "JobStatus", "get_backend"]
