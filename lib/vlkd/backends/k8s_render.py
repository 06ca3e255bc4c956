"""What the `k8s` backend sends: the KubeRay `RayJob` of a job (`render_rayjob`), which brings up a RayCluster of
its own. `vlkd render` prints it and `vlkd submit` sends it unchanged; k8s/generate.py makes the templates of k8s/base
from it.

Rendering choices, stated once:
- `submissionMode: K8sJobMode` (KubeRay's default): once the cluster is up, KubeRay runs `ray job submit` in a
  Kubernetes Job named after the RayJob. That pod follows the driver's output, so its log is the job's log, and it
  outlives the RayCluster (deleted `ttlSecondsAfterFinished` after the end), so logs stay readable.
- Name: the job id as a DNS-1035 label of at most 47 characters, KubeRay's limit (it appends 6 characters for the
  RayCluster, whose Services must fit in 63). An id that had to change gets a hash suffix, so two ids never collide.
- Worker groups are named after the shape of their pods (`gpu1-cpu8`, `cpu1500m`): what a pod asks for is what Ray
  places work by, and the name tells one group from another in `kubectl get pods` and in Kueue's pod sets.
- A stage job: one worker group of `num_workers` pods, fixed. With `num_workers: 0`, no worker group (the CRD makes
  `workerGroupSpecs` optional): the trainer runs in-process in the driver, which runs on the head, so the head gets
  the worker's GPUs, node selector and tolerations, and the larger of the head's and the worker's CPUs and memory.
- A pipeline job (`vlkd pipeline submit`, `_pipeline_cluster`): its driver submits each stage as a Ray job of its own
  to the same cluster, one after another. The head (`kubernetes.head_cpus/head_memory`, no GPU) runs that driver and
  the drivers of stages with workers: neither asks Ray for resources, and Ray runs such an entrypoint on the head. A
  stage with `num_workers: 0` trains in its entrypoint, which asks for one worker's CPUs and GPUs
  (`RayBackend.request`); Ray runs it on any node that has them free, the head included when it has the CPUs, so
  such a stage needs one worker of its shape, and a GPU one always does. One worker group per shape of worker, of as
  many pods as the stage asking most of that shape needs (stages run one after another). Ray places work by CPUs
  and GPUs only (vlkd's stages ask for no memory or node label), so stages of the same CPUs and GPUs share one group
  with the largest memory among them, and must agree on node selector and tolerations: Ray could not keep them
  apart. Unqueued, Ray's in-tree autoscaler (v2, which drains a node before removing it) sizes each group from none
  up to that need, so GPUs are held only while a stage uses them. Worker pods are never restarted (`restartPolicy:
  Never`): the autoscaler stops an idle worker's Ray, and a restarted container would bring it back.
- Credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY by reference to the Secret `kubernetes.s3_secret`. The
  optional ConfigMap `vlkd-store` (k8s/base) carries cluster-wide settings such as AWS_ENDPOINT_URL; `job.env`
  overrides it.
- `kubernetes.queue`: the RayJob carries the label `kueue.x-k8s.io/queue-name` and is created suspended, so Kueue
  starts it once the queue admits it (what Kueue's webhook would set anyway; rendered, so the dry run is what the
  server stores). Kueue's conditions for RayJobs hold: a cluster of its own, `shutdownAfterJobFinishes`, no
  autoscaling, a bounded number of worker groups (`kueue.MAX_WORKER_GROUPS`). Kueue refuses the in-tree autoscaler
  unless its ElasticJobsViaWorkloadSlices feature gate is on, which vlkd cannot know; so a queued pipeline gets fixed
  worker groups, each of its largest need, which Kueue admits (and the cluster holds) whole for the whole pipeline.
  The backend's status then reads the job's Workload (`vlkd.backends.kueue`).
- `kubernetes.priority_class`: `priorityClassName` of the head and worker pods. Kueue takes a queued job's priority
  from it too; the label `kueue.x-k8s.io/priority-class` would name a WorkloadPriorityClass, another kind of object,
  so it is not set.
- `kubernetes.backoff_limit` (KubeRay's `spec.backoffLimit`): on a failure KubeRay deletes the RayCluster and the
  submitter Job and starts over with a new RayCluster from the same spec, so every attempt runs the same entrypoint,
  with the same `--job-id` and `--spec`, and resumes from that job's checkpoints (a pipeline: skips the stages that
  published). `spec.jobId` is that id too, so the Ray job goes by the vlkd id on every attempt (`ray job logs ID`):
  Ray keeps submission ids per cluster and each attempt has a new one, and within an attempt KubeRay's submitter
  follows a submission id already taken instead of submitting it twice. Nothing rendered is per attempt: KubeRay names
  each attempt's cluster. A job past `activeDeadlineSeconds` is not retried.
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
from vlkd.specs import KubernetesSpec, PipelineSpec, Resources, quantity_bytes

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
MANAGED_BY_LABEL, JOB_ID_LABEL, STAGE_LABEL = "app.kubernetes.io/managed-by", "vlkd.io/job-id", "vlkd.io/stage"
JOB_ID_ANNOTATION, SPEC_URI_ANNOTATION, STORE_URI_ANNOTATION = "vlkd.io/job-id", "vlkd.io/spec-uri", "vlkd.io/store-uri"
STORE_CONFIGMAP = "vlkd-store"
S3_CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
GPU_RESOURCE = "nvidia.com/gpu"
HEAD_CONTAINER, WORKER_CONTAINER = "ray-head", "ray-worker"
MAX_NAME_LENGTH = 47
# Longer than the pipeline driver's gap between two stages (it polls every 5 s, then submits), so the next stage of
# the same shape finds the last one's nodes; short against a GPU node's start-up and a stage's hours. KubeRay's default.
AUTOSCALER_IDLE_SECONDS = 60
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
    """The RayJob that runs `job` in `namespace` on a RayCluster of its own, deleted after it finishes: sized for the
    stage, or for every stage of a pipeline."""
    k8s = job.spec.kubernetes
    name = rayjob_name(job.job_id)
    labels = {MANAGED_BY_LABEL: "vlkd", JOB_ID_LABEL: name, STAGE_LABEL: job.stage}
    pods = _PodFactory(labels, k8s.image or job.image, _env(job.environment, k8s.s3_secret), k8s)
    if isinstance(job.spec, PipelineSpec):
        cluster = _pipeline_cluster(job.spec, pods)
    else:
        cluster = _stage_cluster(job.spec.resources, k8s, pods)
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


def _stage_cluster(worker: Resources, k8s: KubernetesSpec, pods: _PodFactory) -> dict[str, Any]:
    """One stage's cluster: a head and its workers; without workers, a head that trains in-process."""
    if worker.num_workers:
        head = pods.head(k8s.head_cpus, k8s.head_memory)
        return {"headGroupSpec": {"template": head}, "workerGroupSpecs": [pods.group(worker, worker.num_workers)]}
    cpus, memory = max(k8s.head_cpus, worker.cpus_per_worker), _larger(k8s.head_memory, worker.memory)
    return {"headGroupSpec": {"template": pods.head(cpus, memory, worker.gpus_per_worker, worker)}}


