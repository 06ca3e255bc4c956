"""The Pods that KubeRay creates from a rendered RayJob, for scanners (checkov) that judge Pods and know no RayJob.

`pods_of(rayjob)` gives the head pod, one pod per worker group (replicas do not matter: every pod of a group is the
same) and the submitter pod, each built as KubeRay v1.6.2 (the newest CRD in shared/crds) builds it:
- ray-operator/controllers/ray/common/pod.go: `DefaultHeadPodTemplate` (the autoscaler sidecar from
  `BuildAutoscalerContainer` merged with `autoscalerOptions` by `mergeAutoscalerOverrides`, the head's service
  account, autoscaler v2's restart policy, the metrics port), `DefaultWorkerPodTemplate` (the `wait-gcs-ready` init
  container, which copies the Ray container's securityContext, env and volumeMounts), `configureTokenAuth` (the Ray
  token from a Secret when `authOptions.mode` is token), and `BuildPod` (the /dev/shm and /tmp/ray emptyDirs, the
  `ray start` command wrapping, `initLivenessAndReadinessProbe`);
- ray-operator/controllers/ray/common/job.go: `GetSubmitterTemplate` (the RayJob's `submitterPodTemplate` when given,
  else `GetDefaultSubmitterContainer`'s pod) and ray-operator/controllers/ray/rayjob_controller.go:
  `getSubmitterTemplate` / `configureSubmitterContainer` (the command when the template sets none, its env).
Each Pod keeps its template's metadata, so `checkov.io/skipN` annotations written in a template apply to its Pod.
Left out, as no scanner judges them: the values of the environment KubeRay computes (cluster name, node type,
ray start command), the exact `ray job submit` command line, GCS fault tolerance, the head Service, and the random
suffixes of names (here the RayCluster is named after the RayJob, a pod after its role).
"""

from __future__ import annotations

import copy
from typing import Any

SHELL = ["/bin/bash", "-c", "--"]  # utils.GetContainerCommand without ENABLE_LOGIN_SHELL
SUBMITTER_SHELL = ["/bin/bash", "-ce", "--"]  # configureSubmitterContainer: GetContainerCommand(["e"])
DASHBOARD_AGENT_PORT = 52365
METRICS_PORT = 8080
AUTOSCALER_COMMAND = (
    "ray kuberay-autoscaler --cluster-name $(RAY_CLUSTER_NAME) --cluster-namespace $(RAY_CLUSTER_NAMESPACE)"
)
# Ray 2.53 and later answer KubeRay's probes on one HTTP endpoint (supportsUnifiedHealthCheck).
UNIFIED_HEALTH_CHECK_RAY = (2, 53, 0)


def pods_of(rayjob: dict[str, Any]) -> list[dict[str, Any]]:
    """The head pod, one pod per worker group, and (K8sJobMode, the default) the submitter pod of `rayjob`."""
    name, namespace = rayjob["metadata"]["name"], rayjob["metadata"].get("namespace", "default")
    cluster = rayjob["spec"]["rayClusterSpec"]
    mode = rayjob["spec"].get("submissionMode", "K8sJobMode")
    head = head_pod(name, namespace, cluster)
    if mode == "SidecarMode":  # the submitter runs in the head pod (rayjob_controller.go: getSubmitterContainer)
        head["spec"]["containers"].append(submitter_container(default_submitter_container(cluster), cluster, name))
    pods = [head] + [worker_pod(name, namespace, cluster, group) for group in cluster.get("workerGroupSpecs", [])]
    if mode == "K8sJobMode":
        pods.append(submitter_pod(name, namespace, rayjob["spec"]))
    return pods


def pod(name: str, namespace: str, template: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """A Pod of `template` (a PodTemplateSpec, copied), with the labels KubeRay adds under the template's own."""
    template = copy.deepcopy(template)
    metadata = template.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**labels, **metadata.get("labels", {})},
            "annotations": metadata.get("annotations", {}),
        },
        "spec": template["spec"],
    }


