"""What the `k8s` backend sends: the KubeRay `RayJob` of a job (`render_rayjob`), which brings up a RayCluster of
its own. `vlkd render` prints it and `vlkd submit` sends it unchanged; k8s/generate.py makes the templates of k8s/base
from it.

Rendering choices, stated once:
- `submissionMode: K8sJobMode` (KubeRay's default): once the cluster is up, KubeRay runs `ray job submit` in a
  Kubernetes Job named after the RayJob. That pod follows the driver's output, so its log is the job's log, and it
  outlives the RayCluster (deleted `ttlSecondsAfterFinished` after the end), so logs stay readable. Its pod is
  rendered (`submitterPodTemplate`, `vlkd.backends.k8s_pods`), and the Job retries it `kubernetes.
  submitter_backoff_limit` times (KubeRay's default is 2: rayjob_controller.go createNewK8sJob): a retried submitter
  follows the Ray job already submitted instead of submitting it again (common/job.go BuildJobSubmitCommand), so a
  dropped log stream or an evicted submitter no longer fails a healthy run.
- Name: the job id as a DNS-1035 label of at most 47 characters, KubeRay's limit (it appends 6 characters for the
  RayCluster, whose Services must fit in 63). An id that had to change gets a hash suffix, so two ids never collide.
- Worker groups are named after the shape of their pods (`gpu1-cpu8`, `cpu1500m`): what a pod asks for is what Ray
  places work by, and the name tells one group from another in `kubectl get pods` and in Kueue's pod sets.
- The head offers Ray no CPU (`num-cpus: 0`) when the cluster has workers: no task lands on the pod that holds the
  GCS, whose loss ends the cluster. What the driver asks for beyond its workers (`driver_cpus` of the stage: its Ray
  Data tasks) comes with the worker pods instead, spread over them (KubeRay gives Ray a pod's CPU limit rounded up,
  common/pod.go, so each pod gets a whole share).
- A stage job: one worker group of `num_workers` pods, fixed. With `num_workers: 0`, no worker group (the CRD makes
  `workerGroupSpecs` optional): the trainer runs in-process in the driver, which runs on the head, so the head gets
  the worker's GPUs, node selector and tolerations, the larger of the head's and the worker's memory, and the CPUs
  of both the worker and the driver's tasks.
- A pipeline job (`vlkd pipeline submit`, `_pipeline_cluster`): its driver submits each stage as a Ray job of its
  own to the same cluster, up to the pipeline's parallelism at once. The head (`kubernetes.head_cpus/head_memory`,
  no GPU) runs that driver and the drivers of stages with workers: neither asks Ray for resources, and Ray runs such
  an entrypoint on the head. A stage with `num_workers: 0` trains in its entrypoint, which asks for one worker's
  CPUs and GPUs (`RayBackend.request`), so such a stage needs one worker of its shape. One worker group per shape of
  worker, of as many pods as stages that may run at once ask of that shape together (`vlkd.stage_dag.most_at_once`).
  Ray places work by CPUs and GPUs only (vlkd's stages ask for no memory or node label), so stages of the same CPUs
  and GPUs share one group with the largest memory among them, and must agree on node selector and tolerations: Ray
  could not keep them apart. Unqueued, Ray's in-tree autoscaler (v2, which drains a node before removing it) sizes
  each group from none up to that need, so GPUs are held only while a stage uses them. Worker pods are never
  restarted (`restartPolicy: Never`): the autoscaler stops an idle worker's Ray, and a restarted container would
  bring it back. The autoscaler runs in the head pod under `kubernetes.autoscaler_service_account`: KubeRay binds
  its Role (common/rbac.go BuildRole: pods get/list/watch/patch, rayclusters get/patch) to the head's ServiceAccount
  (raycluster_controller.go reconcileAutoscalerRoleBinding), and that account must exist (k8s/base/rbac-job.yaml).
- Credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY by reference to the Secret `kubernetes.s3_secret`, or none
  (`s3_secret: null`): the SDK's default chain then finds the pods' workload identity (IRSA, EKS Pod Identity). The
  optional ConfigMap `vlkd-store` (k8s/base) carries cluster-wide settings such as AWS_ENDPOINT_URL; `job.env`
  (which carries the bucket's AWS_REGION, resolved at submission) overrides it.
- Ray's token auth (`authOptions`, KubeRay >= 1.5 with Ray >= 2.52: utils/validation.go): KubeRay makes a token
  Secret per cluster and gives it to the head, workers, autoscaler and submitter (common/pod.go
  configureTokenAuth, rayjob_controller.go configureSubmitterContainer), so a pod of another job cannot submit code
  to this head. The NetworkPolicy of k8s/base keeps other pods off its ports altogether.
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
  each attempt's cluster. A job past `activeDeadlineSeconds` is not retried. The default, 3, outlives a few
  preemptions of a spot node or a consolidation.
- `kubernetes.start_deadline_seconds` (`preRunningDeadlineSeconds`, KubeRay >= 1.6): a RayJob whose cluster is not
  running that long after KubeRay starts it (after Kueue admits it, when queued) fails, and releases what it held,
  instead of sitting in Initializing for ever (rayjob_controller.go checkPreRunningDeadlineAndUpdateStatusIfNeeded).
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from vlkd.backends import kueue
from vlkd.backends.base import JobDescription
from vlkd.backends.k8s_pods import HEAD_CONTAINER, STORE_CONFIGMAP, PodTemplates, cpu_quantity
from vlkd.backends.ray import RayBackend
from vlkd.errors import VlkdError
from vlkd.specs import PipelineSpec, Resources, StageSpec, quantity_bytes
from vlkd.stage_dag import most_at_once, stage_needs

# HEAD_CONTAINER and STORE_CONFIGMAP are named here too: what the backend looks for in what it rendered.
__all__ = ["HEAD_CONTAINER", "STORE_CONFIGMAP", "rayjob_name", "render_rayjob"]

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
MANAGED_BY_LABEL, JOB_ID_LABEL, STAGE_LABEL = "app.kubernetes.io/managed-by", "vlkd.io/job-id", "vlkd.io/stage"
JOB_ID_ANNOTATION, SPEC_URI_ANNOTATION, STORE_URI_ANNOTATION = "vlkd.io/job-id", "vlkd.io/spec-uri", "vlkd.io/store-uri"
S3_CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# The Ray of the vlkd image (Dockerfile FROM, the pin in pyproject.toml; tests/test_k8s_hardening.py checks all
# three agree): KubeRay's token auth refuses a cluster that does not name one of at least 2.52.0.
RAY_VERSION = "2.60.0"
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
    pods = PodTemplates(labels, k8s.image or job.image, _env(job.environment, k8s.s3_secret), k8s)
    if isinstance(job.spec, PipelineSpec):
        cluster = _pipeline_cluster(job.spec, pods)
    else:
        cluster = _stage_cluster(job.spec, pods)
    spec: dict[str, Any] = {
        "entrypoint": job.entrypoint_line,
        "jobId": job.job_id,
        "submissionMode": "K8sJobMode",
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": k8s.ttl_seconds_after_finished,
        "backoffLimit": k8s.backoff_limit,
        "submitterConfig": {"backoffLimit": k8s.submitter_backoff_limit},
        "submitterPodTemplate": pods.submitter(),
    }
    if k8s.start_deadline_seconds:
        spec["preRunningDeadlineSeconds"] = k8s.start_deadline_seconds
    if k8s.active_deadline_seconds:
        spec["activeDeadlineSeconds"] = k8s.active_deadline_seconds
    if k8s.queue:
        spec["suspend"] = True  # Kueue unsuspends it on admission
    spec["rayClusterSpec"] = {"rayVersion": RAY_VERSION, "authOptions": {"mode": "token"}, **cluster}
    annotations = {
        JOB_ID_ANNOTATION: job.job_id,
        SPEC_URI_ANNOTATION: job.spec_uri,
        STORE_URI_ANNOTATION: job.store_uri,
    }
    # The queue label goes on the RayJob only: on a pod, it would ask Kueue to queue that pod by itself.
    queued = {kueue.QUEUE_LABEL: k8s.queue} if k8s.queue else {}
    metadata = {"name": name, "namespace": namespace, "labels": {**labels, **queued}, "annotations": annotations}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RayJob", "metadata": metadata, "spec": spec}


def _stage_cluster(stage: StageSpec, pods: PodTemplates) -> dict[str, Any]:
    """One stage's cluster: a head and its workers, which also carry the driver's tasks; without workers, a head
    that trains in-process and runs those tasks itself."""
    worker, k8s = stage.resources, stage.kubernetes
    if worker.num_workers:
        head = pods.head(k8s.head_cpus, k8s.head_memory, autoscaled=False)
        share = math.ceil(stage.driver_cpus / worker.num_workers)
        group = _worker_group(pods, worker, share, worker.num_workers)
        return {"headGroupSpec": _head_group(head, offers_cpus=False), "workerGroupSpecs": [group]}
    cpus = max(k8s.head_cpus, worker.cpus_per_worker + stage.driver_cpus)
    head = pods.head(cpus, _larger(k8s.head_memory, worker.memory), worker.gpus_per_worker, worker, autoscaled=False)
    return {"headGroupSpec": _head_group(head, offers_cpus=True)}


def _head_group(template: dict[str, Any], offers_cpus: bool) -> dict[str, Any]:
    return {"template": template} if offers_cpus else {"rayStartParams": {"num-cpus": "0"}, "template": template}


def _pipeline_cluster(pipeline: PipelineSpec, pods: PodTemplates) -> dict[str, Any]:
    """A pipeline's cluster: a head for the drivers and a worker group per shape its stages need, autoscaled unless
    queued (the module's docstring says why)."""
    k8s = pipeline.kubernetes
    autoscaled = k8s.queue is None
    groups = [_worker_group(pods, w, share, most, autoscaled) for w, share, most in _worker_shapes(pipeline)]
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
        cluster["autoscalerOptions"] = {
            "version": "v2",
            "idleTimeoutSeconds": AUTOSCALER_IDLE_SECONDS,
            **pods.autoscaler_options(),
        }
    head = pods.head(k8s.head_cpus, k8s.head_memory, autoscaled=autoscaled)
    cluster["headGroupSpec"] = _head_group(head, offers_cpus=False)
    cluster["workerGroupSpecs"] = groups
    return cluster


def _worker_group(
    pods: PodTemplates, worker: Resources, share: int, most: int, autoscaled: bool = False
) -> dict[str, Any]:
    """A group of pods shaped like `worker`, named after that shape, with `share` more CPUs for drivers' tasks: `most`
    of them, or from none up to `most` as the autoscaler sees fit, on pods never restarted (the module's docstring
    says why)."""
    least = 0 if autoscaled else most
    cpus = worker.cpus_per_worker + share
    template = pods.worker(cpus, worker.memory, worker.gpus_per_worker, worker)
    if autoscaled:
        template["spec"]["restartPolicy"] = "Never"
    return {
        "groupName": _shape_name(worker.gpus_per_worker, worker.cpus_per_worker),
        "replicas": least,
        "minReplicas": least,
        "maxReplicas": most,
        "template": template,
    }


def _worker_shapes(pipeline: PipelineSpec) -> list[tuple[Resources, int, int]]:
    """One worker per shape of CPUs and GPUs the stages ask for (with the largest memory among them), the CPUs
    for drivers' tasks each of its pods needs (the largest share of any stage), and the most workers of it that
    stages running at once ask for together (`stage_dag.most_at_once`, up to the pipeline job's parallelism; one at a
    time, the stage asking most). A stage asks its `num_workers`, or 1 if it trains in its entrypoint."""
    stages = pipeline.stages()
    shapes: dict[tuple[int, float], tuple[str, Resources, int, dict[str, int]]] = {}
    for key, stage in stages:
        worker, need = stage.resources, max(stage.resources.num_workers, 1)
        share = math.ceil(stage.driver_cpus / need)
        shape = (math.ceil(worker.gpus_per_worker), worker.cpus_per_worker)
        if shape not in shapes:
            shapes[shape] = (key, worker, share, {key: need})
            continue
        first, seen, most_share, asks = shapes[shape]
        if (seen.node_selector, seen.tolerations) != (worker.node_selector, worker.tolerations):
            raise VlkdError(
                f"pipeline {pipeline.name}: stages {first} and {key} ask for workers of "
                f"{_shape_name(worker.gpus_per_worker, worker.cpus_per_worker)} on different nodes "
                "(resources.node_selector, resources.tolerations); Ray places work by CPUs and GPUs only, so one "
                "cluster cannot keep them apart: give them the same node_selector and tolerations, or different "
                "CPUs, or run the stages as jobs of their own (`vlkd pipeline run --backend k8s`)"
            )
        memory = _larger(seen.memory, worker.memory)
        shapes[shape] = (first, seen.model_copy(update={"memory": memory}), max(most_share, share), asks | {key: need})
    needs = stage_needs(stages)
    at_once = pipeline.parallelism_on(RayBackend.name)  # its driver submits stages to its cluster (jobs/pipeline.py)
    return [(worker, share, most_at_once(needs, asks, at_once)) for _, worker, share, asks in shapes.values()]


def _shape_name(gpus: float, cpus: float) -> str:
    """`gpu1-cpu8`, `cpu1500m`: a worker's whole GPUs and its CPUs, as a DNS label (Kueue names a pod set after
    it)."""
    whole = math.ceil(gpus)
    return f"gpu{whole}-cpu{cpu_quantity(cpus)}" if whole else f"cpu{cpu_quantity(cpus)}"


def _larger(memory: str | None, other: str | None) -> str | None:
    """The larger of two memory quantities; None counts as no request."""
    if memory is None or (other is not None and quantity_bytes(other) > quantity_bytes(memory)):
        return other
    return memory


def _env(env: dict[str, str], secret: str | None) -> list[dict[str, Any]]:
    leaked = [key for key in env if _CREDENTIAL_NAME.search(key)]
    if leaked:
        source = f"the Secret {secret!r} (kubernetes.s3_secret)" if secret else "the pods' workload identity"
        raise VlkdError(
            f"job environment {', '.join(leaked)}: credentials never travel inline; the k8s backend reads "
            f"S3 credentials from {source}"
        )
    plain = [{"name": key, "value": value} for key, value in env.items()]
    if secret is None:
        return plain
    return plain + [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} for key in S3_CREDENTIAL_KEYS
    ]
