"""Where a job queued through Kueue stands, in words a user can act on.

With `kubernetes.queue`, the RayJob carries the label `kueue.x-k8s.io/queue-name` and is created suspended, as Kueue
documents for RayJobs (kueue.sigs.k8s.io/docs/tasks/run/rayjobs): Kueue makes a Workload for it, reserves quota in
the LocalQueue's ClusterQueue, then unsuspends it. Meanwhile KubeRay only says "Suspended"; the cause sits in the
Workload: its conditions `QuotaReserved` (False while it waits, with the scheduler's reason), `Admitted`, `Evicted`
(preempted, or pods not ready in time), and `spec.active` (false once deactivated). `queue_status` reads a Workload as
the API server returns it (in either version Kueue serves: the fields read here are the same in both) and refines the
RayJob's status. It is pure, so every case is tested on recorded objects without a cluster. `refusal` says what
Kueue's admission webhook means when it refuses a RayJob vlkd sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from vlkd.backends.base import JobState, JobStatus
from vlkd.backends.k8s_pending import one_line

GROUP = "kueue.x-k8s.io"
# The Kueue releases vlkd reads: v0.14 and later, recorded in tests/data/kueue/ (kubernetes-sigs/kueue,
# config/components/crd/bases). Workloads and LocalQueues are read in v1beta2, served since v0.15 and Kueue's storage
# version since v0.16, else in v1beta1, the only version before v0.15 (deprecated since v0.16, still served in v0.19).
# The fields read here are the same in both.
SUPPORTED_KUEUE = "v0.14"
VERSIONS = ("v1beta2", "v1beta1")
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"  # Kueue labels a Workload with its job's uid; its name carries a hash
# A Workload held at most 8 pod sets until 2026 (kubernetes-sigs/kueue#11388 raised it to 10, #12819 to 18), and a
# RayJob in K8sJobMode takes two for its head and its submitter. Kueue's webhook counts only the head, so it accepts
# 7 worker groups, then the API server refuses their Workload of 9 pod sets and the job waits forever: vlkd keeps to
# what every Kueue it reads (v1beta1 and v1beta2) admits.
MAX_WORKER_GROUPS = 6

# One clause of the scheduler's "couldn't assign flavors to pod set ...: ..." per resource and flavor. Kueue v0.14.2
# (and v0.13.9) split "request > maximum capacity (A > B)" into what the earlier pod sets and this one ask for.
_SHORTAGE = re.compile(
    r"insufficient (?P<unused>unused )?quota for (?P<resource>[^\s,]+) in flavor [^\s,]+, (?:"
    r"(?P<needed>[^\s,.]+) more needed"
    r"|request > maximum capacity \((?P<request>[^ )]+) > (?P<maximum>[^ )]+)\)"
    r"|previously considered podsets requests \((?P<earlier>[^ )]+)\) \+ current podset request \((?P<this>[^ )]+)\)"
    r" > maximum capacity \((?P<capacity>[^ )]+)\))"
)
_NOUNS = {"nvidia.com/gpu": "GPU", "cpu": "CPU", "memory": "memory"}
_ASK_LESS = {
    "nvidia.com/gpu": "resources.num_workers, resources.gpus_per_worker",
    "cpu": "resources.cpus_per_worker, kubernetes.head_cpus",
    "memory": "resources.memory, kubernetes.head_memory",
}


# Kueue's validating webhook for RayJobs (pkg/controller/jobs/rayjob/rayjob_webhook.go, v0.13 to v0.19 and main)
# checks a RayJob Kueue manages: one with a queue label, which Kueue's mutating webhook gives every RayJob of a
# namespace with a LocalQueue named "default" (pkg/controller/jobframework/defaults.go ApplyDefaultLocalQueue), or any
# RayJob under its manageJobsWithoutQueueName. It refuses the in-tree autoscaler (pkg/controller/jobs/raycluster/
# common.go ValidateCreate) unless the job is elastic: the ElasticJobsViaWorkloadSlices feature gate (on by default
# since v0.18) and the annotation kueue.x-k8s.io/elastic-job: "true", which vlkd does not render. An unqueued
# pipeline's cluster is autoscaled (`k8s_render`); a queued one has fixed worker groups, which Kueue admits.
RAYJOB_WEBHOOK = "vrayjob.kb.io"
_REFUSES_AUTOSCALING = "spec.rayClusterSpec.enableInTreeAutoscaling: Invalid value: true"


def refusal(webhook: str, said: str, namespace: str) -> str | None:
    """What Kueue's refusal of a RayJob (`said` by admission webhook `webhook`) means and what to do, for the
    refusal vlkd can cause; None for any other."""
    if webhook != RAYJOB_WEBHOOK or _REFUSES_AUTOSCALING not in said:
        return None
    return (
        f"Kueue manages RayJobs in namespace {namespace} (it has a LocalQueue named default, or Kueue manages jobs "
        f"without a queue name) and refuses an autoscaled cluster (admission webhook {webhook!r}: {said}): submit "
        "with kubernetes.queue: <a LocalQueue of the namespace> (the pipeline then gets fixed worker groups), or in a "
        "namespace Kueue does not manage"
    )


def queue_name(rayjob: dict[str, Any]) -> str | None:
    return ((rayjob.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL)


def is_queued(rayjob: dict[str, Any]) -> bool:
    """Whether Kueue may hold the RayJob: it names a queue, or it is suspended (a Kueue set to manage jobs without
    a queue name suspends those too)."""
    return queue_name(rayjob) is not None or bool((rayjob.get("spec") or {}).get("suspend"))


def cluster_queue_of(workload: dict[str, Any]) -> str | None:
    """The ClusterQueue that reserved the Workload's quota; None until one has."""
    return ((workload.get("status") or {}).get("admission") or {}).get("clusterQueue")