def ray_labels(cluster_name: str, node_type: str, group: str) -> dict[str, str]:
    """pod.go labelPod: the labels of every Ray pod (the template's own win, except these three ray.io ones)."""
    return {
        "ray.io/is-ray-node": "yes",
        "ray.io/cluster": cluster_name,
        "ray.io/node-type": node_type,
        "ray.io/group": group,
        "app.kubernetes.io/name": "kuberay",
        "app.kubernetes.io/created-by": "kuberay-operator",
    }


def head_pod(job_name: str, namespace: str, cluster: dict[str, Any]) -> dict[str, Any]:
    group = cluster["headGroupSpec"]
    head = pod(f"{job_name}-head", namespace, group["template"], ray_labels(job_name, "head", "headgroup"))
    spec, ray = head["spec"], head["spec"]["containers"][0]
    autoscaling = bool(cluster.get("enableInTreeAutoscaling"))
    if autoscaling:
        spec["serviceAccountName"] = spec.get("serviceAccountName") or job_name  # GetHeadGroupServiceAccountName
        spec["containers"].append(autoscaler_container(ray["image"], cluster, job_name))
        if (cluster.get("autoscalerOptions") or {}).get("version") == "v2":
            ray.setdefault("env", []).append({"name": "RAY_enable_autoscaler_v2", "value": "true"})
            spec["restartPolicy"] = "Never"
    add_metrics_port(ray)
    token_auth(spec, cluster, job_name)
    build_pod(spec, "head", group.get("rayStartParams", {}), cluster.get("rayVersion", ""))
    if autoscaling:  # the autoscaler writes logs the head reads
        for container in (ray, next(c for c in spec["containers"] if c["name"] == "autoscaler")):
            add_empty_dir(spec, container, "ray-logs", "/tmp/ray", medium="")
    return head


def worker_pod(job_name: str, namespace: str, cluster: dict[str, Any], group: dict[str, Any]) -> dict[str, Any]:
    labels = ray_labels(job_name, "worker", group["groupName"])
    worker = pod(f"{job_name}-{group['groupName']}-worker", namespace, group["template"], labels)
    spec, ray = worker["spec"], worker["spec"]["containers"][0]
    wait_gcs_ready = {
        "name": "wait-gcs-ready",
        "image": ray["image"],
        "command": SHELL,
        "args": ["until ray health-check --address $FQ_RAY_IP:6379; do sleep 5; done"],
        "env": [*copy.deepcopy(ray.get("env", [])), {"name": "FQ_RAY_IP", "value": f"{job_name}-head-svc"}],
        "volumeMounts": copy.deepcopy(ray.get("volumeMounts", [])),
        "resources": {"limits": {"cpu": "200m", "memory": "256Mi"}, "requests": {"cpu": "200m", "memory": "256Mi"}},
    }
    for key in ("imagePullPolicy", "securityContext"):
        if key in ray:
            wait_gcs_ready[key] = copy.deepcopy(ray[key])
    spec.setdefault("initContainers", []).append(wait_gcs_ready)
    add_metrics_port(ray)
    if cluster.get("enableInTreeAutoscaling") and (cluster.get("autoscalerOptions") or {}).get("version") == "v2":
        spec["restartPolicy"] = "Never"
    token_auth(spec, cluster, job_name)
    build_pod(spec, "worker", group.get("rayStartParams", {}), cluster.get("rayVersion", ""))
    return worker


