"""Why a RayJob is pending, in a few lines a user can act on.

KubeRay's own status only says "Initializing" while the real cause sits elsewhere: on the pods (a `PodScheduled`
condition that is False, a container waiting on its image or a Secret) and in the namespace's Warning events (a
ResourceQuota that refused the pods, so no pod exists to carry a condition). `explain_pending` reads those objects as
the API server returns them (camelCase JSON), keeps what concerns this job, and says what to do where the cause is
clear. It is pure, so every case is tested on recorded objects without a cluster.

The same reading says why a job did not start at all: once a RayJob's cluster has not run for
`preRunningDeadlineSeconds`, KubeRay fails it (status.reason PreRunningDeadlineExceeded) and deletes the cluster, at
once to retry or `ttlSecondsAfterFinished` later. Its pods may then be gone, but the events about them outlive them
(the API server keeps an event an hour after its last occurrence, kube-apiserver's --event-ttl), so the events of
the cluster's pods count whether or not the pod is still there. Once those expired too, the RayJob still holds the
RayCluster status KubeRay last copied into it, which says whether the head's container was stuck.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_CAUSES = 2  # with the hint line, at most three lines under the status message
MAX_MESSAGE = 400  # an image pull error can run to a page; its start names the image and the registry's answer
# KubeRay's `status.reason` for a job whose cluster did not run `spec.preRunningDeadlineSeconds` after it started it
# (ray-operator/controllers/ray/rayjob_controller.go v1.6.2 and v1.7.0, checkPreRunningDeadlineAndUpdateStatusIfNeeded).
# Unlike DeadlineExceeded it is retried under backoffLimit (checkBackoffLimitAndUpdateStatusIfNeeded), each attempt on
# a new RayCluster.
NOT_STARTED = "PreRunningDeadlineExceeded"
NOTHING_LEFT = "its pods and events no longer say why (Kubernetes keeps events for an hour)"
# KubeRay names a pod after its cluster (and worker group), cut to 50 characters, then "-head-"/"-worker-" and 5
# random ones (ray-operator/controllers/ray/utils/util.go v1.6.2, PodName).
_POD_PREFIX_LENGTH = 50

# Waiting reasons that keep a container from ever starting; others (ContainerCreating, PodInitializing) pass.
STUCK_REASONS = (
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CrashLoopBackOff",
)

# What to do, by what the scheduler, the kubelet or a controller said. The control plane's taint is left out on
# purpose: the scheduler lists it for every pod on a cluster with a tainted control plane, and tolerating it is wrong.
HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"Insufficient nvidia\.com/gpu"),
        "no node has a free nvidia.com/gpu: add GPU nodes or lower resources.gpus_per_worker",
    ),
    (
        re.compile(r"untolerated taint \{(?!node-role\.kubernetes\.io/)"),
        "nodes carry a taint the pods do not tolerate: add the toleration in resources.tolerations",
    ),
    (
        re.compile(r"didn't match Pod's node affinity/selector"),
        "no node has the labels of resources.node_selector: fix them, or label the nodes",
    ),
    (re.compile(r"exceeded quota"), "raise the namespace's ResourceQuota or ask for less"),
    (
        re.compile(r"ImagePullBackOff|ErrImagePull|InvalidImageName|[Ff]ailed to pull image"),
        "check the image name (kubernetes.image, else --image) and the registry's pull secret",
    ),
    (
        re.compile(r'secret "[^"]+" not found'),
        'create the Secret (k8s/README.md, "Credentials"), name yours in kubernetes.s3_secret, or use workload '
        "identity (kubernetes.s3_secret: null)",
    ),
)


@dataclass(frozen=True)
class _Finding:
    when: str  # RFC 3339; compared to the second, as events and conditions differ in precision
    subject: str  # "pod NAME", "raycluster NAME", "job NAME"
    label: str  # "unschedulable", a container's waiting reason, an event's reason
    message: str

    @property
    def hints(self) -> list[str]:
        text = f"{self.label} {self.message}"
        return [hint for pattern, hint in HINTS if pattern.search(text)]

    @property
    def cause(self) -> str:
        """What went wrong, whoever reported it: its first hint, else its own words."""
        return next(iter(self.hints), f"{self.label}: {self.message}")


def explain_pending(rayjob: dict[str, Any], pods: list[dict[str, Any]], events: list[dict[str, Any]]) -> list[str]:
    """At most `MAX_CAUSES` lines on what keeps the job's pods from running, newest first, each naming the object
    it concerns, then one line on what to do when the cause is clear; [] when nothing is wrong with them.

    `pods` are the job's pods (RayCluster and submitter Job), `events` the namespace's Warning events; events about
    other objects, or about pods already running (so stale), are ignored, and so are those of pods that are gone
    unless KubeRay gave up on the job before it started (see the module's docstring)."""
    pending = {_name(p) for p in pods if (p.get("status") or {}).get("phase", "Pending") == "Pending"}
    running = {_name(p) for p in pods} - pending
    gave_up = did_not_start(rayjob)
    findings = [f for p in pods for f in _pod_findings(p)]
    about_job = [e for e in events if e.get("type") == "Warning" and _about_job(e, rayjob, pending, running, gave_up)]
    findings += [f for f in map(_event_finding, about_job) if f is not None]
    if gave_up and not findings:
        findings = _head_as_kuberay_saw_it(rayjob)
    findings.sort(key=lambda f: f.when[:19], reverse=True)
    # One report per object and cause (a pod's condition and its FailedScheduling event say the same thing), then
    # one line per cause, naming the newest object and counting the others (four workers short of the same GPUs).
    seen: set[tuple[str, str]] = set()
    by_cause: dict[str, list[_Finding]] = {}
    for finding in findings:
        if (finding.subject, finding.cause) not in seen:
            seen.add((finding.subject, finding.cause))
            by_cause.setdefault(finding.cause, []).append(finding)
    lines: list[str] = []
    hints: list[str] = []
    for newest, *others in list(by_cause.values())[:MAX_CAUSES]:
        more = f" (and {len(others)} more)" if others else ""
        lines.append(f"{newest.subject}{more}: {newest.label}: {newest.message}")
        hints += [hint for hint in newest.hints if hint not in hints]
    if gave_up and not lines:
        return [NOTHING_LEFT]
    return lines + (["; ".join(hints)] if hints else [])


def did_not_start(rayjob: dict[str, Any]) -> bool:
    """Whether KubeRay gave up on the job because its cluster did not run in time (`NOT_STARTED`)."""
    return (rayjob.get("status") or {}).get("reason") == NOT_STARTED


def _pod_findings(pod: dict[str, Any]) -> list[_Finding]:
    """A pod's own word on why it is not running: its scheduling condition and its stuck containers."""
    status, subject = pod.get("status") or {}, f"pod {_name(pod)}"
    created = (pod.get("metadata") or {}).get("creationTimestamp") or ""
    found = [
        _Finding(c.get("lastTransitionTime") or created, subject, "unschedulable", one_line(c.get("message") or ""))
        for c in status.get("conditions") or []
        if c.get("type") == "PodScheduled" and c.get("status") == "False"
    ]
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            found.append(_Finding(created, subject, waiting["reason"], one_line(waiting.get("message") or "")))
    return found


def _head_as_kuberay_saw_it(rayjob: dict[str, Any]) -> list[_Finding]:
    """The head's container stuck, as KubeRay last copied the RayCluster's status into the RayJob (its HeadPodReady
    condition carries the head container's waiting reason: ray-operator/controllers/ray/utils/util.go v1.6.2
    FindHeadPodReadyCondition): what is left once the pods are gone and their events expired."""
    status = rayjob.get("status") or {}
    subject = f"raycluster {status.get('rayClusterName') or _name(rayjob)}"
    return [
        # "containers with unready status: [ray-head]; ray-head: <the waiting message>"
        _Finding(
            c.get("lastTransitionTime") or "", subject, c["reason"], one_line(c.get("message", "").split("; ", 1)[-1])
        )
        for c in (status.get("rayClusterStatus") or {}).get("conditions") or []
        if c.get("type") == "HeadPodReady" and c.get("status") == "False" and c.get("reason") in STUCK_REASONS
    ]


def _about_job(
    event: dict[str, Any], rayjob: dict[str, Any], pending_pods: set[str], running_pods: set[str], gave_up: bool
) -> bool:
    """Whether an event concerns the job: its RayJob, its submitter Job (KubeRay names it after the RayJob), its
    RayCluster, or one of its pods still pending (a running pod's old FailedScheduling is stale); once KubeRay gave
    up on the job, also a pod of its cluster that is gone."""
    involved, job = event.get("involvedObject") or {}, _name(rayjob)
    kind, name = involved.get("kind"), involved.get("name", "")
    # KubeRay records the RayCluster's name in the RayJob's status; before that, it is the RayJob's name, a dash and
    # 5 characters.
    cluster = (rayjob.get("status") or {}).get("rayClusterName")
    if kind == "Pod":
        of_cluster = bool(cluster) and name.startswith(f"{cluster[:_POD_PREFIX_LENGTH]}-")
        return name in pending_pods or (gave_up and of_cluster and name not in running_pods)
    if kind == "RayCluster":
        return name == cluster if cluster else re.fullmatch(rf"{re.escape(job)}-[a-z0-9]{{5}}", name) is not None
    return kind in ("RayJob", "Job") and name == job


def _event_finding(event: dict[str, Any]) -> _Finding | None:
    """An event as a finding; None for the kubelet's bare "Error: ImagePullBackOff", which the pod already says."""
    message, reason = one_line(event.get("message") or ""), event.get("reason") or "Warning"
    if re.fullmatch(r"Error: \w+", message):
        return None
    involved = event.get("involvedObject") or {}
    # Events of the events.k8s.io API (the scheduler's) have no lastTimestamp: a repeated one counts in `series`.
    series = event.get("series") or {}
    times = (
        event.get("lastTimestamp"),
        series.get("lastObservedTime"),
        event.get("eventTime"),
        event.get("firstTimestamp"),
    )
    when = next((t for t in times if t), "")
    subject = f"{str(involved.get('kind', '')).lower()} {involved.get('name', '?')}"
    return _Finding(when, subject, "unschedulable" if reason == "FailedScheduling" else reason, message)


def _name(obj: dict[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("name", "")


def one_line(message: str) -> str:
    """One line: the scheduler's preemption postscript dropped (it repeats the node count), whitespace collapsed."""
    message = " ".join(message.split(" preemption: ")[0].split()).rstrip(".")
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."
