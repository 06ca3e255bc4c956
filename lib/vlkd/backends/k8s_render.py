"""What the `k8s` backend sends: the KubeRay `RayJob` of a job (`render_rayjob`), which brings up a RayCluster of
its own. `vlkd render` prints it and `vlkd submit` sends it unchanged; k8s/generate.py makes the templates of k8s/base
from it.

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
- `kubernetes.queue`: the RayJob carries the label `kueue.x-k8s.io/queue-name` and is created suspended, so Kueue
  starts it once the queue admits it (what Kueue's webhook would set anyway; rendered, so the dry run is what the
  server stores). Kueue's conditions for RayJobs hold: a cluster of its own, `shutdownAfterJobFinishes`, no
  autoscaling, at most 7 worker groups. The backend's status then reads the job's Workload (`vlkd.backends.kueue`).
- `kubernetes.priority_class`: `priorityClassName` of the head and worker pods. Kueue takes a queued job's priority
  from it too; the label `kueue.x-k8s.io/priority-class` would name a WorkloadPriorityClass, another kind of object,
  so it is not set.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from typing import Any

from vlkd.backends import kueue
from vlkd.backends.base import JobDescription
from vlkd.errors import VlkdError
from vlkd.specs import KubernetesSpec, quantity_bytes

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
MANAGED_BY_LABEL, JOB_ID_LABEL, STAGE_LABEL = "app.kubernetes.io/managed-by", "vlkd.io/job-id", "vlkd.io/stage"
JOB_ID_ANNOTATION, SPEC_URI_ANNOTATION, STORE_URI_ANNOTATION = "vlkd.io/job-id", "vlkd.io/spec-uri", "vlkd.io/store-uri"
STORE_CONFIGMAP = "vlkd-store"
S3_CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
GPU_RESOURCE = "nvidia.com/gpu"
HEAD_CONTAINER, WORKER_CONTAINER = "ray-head", "ray-worker"
MAX_NAME_LENGTH = 47
_CREDENTIAL_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)


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
    pods = _PodFactory(labels, k8s.image or job.image, _env(job.env, k8s.s3_secret), k8s)
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
    if k8s.queue:
        spec["suspend"] = True  # Kueue unsuspends it on admission
    spec["rayClusterSpec"] = cluster
    annotations = {
        JOB_ID_ANNOTATION: job.job_id,
        SPEC_URI_ANNOTATION: job.spec_uri,
        STORE_URI_ANNOTATION: job.store_uri,
    }
    # The queue label goes on the RayJob only: on a pod, it would ask Kueue to queue that pod by itself.
    queued = {kueue.QUEUE_LABEL: k8s.queue} if k8s.queue else {}
    metadata = {"name": name, "namespace": namespace, "labels": {**labels, **queued}, "annotations": annotations}
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
    """Head and worker pod templates that share labels, image, environment, service account and priority."""

    def __init__(self, labels: dict[str, str], image: str, env: list[dict[str, Any]], k8s: KubernetesSpec) -> None:
        self.labels, self.image, self.env = labels, image, env
        self.service_account, self.priority_class = k8s.service_account, k8s.priority_class

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
        if self.priority_class:
            spec["priorityClassName"] = self.priority_class
        if placement is not None and placement.node_selector:
            spec["nodeSelector"] = dict(placement.node_selector)
        if placement is not None and placement.tolerations:
            spec["tolerations"] = [t.model_dump(exclude_none=True) for t in placement.tolerations]
        return {"metadata": {"labels": dict(self.labels)}, "spec": spec}