def autoscaler_container(image: str, cluster: dict[str, Any], cluster_name: str) -> dict[str, Any]:
    """pod.go BuildAutoscalerContainer, then mergeAutoscalerOverrides with the cluster's autoscalerOptions."""
    container: dict[str, Any] = {
        "name": "autoscaler",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "env": [
            {"name": "RAY_CLUSTER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['ray.io/cluster']"}}},
            {"name": "RAY_CLUSTER_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "RAY_HEAD_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "KUBERAY_CRD_VER", "value": "v1"},
        ],
        "command": SHELL,
        "args": [AUTOSCALER_COMMAND],
        "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}, "requests": {"cpu": "500m", "memory": "512Mi"}},
    }
    if token_auth_enabled(cluster):
        set_token_auth(container, cluster, cluster_name)
    options = copy.deepcopy(cluster.get("autoscalerOptions") or {})
    for key in ("resources", "image", "imagePullPolicy", "securityContext"):  # replaced
        if key in options:
            container[key] = options[key]
    for key in ("env", "envFrom", "volumeMounts"):  # appended
        if options.get(key):
            container[key] = container.get(key, []) + options[key]
    return container


def token_auth_enabled(cluster: dict[str, Any]) -> bool:
    return (cluster.get("authOptions") or {}).get("mode") == "token"


def set_token_auth(container: dict[str, Any], cluster: dict[str, Any], cluster_name: str) -> None:
    """pod.go SetContainerTokenAuthEnvVars: the auth mode, and the token from a Secret or, with Kubernetes token
    auth, the projected service account token mounted (env a container sets is kept)."""
    options = cluster["authOptions"]
    env: list[dict[str, Any]] = [{"name": "RAY_AUTH_MODE", "value": "token"}]
    if options.get("enableK8sTokenAuth"):
        env.append({"name": "RAY_ENABLE_K8S_TOKEN_AUTH", "value": "true"})
        mount = {"name": "ray-token", "mountPath": "/var/run/secrets/ray.io/serviceaccount", "readOnly": True}
        container.setdefault("volumeMounts", []).append(mount)
    else:
        secret = {"name": options.get("secretName") or cluster_name, "key": "auth_token"}
        env.append({"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": secret}})
    names = {variable["name"] for variable in container.get("env", [])}
    container.setdefault("env", []).extend(variable for variable in env if variable["name"] not in names)