@dataclass(frozen=True)
class _Wait:
    message: str
    lines: list[str] = field(default_factory=list)


def queue_status(
    current: JobStatus, rayjob: dict[str, Any], workload: dict[str, Any] | None, cluster_queue: str | None
) -> JobStatus:
    """`current` (the RayJob's own status) refined by its Workload: why Kueue has not started it yet, or that it
    preempted or deactivated it. `cluster_queue` is the ClusterQueue behind the job's LocalQueue, if known. A
    Workload admitted and running, or finished, leaves `current` as it is: the RayJob says more."""
    queue = queue_name(rayjob) or ((workload or {}).get("spec") or {}).get("queueName")
    where = f"ClusterQueue {cluster_queue}" if cluster_queue else f"LocalQueue {queue}" if queue else "Kueue"
    if workload is None:
        return current if queue is None else _not_picked_up(current, rayjob, queue)
    conditions = {c.get("type"): c for c in (workload.get("status") or {}).get("conditions") or []}
    evicted = conditions.get("Evicted") if _true(conditions, "Evicted") else None
    if _true(conditions, "Finished"):
        return current
    if (workload.get("spec") or {}).get("active") is False:
        return _deactivated(current, workload, evicted)
    if _true(conditions, "Admitted") and evicted is None:
        if current.state != JobState.PENDING:
            return current
        deployment = (rayjob.get("status") or {}).get("jobDeploymentStatus") or "New"
        starting = "KubeRay starts it" if deployment in ("New", "Suspending", "Suspended") else current.message
        return replace(current, message=f"admitted by Kueue in {where}; {starting}")
    reserved = conditions.get("QuotaReserved") or {}
    if evicted is not None and reserved.get("reason") == evicted.get("reason"):  # not considered since
        requeue_at = ((workload.get("status") or {}).get("requeueState") or {}).get("requeueAt")
        wait = _Wait(f"back in {where}" + (f" from {requeue_at}" if requeue_at else ""))
    else:
        wait = _waiting(workload, reserved, where)
    if evicted is not None:
        eviction, hints = _eviction(workload, evicted, conditions)
        wait = _Wait(f"{eviction}; {wait.message}", [*wait.lines, *hints])
    return replace(current, state=JobState.PENDING, message=wait.message, why_pending=wait.lines)


def _true(conditions: dict[str, dict[str, Any]], kind: str) -> bool:
    return (conditions.get(kind) or {}).get("status") == "True"


def _not_picked_up(current: JobStatus, rayjob: dict[str, Any], queue: str) -> JobStatus:
    namespace = (rayjob.get("metadata") or {}).get("namespace", "")
    return replace(
        current,
        state=JobState.PENDING,
        message=f"queued in LocalQueue {queue}: Kueue has not made a Workload for it yet",
        why_pending=[
            f"if this lasts, check that Kueue runs and manages RayJobs (integration ray.io/rayjob) in namespace "
            f"{namespace}"
        ],
    )


def _waiting(workload: dict[str, Any], reserved: dict[str, Any], where: str) -> _Wait:
    """What a Workload without quota waits for, from its `QuotaReserved` condition."""
    said = one_line(reserved.get("message") or "")
    if not reserved:
        return _Wait(f"queued in {where}: Kueue has not considered it yet")
    if reserved.get("status") == "True":
        checks = [
            f"{c.get('name')} {c.get('state')}" + (f" ({one_line(c['message'])})" if c.get("message") else "")
            for c in (workload.get("status") or {}).get("admissionChecks") or []
        ]
        return _Wait(f"quota reserved in {where}, waiting for admission checks: {', '.join(checks) or 'none yet'}")
    if reserved.get("reason") == "Inadmissible":
        return _Wait(f"not admissible in Kueue: {said}", _inadmissible(said))
    requested = _requested(workload)
    shortages = [_shortage(resource, clauses, requested) for resource, clauses in _clauses(said).items()]
    if not shortages:
        return _Wait(f"waiting in {where}: {said}")
    hints = [
        f"{where} can never hold {s.requested} {_noun(s.resource)}: ask for less "
        f"({_ASK_LESS.get(s.resource, 'resources')}), or ask its admin for more quota"
        for s in shortages
        if s.never
    ]
    return _Wait(f"waiting for quota in {where}: {'; '.join(s.phrase for s in shortages)}", [f"Kueue: {said}", *hints])


