"""The `k8s` backend: each job is a KubeRay `RayJob` that brings up its own RayCluster, sent with the official
`kubernetes` client under the user's kubeconfig context.

Rendering choices, stated once:
- `submissionMode: K8sJobMode` (KubeRay's default): once the cluster is up, KubeRay runs `ray job submit` in a
  Kubernetes Job named after the RayJob. That pod follows the driver's output, so its log is the job's log, and it
  outlives the RayCluster (deleted `ttlSecondsAfterFinished` after the end), so logs stay readable.
- Name: the job id as a DNS-1035 label of at most 47 characters, KubeRay's limit (it appends 6 characters for the
  RayCluster, whose Services must fit in 63). An id that had to change gets a hash suffix, so two ids never collide.
- `num_workers: 0`: no worker group (the CRD makes `workerGroupSpecs` optional). The trainer runs in-process in the
  driver, which runs on the head, so the head gets the worker's GPUs, node selector and tolerations, and the larger
  of the head's and the worker's CPUs and memory.
- Credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY by reference to the Secret `kubernetes.s3_secret`. The
  optional ConfigMap `vlkd-store` (k8s/base) carries cluster-wide settings such as AWS_ENDPOINT_URL; `job.env`
  overrides it.
- `cancel` deletes the RayJob: KubeRay's finalizer stops the Ray job, garbage collection removes the RayCluster and
  the submitter Job, and the name becomes free, so submitting the same job id again resumes from its checkpoints.
  Suspending (`spec.suspend`) would keep the name taken.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml

from vlkd.backends.base import JobDescription, JobState, JobStatus
from vlkd.backends.k8s_pending import explain_pending
from vlkd.errors import NotFoundError, VlkdError
from vlkd.specs import quantity_bytes

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
MANAGED_BY_LABEL, JOB_ID_LABEL, STAGE_LABEL = "app.kubernetes.io/managed-by", "vlkd.io/job-id", "vlkd.io/stage"
JOB_ID_ANNOTATION, SPEC_URI_ANNOTATION, STORE_URI_ANNOTATION = "vlkd.io/job-id", "vlkd.io/spec-uri", "vlkd.io/store-uri"
STORE_CONFIGMAP = "vlkd-store"
S3_CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
GPU_RESOURCE = "nvidia.com/gpu"
HEAD_CONTAINER, WORKER_CONTAINER = "ray-head", "ray-worker"
SUBMITTER_CONTAINER = "ray-job-submitter"  # the container of KubeRay's default submitter pod
MAX_NAME_LENGTH = 47
SUBMITTER_ROLE = "the Role vlkd-submitter (k8s/base/rbac-submitter.yaml)"
INSTALL_KUBERAY = (
    "helm repo add kuberay https://ray-project.github.io/kuberay-helm/ && "
    "helm install kuberay-operator kuberay/kuberay-operator --namespace kuberay-system --create-namespace"
)
_CREDENTIAL_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
_TIMEOUT = (10, 60)  # seconds to connect, to read


def rayjob_name(job_id: str) -> str:
    """The RayJob (and label) name of a job: a DNS-1035 label of at most 47 characters."""
    name = re.sub(r"[^a-z0-9]+", "-", job_id.lower()).strip("-")
    if not name[:1].isalpha():
        name = f"vlkd-{name}".rstrip("-")
    if name == job_id and len(name) <= MAX_NAME_LENGTH:
        return name
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME_LENGTH - 9].rstrip('-')}-{digest}"


def render_rayjob(job: JobDescription, namespace: str) -> dict[str, Any]:
    """The RayJob that runs `job` in `namespace` on a RayCluster of its own, deleted after it finishes."""
    k8s, resources = job.spec.kubernetes, job.spec.resources
    name = rayjob_name(job.job_id)
    labels = {MANAGED_BY_LABEL: "vlkd", JOB_ID_LABEL: name, STAGE_LABEL: job.stage}
    pods = _PodFactory(labels, k8s.image or job.image, _env(job.env, k8s.s3_secret), k8s.service_account)
    cluster: dict[str, Any] = {"headGroupSpec": {"template": pods.head(job)}}
    if resources.num_workers:
        cluster["workerGroupSpecs"] = [
            {
                "groupName": "workers",
                "replicas": resources.num_workers,
                "minReplicas": resources.num_workers,
                "maxReplicas": resources.num_workers,
                "template": pods.worker(job),
            }
        ]
    spec: dict[str, Any] = {
        "entrypoint": job.entrypoint_line,
        "jobId": job.job_id,
        "submissionMode": "K8sJobMode",
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": k8s.ttl_seconds_after_finished,
        "backoffLimit": k8s.backoff_limit,
    }
    if k8s.active_deadline_seconds:
        spec["activeDeadlineSeconds"] = k8s.active_deadline_seconds
    spec["rayClusterSpec"] = cluster
    annotations = {
        JOB_ID_ANNOTATION: job.job_id,
        SPEC_URI_ANNOTATION: job.spec_uri,
        STORE_URI_ANNOTATION: job.store_uri,
    }
    metadata = {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RayJob", "metadata": metadata, "spec": spec}


def _env(env: dict[str, str], secret: str) -> list[dict[str, Any]]:
    leaked = [key for key in env if _CREDENTIAL_NAME.search(key)]
    if leaked:
        raise VlkdError(
            f"job environment {', '.join(leaked)}: credentials never travel inline; the k8s backend reads "
            f"{' and '.join(S3_CREDENTIAL_KEYS)} from the Secret {secret!r} (kubernetes.s3_secret)"
        )
    plain = [{"name": key, "value": value} for key, value in env.items()]
    return plain + [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} for key in S3_CREDENTIAL_KEYS
    ]


def _cpu(cpus: float) -> str:
    return str(int(cpus)) if cpus == int(cpus) else f"{round(cpus * 1000)}m"


class _PodFactory:
    """Head and worker pod templates that share labels, image, environment and service account."""

    def __init__(self, labels: dict[str, str], image: str, env: list[dict[str, Any]], service_account: str) -> None:
        self.labels, self.image, self.env, self.service_account = labels, image, env, service_account

    def head(self, job: JobDescription) -> dict[str, Any]:
        k8s, resources = job.spec.kubernetes, job.spec.resources
        if resources.num_workers:
            return self._template(HEAD_CONTAINER, k8s.head_cpus, k8s.head_memory, 0)
        memory = k8s.head_memory
        if resources.memory and quantity_bytes(resources.memory) > quantity_bytes(memory):
            memory = resources.memory
        cpus = max(k8s.head_cpus, resources.cpus_per_worker)
        return self._template(HEAD_CONTAINER, cpus, memory, resources.gpus_per_worker, resources)

    def worker(self, job: JobDescription) -> dict[str, Any]:
        r = job.spec.resources
        return self._template(WORKER_CONTAINER, r.cpus_per_worker, r.memory, r.gpus_per_worker, r)

    def _template(self, name: str, cpus: float, memory: str | None, gpus: float, placement: Any = None) -> dict:
        amounts: dict[str, Any] = {"cpu": _cpu(cpus)}
        if memory:
            amounts["memory"] = memory
        limits = {**amounts, GPU_RESOURCE: math.ceil(gpus)} if gpus > 0 else dict(amounts)
        container = {
            "name": name,
            "image": self.image,
            "env": copy.deepcopy(self.env),  # one copy per container: no YAML anchors in what we render
            "envFrom": [{"configMapRef": {"name": STORE_CONFIGMAP, "optional": True}}],
            "resources": {"requests": amounts, "limits": limits},
        }
        spec: dict[str, Any] = {"serviceAccountName": self.service_account, "containers": [container]}
        if placement is not None and placement.node_selector:
            spec["nodeSelector"] = dict(placement.node_selector)
        if placement is not None and placement.tolerations:
            spec["tolerations"] = [t.model_dump(exclude_none=True) for t in placement.tolerations]
        return {"metadata": {"labels": dict(self.labels)}, "spec": spec}


# What KubeRay's deployment states mean to a user while the Ray job itself has no say.
_DEPLOYMENT_DETAILS = {
    "New": "waiting for the KubeRay operator",
    "Initializing": "RayCluster starting",
    "Retrying": "starting a new RayCluster after a failure (backoffLimit)",
    "Suspending": "releasing the RayCluster",
    "Suspended": "the RayCluster is released",
    "Scheduling": "waiting for its schedule",
    "Scheduled": "waiting for its schedule",
}


def rayjob_status(rayjob: dict[str, Any]) -> JobStatus:
    """A RayJob's `status.jobDeploymentStatus` (KubeRay's lifecycle) and `status.jobStatus` (the Ray job's own),
    read as one job state with a message such as "Initializing: RayCluster starting"."""
    metadata, status = rayjob.get("metadata") or {}, rayjob.get("status") or {}
    deployment = status.get("jobDeploymentStatus") or "New"
    ray_state = status.get("jobStatus") or ""
    if metadata.get("deletionTimestamp"):
        state, deployment = JobState.STOPPED, "Deleting"
    elif deployment == "Complete":
        state = {"SUCCEEDED": JobState.SUCCEEDED, "STOPPED": JobState.STOPPED}.get(ray_state, JobState.FAILED)
    elif deployment == "Failed":
        state = JobState.FAILED
    elif deployment in ("Suspending", "Suspended"):
        state = JobState.STOPPED
    elif deployment == "Running" and ray_state not in ("", "PENDING"):
        state = JobState.RUNNING  # a finished Ray job stays Running until KubeRay has seen its submitter end
    else:
        state = JobState.PENDING
    detail = _DEPLOYMENT_DETAILS.get(deployment) or (f"Ray job {ray_state}" if ray_state else "Ray job not submitted")
    parts = [deployment, detail, status.get("reason"), status.get("message")]
    annotations, labels = metadata.get("annotations") or {}, metadata.get("labels") or {}
    return JobStatus(
        job_id=annotations.get(JOB_ID_ANNOTATION) or metadata.get("name", ""),
        state=state,
        message=": ".join(p for p in parts if p),
        stage=labels.get(STAGE_LABEL, ""),
        backend="k8s",
    )


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
        if current.state == JobState.PENDING:
            current.why_pending = self._why_pending(context, namespace, rayjob)
        return current

    def _why_pending(self, context: str, namespace: str, rayjob: dict[str, Any]) -> list[str]:
        """What the job's pods and the namespace's Warning events say (see `explain_pending`). Reading them is
        extra to the status, so a refusal (e.g. no right to list events) becomes a line, never an error."""
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
            return [f"why it is pending could not be read: {exc}"]
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
            raise _api_error(exc, verb, resource, namespace, name) from None
        except HTTPError as exc:
            host = self._api_client(context).configuration.host
            reason = re.sub(r"^\w+Connection\([^)]*\): ", "", str(getattr(exc, "reason", None) or exc))
            raise VlkdError(
                f"cannot reach the Kubernetes API server at {host} (context {context!r}): {reason}; "
                "check that the cluster is up and reachable from here (VPN, kubeconfig server address)"
            ) from None


def _api_error(exc: Any, verb: str, resource: str, namespace: str, name: str | None) -> VlkdError:
    """One line for an API server's refusal of `verb` on `resource`, with what to do about it."""
    body = _status_body(exc.body)
    said = (body.get("message") or exc.reason or "").strip()
    target = f"{resource} {namespace}/{name}" if name else f"{resource} in namespace {namespace}"
    details = body.get("details") or {}
    if exc.status == 404 and details.get("kind") == "namespaces":
        return VlkdError(f"namespace {namespace!r} does not exist: apply k8s/ (kubectl apply -k k8s/overlays/...)")
    if exc.status == 404 and resource == PLURAL and not details.get("name"):
        return VlkdError(
            f"the RayJob CRD is not installed (no rayjobs.ray.io/v1): install the KubeRay operator: {INSTALL_KUBERAY}"
        )
    if exc.status == 404:
        return NotFoundError(f"{target} not found")
    if exc.status == 403:
        return VlkdError(
            f"forbidden to {verb} {resource} in namespace {namespace} ({said}): ask an admin to bind you to "
            f"{SUBMITTER_ROLE}"
        )
    if exc.status == 401:
        return VlkdError(f"the API server did not accept your credentials ({said}): log in to the cluster again")
    if exc.status == 409 and verb == "create":
        return VlkdError(
            f"RayJob {namespace}/{name} already exists: cancel that job first, or submit with a new job id"
        )
    return VlkdError(f"the API server refused to {verb} {target} (HTTP {exc.status}): {said}")


def _status_body(text: str | None) -> dict[str, Any]:
    """The API server's `Status` object in an error response, if it sent one (a missing API group answers with
    plain text)."""
    try:
        body = json.loads(text or "")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


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