def add_token_volume(spec: dict[str, Any], cluster: dict[str, Any]) -> None:
    """pod.go AddRayTokenVolume, with Kubernetes token auth."""
    if (cluster.get("authOptions") or {}).get("enableK8sTokenAuth"):
        projected = {"projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}
        spec.setdefault("volumes", []).append({"name": "ray-token", **projected})


def token_auth(spec: dict[str, Any], cluster: dict[str, Any], cluster_name: str) -> None:
    """pod.go configureTokenAuth: the Ray container and the wait-gcs-ready init container get the token."""
    if not token_auth_enabled(cluster):
        return
    set_token_auth(spec["containers"][0], cluster, cluster_name)
    for init in spec.get("initContainers", []):
        if init["name"] == "wait-gcs-ready":
            set_token_auth(init, cluster, cluster_name)
    add_token_volume(spec, cluster)


def add_metrics_port(ray: dict[str, Any]) -> None:
    if not any(port.get("name") == "metrics" for port in ray.get("ports", [])):
        ray.setdefault("ports", []).append({"name": "metrics", "containerPort": METRICS_PORT})


def build_pod(spec: dict[str, Any], node_type: str, start_params: dict[str, str], ray_version: str) -> None:
    """pod.go BuildPod: object store memory on /dev/shm, the `ray start` command, the Ray container's probes."""
    ray = spec["containers"][0]
    if "plasma-directory" not in start_params:
        memory = {**ray.get("resources", {}).get("requests", {}), **ray.get("resources", {}).get("limits", {})}
        add_empty_dir(spec, ray, "shared-mem", "/dev/shm", medium="Memory", size_limit=memory.get("memory"))
    command = " ".join(ray.get("command", []) + ray.get("args", []))
    if "ray start" not in command:
        start = f"ulimit -n 65536; ray start{' --head' if node_type == 'head' else ''} --block"
        ray["command"], ray["args"] = SHELL, [f"{command} && {start}" if command else start]
    probes(ray, node_type, ray_version)


def add_empty_dir(spec: dict[str, Any], container: dict[str, Any], name: str, path: str, **kind: Any) -> None:
    """pod.go addEmptyDir: mount an emptyDir at `path` unless the container already mounts something there."""
    if any(mount["mountPath"] == path for mount in container.get("volumeMounts", [])):
        return
    if not any(volume["name"] == name for volume in spec.get("volumes", [])):
        empty_dir = {"medium": kind["medium"]} if kind["medium"] else {}
        if kind.get("size_limit"):
            empty_dir["sizeLimit"] = kind["size_limit"]
        spec.setdefault("volumes", []).append({"name": name, "emptyDir": empty_dir})
    container.setdefault("volumeMounts", []).append({"name": name, "mountPath": path})


def probes(ray: dict[str, Any], node_type: str, ray_version: str) -> None:
    """pod.go initLivenessAndReadinessProbe: an HTTP health check on Ray 2.53+, else wget in bash; a probe the
    template sets is kept."""
    try:
        unified = tuple(int(part) for part in ray_version.split(".")[:3]) >= UNIFIED_HEALTH_CHECK_RAY
    except ValueError:
        unified = False
    paths = ["api/local_raylet_healthz"] + (["api/gcs_healthz"] if node_type == "head" else [])
    check = (
        {"httpGet": {"path": "/api/healthz", "port": DASHBOARD_AGENT_PORT}}
        if unified
        else {"exec": {"command": ["bash", "-c", " && ".join(f"wget -q -O- localhost/{p}" for p in paths)]}}
    )
    timeout = 5 if node_type == "head" else 2
    timing = {"timeoutSeconds": timeout, "periodSeconds": 5, "successThreshold": 1}
    ray.setdefault("livenessProbe", {"initialDelaySeconds": 30, "failureThreshold": 120, **timing, **check})
    ray.setdefault("readinessProbe", {"initialDelaySeconds": 10, "failureThreshold": 10, **timing, **check})


def default_submitter_container(cluster: dict[str, Any]) -> dict[str, Any]:
    """job.go GetDefaultSubmitterContainer: the head's image, 500m/200Mi requested, 1/1Gi at most."""
    return {
        "name": "ray-job-submitter",
        "image": cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["image"],
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m", "memory": "200Mi"}},
    }


def submitter_container(container: dict[str, Any], cluster: dict[str, Any], cluster_name: str) -> dict[str, Any]:
    """rayjob_controller.go configureSubmitterContainer: the `ray job submit` command where none is set, its env."""
    if not container.get("command"):
        container["command"] = SUBMITTER_SHELL
        container["args"] = ["ray job submit --address http://$RAY_DASHBOARD_ADDRESS --no-wait -- ..."]
    container.setdefault("env", []).extend(
        [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "RAY_DASHBOARD_ADDRESS", "value": f"{cluster_name}-head-svc:8265"},
            {"name": "RAY_JOB_SUBMISSION_ID", "value": cluster_name},
        ]
    )
    if token_auth_enabled(cluster):
        set_token_auth(container, cluster, cluster_name)
    return container


def submitter_pod(job_name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The pod of the submitter Job: job.go GetSubmitterTemplate, then rayjob_controller.go getSubmitterTemplate."""
    cluster = spec["rayClusterSpec"]
    template = spec.get("submitterPodTemplate") or {
        "spec": {"containers": [default_submitter_container(cluster)], "restartPolicy": "Never"}
    }
    # The Job is named after the RayJob (createNewK8sJob); Kubernetes' Job controller labels its pods with the name.
    job_labels = {"batch.kubernetes.io/job-name": job_name, "job-name": job_name}
    submitter = pod(f"{job_name}-submitter", namespace, template, job_labels)
    submitter_container(submitter["spec"]["containers"][0], cluster, job_name)
    add_token_volume(submitter["spec"], cluster)
    return submitter