@dataclass(frozen=True)
class _Shortage:
    resource: str
    phrase: str  # "8 GPU requested, 4 free"
    requested: str = ""
    never: bool = False  # no flavor of the queue could ever hold the request


def _clauses(message: str) -> dict[str, list[re.Match[str]]]:
    """The scheduler's shortage clauses by resource, in the order it names them."""
    clauses: dict[str, list[re.Match[str]]] = {}
    for clause in _SHORTAGE.finditer(message):
        clauses.setdefault(clause["resource"], []).append(clause)
    return clauses


def _shortage(resource: str, clauses: list[re.Match[str]], requested: dict[str, Decimal]) -> _Shortage:
    """What one resource lacks. Where a flavor only lacks unused quota, that flavor speaks: waiting makes room."""
    noun, asked = _noun(resource), requested.get(resource)
    unused = [c for c in clauses if c["unused"]]
    if unused:
        needed = min(_quantity(c["needed"]) for c in unused)
        if asked is None:
            return _Shortage(resource, f"{_amount(resource, needed)} more {noun} needed")
        free = _amount(resource, asked - needed)
        return _Shortage(resource, f"{_amount(resource, asked)} {noun} requested, {free} free")
    if (
        asked is None
    ):  # the scheduler's sum: its "request" before Kueue v0.14.2, the earlier pod sets' and this one's since
        first = clauses[0]
        asked = sum((_quantity(first[part] or "0") for part in ("request", "earlier", "this")), Decimal(0))
    most = _amount(resource, max(_quantity(c["maximum"] or c["capacity"]) for c in clauses))
    shown = _amount(resource, asked)
    return _Shortage(resource, f"{shown} {noun} requested, at most {most} in the queue", shown, never=True)


def _requested(workload: dict[str, Any]) -> dict[str, Decimal]:
    """What the unadmitted Workload asks for in all, per resource: Kueue's `status.resourceRequests`, which counts
    the namespace's LimitRange defaults too."""
    total: dict[str, Decimal] = {}
    for pod_set in (workload.get("status") or {}).get("resourceRequests") or []:
        for resource, value in (pod_set.get("resources") or {}).items():
            total[resource] = total.get(resource, Decimal(0)) + _quantity(str(value))
    return total


def _inadmissible(said: str) -> list[str]:
    if re.match(r"LocalQueue \S+ (doesn't exist|is terminating or missing)", said):
        return ["kubernetes.queue names no LocalQueue of the job's namespace: `kubectl get localqueues` lists them"]
    if re.match(r"(LocalQueue|ClusterQueue) \S+ ", said):
        return ["the queue admits nothing now: ask its admin"]
    return []


def _eviction(
    workload: dict[str, Any], evicted: dict[str, Any], conditions: dict[str, dict[str, Any]]
) -> tuple[str, list[str]]:
    """Why Kueue took the job's quota back (it queues the Workload again), and what to do about it."""
    reason = evicted.get("reason")
    if reason == "Preempted":
        said = (conditions.get("Preempted") or {}).get("message") or evicted.get("message") or ""
        due = re.search(r"due to ([^;]+)", said)
        return f"preempted by Kueue ({due.group(1) if due else 'for a workload of higher priority'})", []
    if reason == "PodsReadyTimeout":
        count = ((workload.get("status") or {}).get("requeueState") or {}).get("count")
        hint = "its pods did not all start within Kueue's waitForPodsReady timeout: their events say why"
        return f"evicted by Kueue: its pods were not ready in time{f' (eviction {count})' if count else ''}", [hint]
    return f"evicted by Kueue ({reason}: {one_line(evicted.get('message') or '')})", []


def _deactivated(current: JobStatus, workload: dict[str, Any], evicted: dict[str, Any] | None) -> JobStatus:
    """A deactivated Workload (`spec.active: false`: by an admin, or after too many evictions) is never admitted
    until someone reactivates it, so the job counts as stopped, not pending."""
    why = f" ({one_line(evicted.get('message') or '')})" if evicted else ""
    metadata = workload.get("metadata") or {}
    patch = """'{"spec":{"active":true}}'"""
    return replace(
        current,
        state=JobState.STOPPED,
        message=f"deactivated in Kueue{why}: it will not run until reactivated",
        why_pending=[
            f"to run it: kubectl -n {metadata.get('namespace')} patch workload {metadata.get('name')} "
            f"--type merge -p {patch}; or cancel the job"
        ],
    )


def _noun(resource: str) -> str:
    return _NOUNS.get(resource, resource)


def _quantity(text: str) -> Decimal:
    from kubernetes.utils.quantity import parse_quantity

    return parse_quantity(text)


def _amount(resource: str, value: Decimal) -> str:
    """A quantity as a person reads it: memory in binary units, the rest as plain numbers ("0.5" CPU)."""
    units = (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20)) if resource == "memory" else ()
    unit, size = next(((unit, size) for unit, size in units if value >= size), ("", 1))
    return f"{(value / size).quantize(Decimal('0.01')).normalize():f}{unit}"