def _pipeline_cluster(pipeline: PipelineSpec, pods: _PodFactory) -> dict[str, Any]:
    """A pipeline's cluster: a head for the drivers and a worker group per shape its stages need, autoscaled unless
    queued (the module's docstring says why)."""
    k8s = pipeline.kubernetes
    autoscaled = k8s.queue is None
    groups = [pods.group(worker, most, autoscaled) for worker, most in _worker_shapes(pipeline)]
    if not autoscaled and len(groups) > kueue.MAX_WORKER_GROUPS:
        raise VlkdError(
            f"pipeline {pipeline.name}: its stages need {len(groups)} shapes of worker "
            f"({', '.join(g['groupName'] for g in groups)}), and a RayJob queued through Kueue may have at most "
            f"{kueue.MAX_WORKER_GROUPS} worker groups: give stages the same resources.cpus_per_worker and "
            "gpus_per_worker where they can share, or submit without kubernetes.queue"
        )
    cluster: dict[str, Any] = {}
    if autoscaled:
        cluster["enableInTreeAutoscaling"] = True
        cluster["autoscalerOptions"] = {"version": "v2", "idleTimeoutSeconds": AUTOSCALER_IDLE_SECONDS}
    cluster["headGroupSpec"] = {"template": pods.head(k8s.head_cpus, k8s.head_memory)}
    cluster["workerGroupSpecs"] = groups
    return cluster


