"""The `k8s` backend: each job is a KubeRay `RayJob` that brings up its own RayCluster (rendered by
`vlkd.backends.k8s_render`, whose docstring states the choices), sent with the official `kubernetes` client under the
user's kubeconfig context.

- `status` reads the RayJob; while it is pending, or once it did not start in time, what its pods and events say
  (`k8s_pending`), and for a job queued through Kueue, its Workload (`kueue`).
- `submit` turns the API server's refusals into one line each, an admission webhook's (Kueue's) included
  (`k8s_errors`).
- `cancel` deletes the RayJob: KubeRay's finalizer stops the Ray job, garbage collection removes the RayCluster and
  the submitter Job, and the name becomes free, so submitting the same job id again resumes from its checkpoints.
  Suspending (`spec.suspend`) would keep the name taken.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import yaml

from vlkd.backends import kueue
from vlkd.backends.base import JobDescription, JobState, JobStatus
from vlkd.backends.k8s_errors import api_error
from vlkd.backends.k8s_pending import did_not_start, explain_pending
from vlkd.backends.k8s_render import (
    GROUP,
    HEAD_CONTAINER,
    JOB_ID_ANNOTATION,
    JOB_ID_LABEL,
    MANAGED_BY_LABEL,
    PLURAL,
    STAGE_LABEL,
    VERSION,
    render_rayjob,
)
from vlkd.errors import NotFoundError, VlkdError

SUBMITTER_CONTAINER = "ray-job-submitter"  # the container of KubeRay's default submitter pod
_TIMEOUT = (10, 60)  # seconds to connect, to read


# KubeRay's deployment states (`JobDeploymentStatus`, ray-operator/apis/ray/v1/rayjob_types.go, the same from v1.5.1 to
# v1.7.0), in words for a user while the Ray job itself has no say. "Waiting" is InteractiveMode's, which vlkd never
# renders; a state not listed here (a KubeRay newer than this vlkd) counts as pending and is named as it is.
_DEPLOYMENT_DETAILS = {
    "New": "waiting for the KubeRay operator",
    "Initializing": "RayCluster starting",
    "Waiting": "waiting for a Ray job to be submitted to it",
    "Retrying": "starting a new RayCluster after a failure (backoffLimit)",
    "Suspending": "releasing the RayCluster",
    "Suspended": "the RayCluster is released",
    "ValidationFailed": "KubeRay refused the RayJob",
}
# KubeRay re-validates a RayJob on every reconcile and has no way out of ValidationFailed (rayjob_controller.go
# v1.6.2 and v1.7.0, Reconcile: validateRayJob, then no case of the switch handles the state): it never runs.
_REFUSED = "ValidationFailed"
_REFUSED_HINT = (
    "KubeRay never runs a RayJob it refused: `vlkd render` shows what was sent; cancel the job to free its name"
)


def rayjob_status(rayjob: dict[str, Any]) -> JobStatus:
    """A RayJob's `status.jobDeploymentStatus` (KubeRay's lifecycle) and `status.jobStatus` (the Ray job's own),
    read as one job state with a message such as "Initializing: RayCluster starting". A queued RayJob that Kueue
    holds suspended is pending, not stopped; one KubeRay refused (ValidationFailed) has failed."""
    metadata, status = rayjob.get("metadata") or {}, rayjob.get("status") or {}
    deployment = status.get("jobDeploymentStatus") or "New"
    ray_state = status.get("jobStatus") or ""
    queue, detail, why = kueue.queue_name(rayjob), None, []
    if metadata.get("deletionTimestamp"):
        state, deployment = JobState.STOPPED, "Deleting"
    elif deployment == "Complete":
        state = {"SUCCEEDED": JobState.SUCCEEDED, "STOPPED": JobState.STOPPED}.get(ray_state, JobState.FAILED)
    elif deployment in ("Failed", _REFUSED):
        state = JobState.FAILED
    elif deployment in ("New", "Suspending", "Suspended") and queue:
        state, detail = JobState.PENDING, f"waiting for Kueue (LocalQueue {queue})"
    elif deployment in ("Suspending", "Suspended"):
        state = JobState.STOPPED
    elif deployment == "Running" and ray_state not in ("", "PENDING"):
        state = JobState.RUNNING  # a finished Ray job stays Running until KubeRay has seen its submitter end
    else:  # New, Initializing, Waiting, Retrying, Running before the Ray job runs, and states newer than this vlkd
        state = JobState.PENDING
    if detail is None:
        detail = _DEPLOYMENT_DETAILS.get(deployment, f"Ray job {ray_state}" if ray_state else "Ray job not submitted")
    parts = [deployment, detail, status.get("reason"), status.get("message")]
    if did_not_start(rayjob):
        parts = [deployment, _not_started(rayjob, deployment)]
    elif deployment == _REFUSED:
        parts = [deployment, detail, status.get("message")]  # its reason repeats the state
        why = [_REFUSED_HINT]
    annotations, labels = metadata.get("annotations") or {}, metadata.get("labels") or {}
    return JobStatus(
        job_id=annotations.get(JOB_ID_ANNOTATION) or metadata.get("name", ""),
        state=state,
        message=": ".join(p for p in parts if p),
        stage=labels.get(STAGE_LABEL, ""),
        backend="k8s",
        why_pending=why,
    )


def _not_started(rayjob: dict[str, Any], deployment: str) -> str:
    """That the job's cluster did not start in time (`did_not_start`), which attempt, and whether KubeRay tries
    again; the deadline is the RayJob's (KubeRay sets this reason only when it has one), from
    `kubernetes.start_deadline_seconds`."""
    spec, status = rayjob.get("spec") or {}, rayjob.get("status") or {}
    told = f"did not start within {spec.get('preRunningDeadlineSeconds')} s (kubernetes.start_deadline_seconds)"
    attempts = (spec.get("backoffLimit") or 0) + 1
    if attempts > 1:
        told = f"attempt {status.get('failed') or 1} of {attempts} {told}"
    if deployment == "Retrying":
        told += "; KubeRay tries again on a new RayCluster (kubernetes.backoff_limit)"
    return told


class KubernetesBackend:
    """Runs jobs as RayJobs under a kubeconfig context (default: the current one). The namespace is the one given
    here, else the spec's `kubernetes.namespace`, else the context's, else `default`."""

    name = "k8s"

    def __init__(self, context: str | None = None, namespace: str | None = None) -> None:
        self.context = context
        self.namespace = namespace
        self._clients: dict[str, Any] = {}

    # The dry run and what it sends.

    def render(self, job: JobDescription) -> str:
        return yaml.safe_dump(self._rayjob(job), sort_keys=False, width=math.inf)

    def submit(self, job: JobDescription) -> dict[str, Any]:
        context = self._context()[0]
        body = self._rayjob(job)
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        with self._errors(context, "create", namespace, name):
            # Strict: a field the CRD does not know is an error, not silently dropped.
            self._custom(context).create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict", _request_timeout=_TIMEOUT
            )
        return {"namespace": namespace, "name": name, "context": context}

    def _rayjob(self, job: JobDescription) -> dict[str, Any]:
        namespace = self.namespace or job.spec.kubernetes.namespace
        if namespace is None:
            try:
                namespace = self._context()[1]
            except VlkdError as exc:
                raise VlkdError(f"{exc} (or give the namespace: --namespace, or kubernetes.namespace)") from None
        return render_rayjob(job, namespace)

    # Following a submitted job.

    def status(self, job_id: str, record: dict[str, Any]) -> JobStatus:
        context, namespace, name = record["context"], record["namespace"], record["name"]
        try:
            with self._errors(context, "get", namespace, name):
                rayjob = self._custom(context).get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _request_timeout=_TIMEOUT
                )
        except NotFoundError:
            message = f"RayJob {namespace}/{name} no longer exists (cancelled or deleted)"
            return JobStatus(job_id, JobState.STOPPED, message, backend=self.name)
        current = rayjob_status(rayjob)
        if kueue.is_queued(rayjob) and not current.state.finished:
            current = self._queue_status(context, namespace, rayjob, current)
        waits = current.state == JobState.PENDING and not (rayjob.get("spec") or {}).get("suspend")
        if waits or did_not_start(rayjob):
            pods_say = self._why_pending(context, namespace, rayjob)  # a suspended job has no pods to ask
            current = replace(current, why_pending=[*current.why_pending, *pods_say])
        return current

    def _queue_status(self, context: str, namespace: str, rayjob: dict[str, Any], current: JobStatus) -> JobStatus:
        """The status refined by the job's Kueue Workload (`kueue.queue_status`). Reading it is extra to the
        status, so a refusal becomes a line, never an error."""
        try:
            workload, cluster_queue = self._workload(context, namespace, rayjob)
        except VlkdError as exc:
            return replace(current, why_pending=[f"its Kueue Workload could not be read: {exc}"])
        return kueue.queue_status(current, rayjob, workload, cluster_queue)

    def _workload(self, context: str, namespace: str, rayjob: dict[str, Any]) -> tuple[dict | None, str | None]:
        """The job's newest Workload, found by the label Kueue gives it, in the first version Kueue serves; and the
        ClusterQueue behind the job's LocalQueue while no ClusterQueue has admitted it."""
        selector = f"{kueue.JOB_UID_LABEL}={rayjob['metadata'].get('uid', '')}"
        for version in kueue.VERSIONS:
            try:
                with self._errors(context, "list", namespace, resource="workloads"):
                    found = self._custom(context).list_namespaced_custom_object(
                        kueue.GROUP, version, namespace, "workloads", label_selector=selector, _request_timeout=_TIMEOUT
                    )
            except NotFoundError:  # this version is not served
                continue
            items = found.get("items") or []
            workload = max(items, key=lambda w: w["metadata"].get("creationTimestamp", "")) if items else None
            queue = kueue.queue_name(rayjob) or ((workload or {}).get("spec") or {}).get("queueName")
            cluster_queue = kueue.cluster_queue_of(workload) if workload else None
            if cluster_queue is None and queue:
                cluster_queue = self._cluster_queue(context, namespace, version, queue)
            return workload, cluster_queue
        raise VlkdError(
            f"Kueue is not installed (no workloads.{kueue.GROUP}), so nothing will start a queued job: install Kueue "
            f"({kueue.SUPPORTED_KUEUE} or later), or cancel and submit without kubernetes.queue"
        )

    def _cluster_queue(self, context: str, namespace: str, version: str, queue: str) -> str | None:
        """The ClusterQueue a LocalQueue points to; None if it cannot be read (the Workload then says why)."""
        try:
            with self._errors(context, "get", namespace, queue, resource="localqueues"):
                local = self._custom(context).get_namespaced_custom_object(
                    kueue.GROUP, version, namespace, "localqueues", queue, _request_timeout=_TIMEOUT
                )
        except VlkdError:
            return None
        return (local.get("spec") or {}).get("clusterQueue")

    def _why_pending(self, context: str, namespace: str, rayjob: dict[str, Any]) -> list[str]:
        """What the job's pods and the namespace's Warning events say (see `explain_pending`), also of a job that
        did not start in time. Reading them is extra to the status, so a refusal (e.g. no right to list events)
        becomes a line, never an error."""
        name, core = rayjob["metadata"]["name"], self._core(context)
        # The RayCluster's pods carry the job's label (render_rayjob); the submitter Job's carry the Job's name.
        selectors = (f"{JOB_ID_LABEL}={name}", f"batch.kubernetes.io/job-name={name}")
        pods: list[dict[str, Any]] = []
        try:
            for selector in selectors:
                pods += self._list_json(context, namespace, "pods", core.list_namespaced_pod, label_selector=selector)
            events = self._list_json(
                context, namespace, "events", core.list_namespaced_event, field_selector="type=Warning"
            )
        except (VlkdError, ValueError) as exc:
            return [f"why it {'did not start' if did_not_start(rayjob) else 'is pending'} could not be read: {exc}"]
        return explain_pending(rayjob, pods, events)

    def _list_json(
        self, context: str, namespace: str, resource: str, list_call: Any, **selector: str
    ) -> list[dict[str, Any]]:
        """The items of a list call as the API server sent them (camelCase JSON), not as the client's models."""
        with self._errors(context, "list", namespace, resource=resource):
            response = list_call(namespace, **selector, _preload_content=False, _request_timeout=_TIMEOUT)
            try:
                return json.loads(response.data).get("items") or []
            finally:
                response.release_conn()

    def logs(self, job_id: str, record: dict[str, Any], follow: bool = False) -> Iterator[str]:
        """The submitter pod's log (the driver's output), else the head pod's while the submitter is not up."""
        context, namespace, name = record["context"], record["namespace"], record["name"]
        pod, container = self._log_source(context, namespace, name)
        with self._errors(context, "get", namespace, pod, resource="pods/log"):
            response = self._core(context).read_namespaced_pod_log(
                pod, namespace, container=container, follow=follow, _preload_content=False,
                _request_timeout=None if follow else _TIMEOUT,  # a followed log may stay quiet for hours
            )  # fmt: skip
            try:
                yield from _lines(response.stream(64 * 1024))
            finally:
                response.release_conn()

    def _log_source(self, context: str, namespace: str, name: str) -> tuple[str, str]:
        # Kubernetes labels a Job's pods with the Job's name, and KubeRay names the submitter Job after the RayJob.
        for selector, container in (
            (f"batch.kubernetes.io/job-name={name}", SUBMITTER_CONTAINER),
            (f"{JOB_ID_LABEL}={name},ray.io/node-type=head", HEAD_CONTAINER),
        ):
            with self._errors(context, "list", namespace, resource="pods"):
                pods = (
                    self._core(context)
                    .list_namespaced_pod(namespace, label_selector=selector, _request_timeout=_TIMEOUT)
                    .items
                )
            if pods:
                return max(pods, key=lambda p: p.metadata.creation_timestamp).metadata.name, container
        raise VlkdError(
            f"RayJob {namespace}/{name} has no submitter or head pod yet (KubeRay creates them as the RayCluster "
            "starts): see its status, and try again"
        )

    def cancel(self, job_id: str, record: dict[str, Any]) -> None:
        """Delete the RayJob (see the module's docstring); a RayJob already gone counts as cancelled."""
        context, namespace, name = record["context"], record["namespace"], record["name"]
        try:
            with self._errors(context, "delete", namespace, name):
                self._custom(context).delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background",
                    _request_timeout=_TIMEOUT,
                )  # fmt: skip
        except NotFoundError:
            pass

    def list(self) -> list[JobStatus]:
        """The vlkd RayJobs in the namespace (this backend's, else the context's)."""
        context, context_namespace = self._context()
        namespace = self.namespace or context_namespace
        with self._errors(context, "list", namespace):
            found = self._custom(context).list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, label_selector=f"{MANAGED_BY_LABEL}=vlkd", _request_timeout=_TIMEOUT
            )
        return [rayjob_status(item) for item in found.get("items", [])]

    # The kubeconfig and the API client, loaded on first use.

    def _context(self) -> tuple[str, str]:
        """The context to use, checked against the kubeconfig, and its namespace."""
        from kubernetes import config

        path = os.environ.get("KUBECONFIG") or "~/.kube/config"
        try:
            contexts, current = config.list_kube_config_contexts(config_file=path)
        except config.ConfigException as exc:
            raise VlkdError(
                f"no usable kubeconfig at {path} ({exc}): set KUBECONFIG, or log in to your cluster first "
                "(e.g. `aws eks update-kubeconfig`, `gcloud container clusters get-credentials`, `kind create cluster`)"
            ) from None
        wanted = self.context or (current or {}).get("name")
        for context in contexts:
            if context["name"] == wanted:
                return wanted, context.get("context", {}).get("namespace") or "default"
        available = ", ".join(c["name"] for c in contexts) or "none"
        if wanted is None:
            raise VlkdError(f"the kubeconfig at {path} has no current context: pick one with --context ({available})")
        raise VlkdError(f"unknown kubeconfig context {wanted!r}; available: {available}")

    def _api_client(self, context: str) -> Any:
        if context not in self._clients:
            from kubernetes import config

            path = os.environ.get("KUBECONFIG") or "~/.kube/config"
            try:
                self._clients[context] = config.new_client_from_config(
                    config_file=path, context=context, persist_config=False
                )
            except config.ConfigException as exc:
                raise VlkdError(f"kubeconfig context {context!r} cannot be used: {exc}") from None
        return self._clients[context]

    def _custom(self, context: str) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self._api_client(context))

    def _core(self, context: str) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self._api_client(context))

    @contextmanager
    def _errors(
        self, context: str, verb: str, namespace: str, name: str | None = None, resource: str = PLURAL
    ) -> Iterator[None]:
        """Turn the client's exceptions into one-line errors that say what to do."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            yield
        except ApiException as exc:
            raise api_error(exc, verb, resource, namespace, name) from None
        except HTTPError as exc:
            host = self._api_client(context).configuration.host
            reason = re.sub(r"^\w+Connection\([^)]*\): ", "", str(getattr(exc, "reason", None) or exc))
            raise VlkdError(
                f"cannot reach the Kubernetes API server at {host} (context {context!r}): {reason}; "
                "check that the cluster is up and reachable from here (VPN, kubeconfig server address)"
            ) from None


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """Lines with their newline, as the other backends give them; decoded whole, so no character is cut."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield (line + b"\n").decode(errors="replace")
    if pending:
        yield pending.decode(errors="replace")
