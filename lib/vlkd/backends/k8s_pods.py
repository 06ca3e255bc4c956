"""The pod templates of a job's RayJob: its head, its worker groups and KubeRay's submitter, as a restricted
namespace admits them and a security review expects them (`vlkd.backends.k8s_render` assembles the RayJob).

Every pod, stated once:
- Runs as the Ray image's user (uid 1000, group `users`), non-root, with no privilege escalation, every capability
  dropped and the runtime's default seccomp profile: Pod Security Admission's `restricted` level, which the namespace
  enforces (k8s/base/namespace.yaml). KubeRay copies the ray container's securityContext into the init container
  it injects into workers (ray-operator/controllers/ray/common/pod.go, `wait-gcs-ready`); the autoscaler's comes
  from `autoscalerOptions.securityContext`, the submitter's from `submitterPodTemplate`.
- Mounts no ServiceAccount token: no vlkd process talks to the Kubernetes API. The exception is the autoscaler of an
  autoscaled head (`autoscaler_volume`).
- Requests and limits CPU and memory (a worker without `resources.memory` gets MEMORY_PER_CPU per CPU), and requests
  local disk (`kubernetes.ephemeral_storage`). No disk limit: the kubelet evicts a pod past its limit, and Ray spills
  objects to disk under load.
- Pulls its image Always when it is named by tag, so a re-pushed tag is never run stale from a node's cache; by
  digest, IfNotPresent (`kubernetes.image_pull_policy` overrides both).
- Carries the job's labels (the NetworkPolicy of k8s/base admits pods by them), `kubernetes.pod_annotations`, and the
  checkov skips that apply to it (`SCANNER_SKIPS`, listed in k8s/README.md).
"""

from __future__ import annotations

import copy
import math
from typing import Any

from vlkd.specs import KubernetesSpec, Resources

GPU_RESOURCE = "nvidia.com/gpu"
STORE_CONFIGMAP = "vlkd-store"  # k8s/base/store-configmap.yaml: settings every vlkd container reads
HEAD_CONTAINER, WORKER_CONTAINER = "ray-head", "ray-worker"
SUBMITTER_CONTAINER = "ray-job-submitter"  # the name of KubeRay's own submitter container, kept for `vlkd logs`
RAY_USER, RAY_GROUP = 1000, 100  # the rayproject/ray image's `ray` user and its group `users`
MEMORY_PER_CPU = 4 * 2**30  # the general-purpose instances' ratio (m-family, n2-standard): 4 GiB per vCPU
# KubeRay's defaults for the containers it adds (common/job.go GetDefaultSubmitterContainer, common/pod.go
# BuildAutoscalerContainer), with limits equal to requests: the scheduler then reserves what they may use.
SUBMITTER_RESOURCES = {"cpu": "500m", "memory": "512Mi"}
AUTOSCALER_RESOURCES = {"cpu": "500m", "memory": "512Mi"}
# Where Ray's autoscaler reads its credentials (python/ray/autoscaler/_private/kuberay/node_provider.py,
# IN_CLUSTER_TOKEN_PATH; it rereads the token every minute, so the kubelet's rotation reaches it).
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
AUTOSCALER_TOKEN_VOLUME = "autoscaler-token"
TOKEN_SECONDS = 3600

POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": RAY_USER,
    "runAsGroup": RAY_GROUP,
    "fsGroup": RAY_GROUP,  # makes the projected token readable by the autoscaler, which runs as RAY_USER
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

# checkov's checks that a vlkd pod fails on purpose, with the reason the scanner reports. Keys: which pods they
# apply to (see `_skips`). k8s/README.md lists them; tests/test_checkov.py checks that the lists agree.
SCANNER_SKIPS = {
    "every pod": {
        "CKV_K8S_22": "Ray writes its session under /tmp and caches under HOME, so the root filesystem stays writable",
        "CKV_K8S_40": "the Ray image's Python environment belongs to its user, uid 1000",
        "CKV_K8S_35": "KubeRay passes Ray's auth token, and boto3 reads static keys, as environment variables",
    },
    "by tag": {"CKV_K8S_43": "the image is named by tag in one place (k8s/base images:); pin a digest there"},
    "not always pulled": {
        "CKV_K8S_15": "pulled only when missing: by digest it cannot be stale, and kind has no registry to pull from"
    },
    "no probes": {
        "CKV_K8S_8": "KubeRay probes the Ray containers; its submitter and autoscaler containers have no endpoint",
        "CKV_K8S_9": "KubeRay probes the Ray containers; its submitter and autoscaler containers have no endpoint",
    },
}


def pinned_by_digest(image: str) -> bool:
    return "@sha256:" in image


def cpu_quantity(cpus: float) -> str:
    return str(int(cpus)) if cpus == int(cpus) else f"{round(cpus * 1000)}m"