def _worker_shapes(pipeline: PipelineSpec) -> list[tuple[Resources, int]]:
    """One worker per shape of CPUs and GPUs the stages ask for (with the largest memory among them), and the most
    workers any stage asks of it: its `num_workers`, or 1 for a stage that trains in its entrypoint."""
    shapes: dict[tuple[int, float], tuple[str, Resources, int]] = {}
    for key, stage in pipeline.stages():
        worker, need = stage.resources, max(stage.resources.num_workers, 1)
        shape = (math.ceil(worker.gpus_per_worker), worker.cpus_per_worker)
        if shape not in shapes:
            shapes[shape] = (key, worker, need)
            continue
        first, seen, most = shapes[shape]
        if (seen.node_selector, seen.tolerations) != (worker.node_selector, worker.tolerations):
            raise VlkdError(
                f"pipeline {pipeline.name}: stages {first} and {key} ask for workers of {_shape_name(worker)} on "
                "different nodes (resources.node_selector, resources.tolerations); Ray places work by CPUs and GPUs "
                "only, so one cluster cannot keep them apart: give them the same node_selector and tolerations, or "
                "different CPUs, or run the stages as jobs of their own (`vlkd pipeline run --backend k8s`)"
            )
        memory = _larger(seen.memory, worker.memory)
        shapes[shape] = (first, seen.model_copy(update={"memory": memory}), max(most, need))
    return [(worker, most) for _, worker, most in shapes.values()]


def _shape_name(worker: Resources) -> str:
    """`gpu1-cpu8`, `cpu1500m`: a pod's whole GPUs and its CPUs, as a DNS label (Kueue names a pod set after it)."""
    gpus = math.ceil(worker.gpus_per_worker)
    return f"gpu{gpus}-cpu{_cpu(worker.cpus_per_worker)}" if gpus else f"cpu{_cpu(worker.cpus_per_worker)}"


def _larger(memory: str | None, other: str | None) -> str | None:
    """The larger of two memory quantities; None counts as no request."""
    if memory is None or (other is not None and quantity_bytes(other) > quantity_bytes(memory)):
        return other
    return memory


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
    """Head and worker pod templates, and worker groups, that share labels, image, environment, service account and
    priority."""

    def __init__(self, labels: dict[str, str], image: str, env: list[dict[str, Any]], k8s: KubernetesSpec) -> None:
        self.labels, self.image, self.env = labels, image, env
        self.service_account, self.priority_class = k8s.service_account, k8s.priority_class

    def head(self, cpus: float, memory: str | None, gpus: float = 0, placement: Resources | None = None) -> dict:
        return self._template(HEAD_CONTAINER, cpus, memory, gpus, placement)

    def group(self, worker: Resources, most: int, autoscaled: bool = False) -> dict[str, Any]:
        """A worker group of pods shaped like `worker`, named after that shape: `most` of them, or from none up to
        `most` as the autoscaler sees fit, on pods never restarted (the module's docstring says why)."""
        least = 0 if autoscaled else most
        template = self._template(
            WORKER_CONTAINER, worker.cpus_per_worker, worker.memory, worker.gpus_per_worker, worker
        )
        if autoscaled:
            template["spec"]["restartPolicy"] = "Never"
        return {
            "groupName": _shape_name(worker),
            "replicas": least,
            "minReplicas": least,
            "maxReplicas": most,
            "template": template,
        }

    def _template(self, name: str, cpus: float, memory: str | None, gpus: float, placement: Resources | None) -> dict:
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