class PodTemplates:
    """The pod templates of one job, sharing its labels, image, environment, identity, priority and annotations."""

    def __init__(self, labels: dict[str, str], image: str, env: list[dict[str, Any]], k8s: KubernetesSpec) -> None:
        self.labels, self.image, self.env, self.k8s = labels, image, env, k8s
        default_policy = "IfNotPresent" if pinned_by_digest(image) else "Always"
        self.pull_policy = k8s.image_pull_policy or default_policy

    def head(
        self, cpus: float, memory: str | None, gpus: float = 0, placement: Resources | None = None, *, autoscaled: bool
    ) -> dict[str, Any]:
        """The head's template; an autoscaled head runs as the autoscaler's ServiceAccount, whose token only the
        autoscaler container mounts (`autoscaler_volume`)."""
        account = self.k8s.autoscaler_service_account if autoscaled else self.k8s.service_account
        template = self._template(HEAD_CONTAINER, cpus, memory, gpus, placement, account, probed=not autoscaled)
        if autoscaled:
            template["spec"]["volumes"] = [autoscaler_volume()]
        return template

    def worker(self, cpus: float, memory: str | None, gpus: float, placement: Resources) -> dict[str, Any]:
        return self._template(WORKER_CONTAINER, cpus, memory, gpus, placement, self.k8s.service_account, probed=True)

    def submitter(self) -> dict[str, Any]:
        """KubeRay's submitter pod (`ray job submit`, then following the job's log), as KubeRay would make it
        (common/job.go GetSubmitterTemplate) but restricted, labelled, and under a ServiceAccount of its own. The
        command is KubeRay's: it fills it in when the container has none."""
        container = {
            "name": SUBMITTER_CONTAINER,
            "image": self.image,
            "imagePullPolicy": self.pull_policy,
            "resources": {"requests": dict(SUBMITTER_RESOURCES), "limits": dict(SUBMITTER_RESOURCES)},
            "securityContext": copy.deepcopy(CONTAINER_SECURITY),
        }
        spec = self._pod_spec(self.k8s.submitter_service_account, [container], None)
        spec["restartPolicy"] = "Never"  # a Job's pod: the Job's backoffLimit retries it
        return {"metadata": self._metadata(probed=False), "spec": spec}

    def autoscaler_options(self) -> dict[str, Any]:
        """The autoscaler sidecar's container settings (merged by common/pod.go BuildAutoscalerContainer): bounded,
        restricted, pulled like the rest, and the only container with the API token."""
        return {
            "imagePullPolicy": self.pull_policy,
            "resources": {"requests": dict(AUTOSCALER_RESOURCES), "limits": dict(AUTOSCALER_RESOURCES)},
            "securityContext": copy.deepcopy(CONTAINER_SECURITY),
            "volumeMounts": [{"name": AUTOSCALER_TOKEN_VOLUME, "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True}],
        }

    def _template(
        self,
        name: str,
        cpus: float,
        memory: str | None,
        gpus: float,
        placement: Resources | None,
        account: str,
        probed: bool,
    ) -> dict[str, Any]:
        memory = memory or _memory_for(cpus)
        amounts = {"cpu": cpu_quantity(cpus), "memory": memory}
        limits = {**amounts, GPU_RESOURCE: math.ceil(gpus)} if gpus > 0 else dict(amounts)
        container = {
            "name": name,
            "image": self.image,
            "imagePullPolicy": self.pull_policy,
            "env": copy.deepcopy(self.env),  # one copy per container: no YAML anchors in what we render
            "envFrom": [{"configMapRef": {"name": STORE_CONFIGMAP, "optional": True}}],
            "resources": {"requests": {**amounts, "ephemeral-storage": self.k8s.ephemeral_storage}, "limits": limits},
            "securityContext": copy.deepcopy(CONTAINER_SECURITY),
        }
        spec = self._pod_spec(account, [container], placement)
        return {"metadata": self._metadata(probed), "spec": spec}

    def _pod_spec(self, account: str, containers: list[dict], placement: Resources | None) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "serviceAccountName": account,
            "automountServiceAccountToken": False,
            "securityContext": copy.deepcopy(POD_SECURITY),
            "containers": containers,
        }
        if self.k8s.image_pull_secrets:
            spec["imagePullSecrets"] = [{"name": name} for name in self.k8s.image_pull_secrets]
        if self.k8s.priority_class:
            spec["priorityClassName"] = self.k8s.priority_class
        if placement is not None and placement.node_selector:
            spec["nodeSelector"] = dict(placement.node_selector)
        if placement is not None and placement.tolerations:
            spec["tolerations"] = [t.model_dump(exclude_none=True) for t in placement.tolerations]
        return spec

    def _metadata(self, probed: bool) -> dict[str, Any]:
        annotations = dict(self.k8s.pod_annotations)
        for number, (check, reason) in enumerate(sorted(self._skips(probed).items()), start=1):
            annotations[f"checkov.io/skip{number}"] = f"{check}={reason}"
        return {"labels": dict(self.labels), "annotations": annotations}

    def _skips(self, probed: bool) -> dict[str, str]:
        skips = dict(SCANNER_SKIPS["every pod"])
        if not pinned_by_digest(self.image):
            skips.update(SCANNER_SKIPS["by tag"])
        if self.pull_policy != "Always":
            skips.update(SCANNER_SKIPS["not always pulled"])
        if not probed:
            skips.update(SCANNER_SKIPS["no probes"])
        return skips


def autoscaler_volume() -> dict[str, Any]:
    """What Kubernetes mounts for a ServiceAccount token (a bound token, the cluster's CA, the namespace), as a
    volume of its own: the pod mounts no token (`automountServiceAccountToken: false`), and only the autoscaler
    container mounts this, so the Ray processes that run user code on the head hold no API credentials."""
    return {
        "name": AUTOSCALER_TOKEN_VOLUME,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_SECONDS}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ]
        },
    }


def _memory_for(cpus: float) -> str:
    mebibytes = math.ceil(cpus * MEMORY_PER_CPU / 2**20)
    return f"{mebibytes // 1024}Gi" if mebibytes % 1024 == 0 else f"{mebibytes}Mi"
