"""The k8s backend and the k8s/ tree.

- Rendered RayJobs validate against KubeRay's RayJob CRD as the API server would: the CRD's structural schema, with
  unknown fields rejected (what `fieldValidation=Strict` does) and its list keys unique.
- Built-in objects of the kustomize output round-trip through the official client's models. `from_dict` enforces
  required fields and types; re-serialising must give back the input exactly, so no unknown field is dropped.
- Committed RayJob templates equal a fresh rendering (golden files).
- The API requests are checked on the wire: a local HTTP server replays recorded Kubernetes API responses under a
  kubeconfig written by the test, and records every request.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from prerequisites import require

from vlkd.backends.base import JobDescription, JobState, JobStatus
from vlkd.backends.k8s import KubernetesBackend, rayjob_status
from vlkd.backends.k8s_pending import explain_pending
from vlkd.backends.k8s_render import rayjob_name, render_rayjob
from vlkd.errors import VlkdError
from vlkd.specs import load_spec

ROOT = Path(__file__).resolve().parent.parent
CRD = ROOT.parent / "shared" / "crds" / "ray.io_rayjobs.yaml"
STAGES = ("preprocess", "text", "teacher", "distill", "eval")
OVERLAYS = ("dev", "gpu")
BASE = ROOT / "k8s" / "base" / "kustomization.yaml"
JOB_ID = "vlkd-teacher-20261129-041200-ab12"


@pytest.fixture
def kubectl() -> None:
    require(shutil.which("kubectl") is not None, "kubectl (with kustomize) is not on PATH")


def paper_job(stage: str, job_id: str | None = None, env: dict[str, str] | None = None) -> JobDescription:
    spec = load_spec(ROOT / "examples" / "paper" / f"{stage}.yaml", stage)
    return JobDescription(
        job_id or f"vlkd-{stage}-20261129-041200-ab12", stage, spec, f"s3://team-bucket/vlkd/jobs/{stage}/spec.yaml",
        "s3://team-bucket/vlkd", "ghcr.io/vlkd/vlkd:0.1.0", env or {},
    )  # fmt: skip


def with_resources(job: JobDescription, **resources: Any) -> JobDescription:
    spec = job.spec.model_copy(update={"resources": job.spec.resources.model_copy(update=resources)})
    return JobDescription(job.job_id, job.stage, spec, job.spec_uri, job.store_uri, job.image, job.env)


@functools.cache
def generate_module() -> Any:
    """k8s/generate.py, which renders the templates and the test goldens."""
    loader = importlib.util.spec_from_file_location("k8s_generate", ROOT / "k8s" / "generate.py")
    generate = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(generate)
    return generate


# --- The CRD as a JSON Schema --------------------------------------------------------------------------------------


def crd_schema(path: Path, version: str, rendered: bool = True) -> dict[str, Any]:
    """The JSON Schema of `version` of the CRD at `path`, as the API server applies it (`_as_api_server`)."""
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 25,000 lines
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return _as_api_server(served["schema"]["openAPIV3Schema"], rendered)


def _as_api_server(node: Any, rendered: bool) -> Any:
    """The CRD schema with what the API server enforces beyond plain JSON Schema made explicit: unknown fields are
    errors (strict field validation) unless `x-kubernetes-preserve-unknown-fields`. CEL rules
    (`x-kubernetes-validations`) cannot be evaluated here. In what vlkd renders, a field guarded by one must not
    appear at all (it validates against `False`): rendering one means reviewing it by hand and extending this test.
    In objects a controller wrote (`rendered=False`, e.g. a recorded Workload), the rules are skipped. Int-or-string
    fields already carry `anyOf: [integer, string]`; `format` (int32...) and `default` are not checked."""
    if isinstance(node, list):
        return [_as_api_server(n, rendered) for n in node]
    if not isinstance(node, dict):
        return node
    if "x-kubernetes-validations" in node and rendered:
        return False
    schema = {k: _as_api_server(v, rendered) for k, v in node.items() if k != "x-kubernetes-validations"}
    strict = "additionalProperties" not in schema and not node.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in schema and strict:
        schema["additionalProperties"] = False
    return schema


def _unique_list_keys(validator: Any, keys: list[str], instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    """`x-kubernetes-list-type: map`: no two items share their key fields (e.g. two env vars of one name)."""
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "array"):
        seen = [tuple(item.get(k) for k in keys) for item in instance if isinstance(item, dict)]
        if len(seen) != len(set(seen)):
            yield ValidationError(f"duplicate {keys} in {instance!r}")


def schema_validator(schema: dict[str, Any]) -> Any:
    """A JSON Schema validator that also knows `x-kubernetes-list-map-keys`."""
    from jsonschema import Draft7Validator, validators

    return validators.extend(Draft7Validator, {"x-kubernetes-list-map-keys": _unique_list_keys})(schema)


@pytest.fixture(scope="module")
def crd_validator() -> Any:
    require(CRD.exists(), f"the KubeRay RayJob CRD is not at {CRD} (shared/crds/, next to the repository)")
    return schema_validator(crd_schema(CRD, "v1"))


def crd_errors(validator: Any, rayjob: dict[str, Any]) -> list[str]:
    problems = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(rayjob)]
    metadata = rayjob["metadata"]
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,45}[a-z0-9])?", metadata["name"]):
        problems.append(f"metadata.name {metadata['name']!r}: KubeRay needs a DNS-1035 label of at most 47 characters")
    problems += metadata_problems(metadata)
    for key, value in metadata.get("labels", {}).items():
        if not re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", value) or len(value) > 63:
            problems.append(f"label {key}={value!r} is not a valid label value")
    return problems


# --- Built-in objects against Kubernetes' own schemas -----------------------------------------------------------------

# The Kubernetes versions vlkd's manifests are checked against: the oldest and newest minor versions that KubeRay and
# the managed clouds (EKS, GKE, AKS) support as of this writing, and one between.
KUBERNETES_VERSIONS = ("1.30", "1.33", "1.36")


def kubernetes_problems(obj: dict[str, Any], version: str) -> list[str]:
    """Why `obj` is not a valid object of Kubernetes `version` (kubernetes-validate's strict schemas: a missing
    required field, a wrong type, or a field the API does not know)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path)) or '.'}: {exc.message}"]
    return []


def metadata_problems(metadata: dict[str, Any]) -> list[str]:
    """Why `metadata` is not a valid ObjectMeta: a custom resource's metadata is the same type as a built-in
    object's, so it is checked as a ConfigMap's."""
    holder = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}
    return kubernetes_problems(holder, KUBERNETES_VERSIONS[-1])


@functools.cache
def kustomize(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def rayjobs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["labels"]["vlkd.io/stage"]: o for o in objects if o["kind"] == "RayJob"}


def worker_pod(rayjob: dict[str, Any]) -> dict[str, Any]:
    (group,) = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    return group["template"]["spec"]


def containers(rayjob: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def base_image() -> str:
    (image,) = yaml.safe_load(BASE.read_text())["images"]
    return f"{image['newName']}:{image['newTag']}"


# --- Rendering -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_renders_a_rayjob_the_crd_accepts(stage, crd_validator):
    rayjob = render_rayjob(paper_job(stage), "vlkd")
    assert crd_errors(crd_validator, rayjob) == []
    assert rayjob["spec"]["entrypoint"] == paper_job(stage).entrypoint_line
    assert {c["image"] for c in containers(rayjob)} == {"ghcr.io/vlkd/vlkd:0.1.0"}


def test_workers_are_sized_from_the_spec_resources(crd_validator):
    rayjob = render_rayjob(with_resources(paper_job("teacher"), gpus_per_worker=0.5, cpus_per_worker=1.5), "vlkd")
    (group,) = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert group["groupName"] == "gpu1-cpu1500m"  # named after the shape of its pods
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (4, 4, 4)
    resources = group["template"]["spec"]["containers"][0]["resources"]
    # One more CPU for the driver's tasks (the head offers Ray none), and a fraction of a GPU is a whole one.
    assert resources == {
        "requests": {"cpu": "2500m", "memory": "48Gi", "ephemeral-storage": "20Gi"},
        "limits": {"cpu": "2500m", "memory": "48Gi", "nvidia.com/gpu": 1},
    }
    assert crd_errors(crd_validator, rayjob) == []


def test_in_process_training_gets_no_worker_group_and_a_head_with_the_workers_gpus(crd_validator):
    from vlkd.specs import Toleration

    gpu_taint = Toleration(key="nvidia.com/gpu", effect="NoSchedule")
    job = with_resources(
        paper_job("teacher"), num_workers=0, node_selector={"gpu": "a100"}, tolerations=[gpu_taint], memory="4Gi"
    )
    rayjob = render_rayjob(job, "vlkd")
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert "workerGroupSpecs" not in cluster
    head = cluster["headGroupSpec"]["template"]["spec"]
    # The worker's 8 CPUs and the driver's 1 for its tasks: the head is the only node, and offers Ray its CPUs.
    assert head["containers"][0]["resources"]["limits"] == {"cpu": "9", "memory": "8Gi", "nvidia.com/gpu": 1}
    assert "rayStartParams" not in cluster["headGroupSpec"]
    assert head["nodeSelector"] == {"gpu": "a100"}
    assert head["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert crd_errors(crd_validator, rayjob) == []


def test_placement_and_lifetime_come_from_the_spec(crd_validator):
    job = with_resources(paper_job("distill"), node_selector={"pool": "gpu"})
    kubernetes = job.spec.kubernetes.model_copy(update={"active_deadline_seconds": 86400, "backoff_limit": 2})
    job.spec = job.spec.model_copy(update={"kubernetes": kubernetes})
    spec = render_rayjob(job, "vlkd")["spec"]
    assert (spec["submissionMode"], spec["shutdownAfterJobFinishes"]) == ("K8sJobMode", True)
    assert (spec["ttlSecondsAfterFinished"], spec["activeDeadlineSeconds"], spec["backoffLimit"]) == (60, 86400, 2)
    assert worker_pod(render_rayjob(job, "vlkd"))["nodeSelector"] == {"pool": "gpu"}
    assert "activeDeadlineSeconds" not in render_rayjob(paper_job("distill"), "vlkd")["spec"]


def with_backoff_limit(job: JobDescription, backoff_limit: int) -> JobDescription:
    kubernetes = job.spec.kubernetes.model_copy(update={"backoff_limit": backoff_limit})
    return JobDescription(
        job.job_id, job.stage, job.spec.model_copy(update={"kubernetes": kubernetes}), job.spec_uri, job.store_uri,
        job.image, job.env,
    )  # fmt: skip


def stage_and_pipeline_jobs() -> list[JobDescription]:
    tiny = yaml.safe_load((ROOT / "examples" / "tiny" / "pipeline.yaml").read_text())
    return [paper_job("teacher", JOB_ID), generate_module().pipeline_job(tiny)]


@pytest.mark.parametrize("job", stage_and_pipeline_jobs(), ids=["stage", "pipeline"])
def test_a_retry_reruns_the_same_job_id_so_it_resumes(job):
    """KubeRay retries a failed RayJob (`backoffLimit`) on a new RayCluster from the same spec: whatever an attempt
    needs to resume must be in the spec, and nothing in it may tie it to one attempt."""
    rayjob = render_rayjob(with_backoff_limit(job, 2), "vlkd")
    spec = rayjob["spec"]

    assert spec["backoffLimit"] == 2
    argv = shlex.split(spec["entrypoint"])
    assert argv[argv.index("--job-id") + 1] == job.job_id  # checkpoints and run caches are keyed by it
    assert argv[argv.index("--spec") + 1] == job.spec_uri
    # Ray's submission id: taken only on the attempt's own cluster, and each attempt gets a new one.
    assert spec["jobId"] == job.job_id
    assert "clusterSelector" not in spec  # a cluster of its own, which KubeRay replaces and names per attempt
    assert render_rayjob(with_backoff_limit(job, 2), "vlkd") == rayjob  # nothing drawn at render time


def test_the_rayjob_is_labelled_and_annotated_with_its_job():
    rayjob = render_rayjob(paper_job("teacher", JOB_ID), "team-a")
    metadata = rayjob["metadata"]
    assert (metadata["name"], metadata["namespace"]) == (JOB_ID, "team-a")
    labels = {"app.kubernetes.io/managed-by": "vlkd", "vlkd.io/job-id": JOB_ID, "vlkd.io/stage": "teacher"}
    assert metadata["labels"] == labels
    assert metadata["annotations"]["vlkd.io/spec-uri"] == "s3://team-bucket/vlkd/jobs/teacher/spec.yaml"
    assert metadata["annotations"]["vlkd.io/job-id"] == JOB_ID
    cluster = rayjob["spec"]["rayClusterSpec"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        assert group["template"]["metadata"]["labels"] == labels  # so pods are found by job
        assert group["template"]["spec"]["serviceAccountName"] == "vlkd-job"


def test_every_process_of_a_job_on_a_cluster_gets_the_job_settings_with_its_own_env_over_them():
    """Ray workers on a cluster do not get the driver's environment: the settings `job_main` makes for itself
    (no progress bars in the log, each worker's lines kept) travel with the job, to every pod and Ray worker."""
    from vlkd.backends.ray import RayBackend
    from vlkd.runtime import JOB_ENV

    job = paper_job("preprocess", env={"AWS_ENDPOINT_URL": "http://minio:9000", "RAY_DEDUP_LOGS": "1"})
    wanted = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "RAY_DEDUP_LOGS": "1", "AWS_ENDPOINT_URL": "http://minio:9000"}
    assert JOB_ENV["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and job.environment == wanted
    for container in containers(render_rayjob(job, "vlkd")):
        plain = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        assert plain == wanted, container["name"]
    assert RayBackend("http://127.0.0.1:8265").request(job)["runtime_env"] == {"env_vars": wanted}


def test_s3_credentials_are_referenced_from_the_secret_never_inlined():
    rayjob = render_rayjob(paper_job("text", env={"AWS_ENDPOINT_URL": "http://minio:9000"}), "vlkd")
    for container in containers(rayjob):
        env = {e["name"]: e for e in container["env"]}
        assert env["AWS_ENDPOINT_URL"] == {"name": "AWS_ENDPOINT_URL", "value": "http://minio:9000"}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key] == {"name": key, "valueFrom": {"secretKeyRef": {"name": "vlkd-s3", "key": key}}}
        assert container["envFrom"] == [{"configMapRef": {"name": "vlkd-store", "optional": True}}]


def test_a_credential_in_the_job_environment_is_refused():
    with pytest.raises(VlkdError, match=r"AWS_SECRET_ACCESS_KEY: credentials never travel inline.*vlkd-s3"):
        render_rayjob(paper_job("text", env={"AWS_SECRET_ACCESS_KEY": "x"}), "vlkd")


@pytest.mark.parametrize(
    ("job_id", "pattern"),
    [
        (JOB_ID, re.escape(JOB_ID)),  # the ids vlkd makes are kept as they are
        ("My_Run", r"my-run-[0-9a-f]{8}"),  # changed, so a hash keeps it apart from the id "my-run"
        ("42", r"vlkd-42-[0-9a-f]{8}"),  # a DNS-1035 label starts with a letter
        ("vlkd-distill-" + "x" * 40, r"vlkd-distill-x{25}-[0-9a-f]{8}"),  # KubeRay's limit: 47 characters
    ],
)
def test_the_rayjob_name_is_the_job_id_as_a_short_dns_label(job_id, pattern):
    assert re.fullmatch(pattern, rayjob_name(job_id))
    assert len(rayjob_name(job_id)) <= 47
    assert rayjob_name(job_id) != rayjob_name(job_id.lower() + "-")


def test_render_is_the_yaml_kubectl_applies():
    text = KubernetesBackend(namespace="vlkd").render(paper_job("teacher"))
    assert yaml.safe_load(text) == render_rayjob(paper_job("teacher"), "vlkd")
    assert "&id" not in text  # no YAML anchors: every container has its own env


# --- Status ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "state", "message"),
    [
        ({}, JobState.PENDING, "New: waiting for the KubeRay operator"),
        (
            {"jobDeploymentStatus": "Initializing", "jobStatus": ""},
            JobState.PENDING,
            "Initializing: RayCluster starting",
        ),
        ({"jobDeploymentStatus": "Running", "jobStatus": "PENDING"}, JobState.PENDING, "Running: Ray job PENDING"),
        ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, JobState.RUNNING, "Running: Ray job RUNNING"),
        (
            {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "message": "Job finished successfully."},
            JobState.SUCCEEDED,
            "Complete: Ray job SUCCEEDED: Job finished successfully.",
        ),
        ({"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}, JobState.STOPPED, "Complete: Ray job STOPPED"),
        (
            {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed", "message": "exit 1"},
            JobState.FAILED,
            "Failed: Ray job FAILED: AppFailed: exit 1",
        ),
        (
            {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "message": "passed activeDeadlineSeconds"},
            JobState.FAILED,
            "Failed: Ray job not submitted: DeadlineExceeded: passed activeDeadlineSeconds",
        ),
        (
            {"jobDeploymentStatus": "Retrying", "jobStatus": "FAILED"},
            JobState.PENDING,
            "Retrying: starting a new RayCluster after a failure (backoffLimit)",
        ),
        ({"jobDeploymentStatus": "Suspended"}, JobState.STOPPED, "Suspended: the RayCluster is released"),
    ],
)
def test_kuberay_states_map_to_job_states(status, state, message):
    rayjob = {"metadata": {"name": JOB_ID, "labels": {"vlkd.io/stage": "teacher"}}, "status": status}
    assert rayjob_status(rayjob) == JobStatus(JOB_ID, state, message, "teacher", "k8s")


# --- Why a job is pending --------------------------------------------------------------------------------------------

CLUSTER = f"{JOB_ID}-7xk2q"  # KubeRay names the RayCluster after the RayJob, with 5 characters more
HEAD, WORKER = f"{CLUSTER}-head-4xz8t", f"{CLUSTER}-workers-worker-x7k2p"
NO_FREE_GPU_SAID = (  # what explain_pending keeps of NO_FREE_GPU
    "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
    "2 Insufficient nvidia.com/gpu"
)
NO_FREE_GPU = (
    "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
    "2 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, "
    "2 No preemption victims found for incoming pod."
)
GPU_TAINT = (
    "0/3 nodes are available: 3 node(s) had untolerated taint {nvidia.com/gpu: present}. "
    "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
)
QUOTA = (
    f'Error creating: pods "{JOB_ID}-b9q4m" is forbidden: exceeded quota: compute-quota, requested: requests.cpu=1, '
    "used: requests.cpu=32, limited: requests.cpu=32"
)
PULL_FAILED = (
    'Failed to pull image "ghcr.io/vlkd/vlkd:typo": rpc error: code = NotFound desc = failed to pull and unpack image '
    '"ghcr.io/vlkd/vlkd:typo": failed to resolve reference "ghcr.io/vlkd/vlkd:typo": ghcr.io/vlkd/vlkd:typo: not found'
)
GPU_HINT = "no node has a free nvidia.com/gpu: add GPU nodes or lower resources.gpus_per_worker"
TAINT_HINT = "nodes carry a taint the pods do not tolerate: add the toleration in resources.tolerations"
SELECTOR_HINT = "no node has the labels of resources.node_selector: fix them, or label the nodes"
QUOTA_HINT = "raise the namespace's ResourceQuota or ask for less"
IMAGE_HINT = "check the image name (kubernetes.image, else --image) and the registry's pull secret"
SECRET_HINT = (
    'create the Secret (k8s/README.md, "Credentials"), name yours in kubernetes.s3_secret, or use workload identity '
    "(kubernetes.s3_secret: null)"
)


def unschedulable_pod(name: str, message: str, created: str = "2026-11-29T04:12:05Z") -> dict[str, Any]:
    """A pod as the API server lists it while the scheduler finds no node for it."""
    return {
        "metadata": {
            "name": name, "namespace": "vlkd", "creationTimestamp": created, "labels": {"vlkd.io/job-id": JOB_ID}
        },
        "spec": {"containers": [{"name": "ray-worker", "image": "ghcr.io/vlkd/vlkd:0.1.0"}]},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled", "status": "False", "lastProbeTime": None, "lastTransitionTime": created,
                    "reason": "Unschedulable", "message": message,
                }
            ],
            "qosClass": "Guaranteed",
        },
    }  # fmt: skip


def waiting_pod(name: str, reason: str, message: str, created: str = "2026-11-29T04:13:00Z") -> dict[str, Any]:
    """A scheduled pod whose container waits (on its image, a Secret, or a back-off after crashing)."""
    condition = {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": created}
    waiting = {"reason": reason, **({"message": message} if message else {})}
    container = {
        "name": "ray-head", "image": "ghcr.io/vlkd/vlkd:typo", "imageID": "", "ready": False, "restartCount": 0,
        "started": False, "state": {"waiting": waiting}, "lastState": {},
    }  # fmt: skip
    return {
        "metadata": {"name": name, "namespace": "vlkd", "creationTimestamp": created},
        "spec": {"containers": [{"name": "ray-head", "image": "ghcr.io/vlkd/vlkd:typo"}]},
        "status": {"phase": "Pending", "conditions": [condition], "containerStatuses": [container]},
    }


def warning(kind: str, name: str, reason: str, message: str, last: str = "2026-11-29T04:14:00Z") -> dict[str, Any]:
    """A Warning event (core/v1 Event) about the object `kind`/`name`, as `list_namespaced_event` lists it."""
    api_version = {"Pod": "v1", "Job": "batch/v1", "RayJob": "ray.io/v1", "RayCluster": "ray.io/v1"}[kind]
    return {
        "metadata": {
            "name": f"{name}.187c3a5b2e1f0a9d", "namespace": "vlkd", "resourceVersion": "48290",
            "creationTimestamp": "2026-11-29T04:12:03Z",
        },
        "involvedObject": {
            "kind": kind, "namespace": "vlkd", "name": name, "uid": "6a1e2b7c-0d4f-4c3b-9e8a-5f2d1c0b9a87",
            "apiVersion": api_version, "resourceVersion": "48215",
        },
        "reason": reason, "message": message, "source": {"component": "default-scheduler"},
        "firstTimestamp": "2026-11-29T04:12:03Z", "lastTimestamp": last, "count": 7, "type": "Warning",
        "eventTime": None, "reportingComponent": "default-scheduler", "reportingInstance": "",
    }  # fmt: skip


def initializing(**status: Any) -> dict[str, Any]:
    return stored(render_rayjob(paper_job("teacher", JOB_ID), "vlkd"), jobDeploymentStatus="Initializing", **status)


@pytest.mark.parametrize(
    ("pods", "events", "expected"),
    [
        pytest.param(
            [unschedulable_pod(WORKER, NO_FREE_GPU)],
            [],
            [f"pod {WORKER}: unschedulable: {NO_FREE_GPU_SAID}", GPU_HINT],  # not: tolerate the control plane's taint
            id="insufficient-gpu",
        ),
        pytest.param(
            [unschedulable_pod(WORKER, GPU_TAINT)],
            [],
            [
                f"pod {WORKER}: unschedulable: 0/3 nodes are available: 3 node(s) had untolerated taint "
                "{nvidia.com/gpu: present}",
                TAINT_HINT,
            ],
            id="untolerated-taint",
        ),
        pytest.param(
            [
                unschedulable_pod(
                    WORKER, "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
                )
            ],
            [],
            [
                f"pod {WORKER}: unschedulable: 0/3 nodes are available: "
                "3 node(s) didn't match Pod's node affinity/selector",
                SELECTOR_HINT,
            ],
            id="node-selector",
        ),
        pytest.param(
            [waiting_pod(HEAD, "ImagePullBackOff", 'Back-off pulling image "ghcr.io/vlkd/vlkd:typo"')],
            [],
            [f'pod {HEAD}: ImagePullBackOff: Back-off pulling image "ghcr.io/vlkd/vlkd:typo"', IMAGE_HINT],
            id="image-pull",
        ),
        pytest.param(
            [],
            [warning("Job", JOB_ID, "FailedCreate", QUOTA)],  # no pod exists to carry a condition
            [f"job {JOB_ID}: FailedCreate: {QUOTA}", QUOTA_HINT],
            id="quota",
        ),
        pytest.param(
            [waiting_pod(HEAD, "CreateContainerConfigError", 'secret "vlkd-s3" not found')],
            [],
            [f'pod {HEAD}: CreateContainerConfigError: secret "vlkd-s3" not found', SECRET_HINT],
            id="missing-secret",
        ),
        pytest.param(
            [waiting_pod(HEAD, "CrashLoopBackOff", f"back-off 40s restarting failed container=ray-head pod={HEAD}")],
            [],
            [f"pod {HEAD}: CrashLoopBackOff: back-off 40s restarting failed container=ray-head pod={HEAD}"],
            id="crash-loop-without-a-hint",
        ),
    ],
)
def test_a_pending_job_names_its_cause_and_what_to_do(pods, events, expected):
    assert explain_pending(initializing(), pods, events) == expected


def test_a_job_whose_pods_are_scheduled_and_starting_explains_nothing():
    pods = [
        pod(HEAD, "2026-11-29T04:12:05Z", "ray-head"),
        pod(WORKER, "2026-11-29T04:12:05Z", "ray-worker"),
        waiting_pod(f"{JOB_ID}-b9q4m", "ContainerCreating", ""),  # the submitter, on its way
    ]
    stale = warning("Pod", WORKER, "FailedScheduling", NO_FREE_GPU)  # from before a GPU node joined

    assert explain_pending(initializing(), pods, [stale]) == []


def test_events_about_other_objects_are_ignored():
    other = "vlkd-text-20261129-030000-cd34"
    events = [
        warning("Job", other, "FailedCreate", QUOTA),
        warning("RayJob", other, "Failed", "the RayCluster failed"),
        warning("RayCluster", f"{JOB_ID}-2-x7k2q", "FailedToCreateWorkerPod", QUOTA),  # job "...-ab12-2"'s cluster
        warning("Pod", f"{other}-7xk2q-head-4xz8t", "FailedScheduling", NO_FREE_GPU),
    ]

    assert explain_pending(initializing(), [], events) == []


def test_raycluster_events_are_matched_by_name_until_kuberay_records_it():
    refused = (
        f'Failed to create worker Pod vlkd/{WORKER}, pods "{WORKER}" is forbidden: exceeded quota: gpu-quota, '
        "requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=4, limited: requests.nvidia.com/gpu=4"
    )
    event = warning("RayCluster", CLUSTER, "FailedToCreateWorkerPod", refused)

    assert explain_pending(initializing(), [], [event]) == [
        f"raycluster {CLUSTER}: FailedToCreateWorkerPod: {refused}",
        QUOTA_HINT,
    ]
    assert explain_pending(initializing(rayClusterName=CLUSTER), [], [event])[0].startswith(f"raycluster {CLUSTER}")
    assert explain_pending(initializing(rayClusterName=f"{JOB_ID}-b2c3d"), [], [event]) == []  # an earlier cluster


def test_one_cause_on_several_pods_is_one_line_naming_the_newest():
    names = [f"{CLUSTER}-workers-worker-{suffix}" for suffix in ("x7k2p", "b9q4m", "c3d4e", "f5g6h")]
    pods = [unschedulable_pod(name, NO_FREE_GPU, f"2026-11-29T04:12:0{i}Z") for i, name in enumerate(names)]
    events = [
        warning("Pod", n, "FailedScheduling", NO_FREE_GPU, f"2026-11-29T04:12:3{i}Z") for i, n in enumerate(names)
    ]

    assert explain_pending(initializing(), pods, events) == [
        f"pod {names[3]} (and 3 more): unschedulable: {NO_FREE_GPU_SAID}",
        GPU_HINT,
    ]


def test_at_most_two_causes_are_told_newest_first():
    pods = [
        unschedulable_pod(WORKER, NO_FREE_GPU, "2026-11-29T04:12:05Z"),
        waiting_pod(
            HEAD, "ImagePullBackOff", 'Back-off pulling image "ghcr.io/vlkd/vlkd:typo"', "2026-11-29T04:13:00Z"
        ),
    ]
    events = [warning("Job", JOB_ID, "FailedCreate", QUOTA, "2026-11-29T04:20:00Z")]

    assert explain_pending(initializing(), pods, events) == [
        f"job {JOB_ID}: FailedCreate: {QUOTA}",
        f'pod {HEAD}: ImagePullBackOff: Back-off pulling image "ghcr.io/vlkd/vlkd:typo"',
        f"{QUOTA_HINT}; {IMAGE_HINT}",
    ]


def test_the_kubelets_pull_error_replaces_its_back_off_notice():
    pods = [waiting_pod(HEAD, "ImagePullBackOff", 'Back-off pulling image "ghcr.io/vlkd/vlkd:typo"')]
    events = [
        warning("Pod", HEAD, "Failed", PULL_FAILED, "2026-11-29T04:14:00Z"),
        warning("Pod", HEAD, "Failed", "Error: ImagePullBackOff", "2026-11-29T04:15:00Z"),  # says only the reason
    ]

    assert explain_pending(initializing(), pods, events) == [f"pod {HEAD}: Failed: {PULL_FAILED}", IMAGE_HINT]


# --- The kustomize tree ----------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("kubectl")
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_built_in_objects_are_valid_kubernetes_objects(overlay, version):
    objects = kustomize(overlay)
    builtins = [o for o in objects if o["kind"] != "RayJob"]
    kinds = {o["kind"] for o in builtins}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "ConfigMap"} <= kinds
    assert ("Secret" in kinds) == (overlay == "dev")  # only the dev MinIO's placeholder keys: real ones are never here
    for obj in builtins:
        assert kubernetes_problems(obj, version) == [], f"{obj['kind']}/{obj['metadata']['name']}"
        assert obj["kind"] == "Namespace" or obj["metadata"].get("namespace") == "vlkd"


def test_the_kubernetes_schema_check_catches_what_the_api_server_would_refuse():
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "vlkd-store"}, "data": {"a": "b"}}
    assert kubernetes_problems(config_map, KUBERNETES_VERSIONS[0]) == []
    misspelt = {**config_map, "metadata": {"name": "vlkd-store", "namepsace": "vlkd"}}
    assert kubernetes_problems(misspelt, KUBERNETES_VERSIONS[0]) == [
        "metadata: Additional properties are not allowed ('namepsace' was unexpected)"
    ]
    wrong_type = {**config_map, "data": {"a": 1}}
    assert kubernetes_problems(wrong_type, KUBERNETES_VERSIONS[0]) != []


@pytest.mark.usefixtures("kubectl")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_rayjobs_are_valid_suspended_and_run_the_one_image(overlay, crd_validator):
    jobs = rayjobs(kustomize(overlay))
    assert set(jobs) == set(STAGES)
    for rayjob in jobs.values():
        assert crd_errors(crd_validator, rayjob) == []
        assert rayjob["spec"]["suspend"] is True  # applying the tree starts nothing
        assert {c["image"] for c in containers(rayjob)} == {base_image()}


@pytest.mark.usefixtures("kubectl")
def test_dev_overlay_is_a_small_cpu_only_cluster_with_minio():
    objects = kustomize("dev")
    for rayjob in rayjobs(objects).values():
        for container in containers(rayjob):
            assert "nvidia.com/gpu" not in json.dumps(container["resources"])
        (group,) = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
        assert group["replicas"] == 1
        assert group["template"]["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    (minio,) = [o for o in objects if o["kind"] == "Deployment"]
    spec = minio["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert env["MINIO_ROOT_USER_FILE"] == "/run/secrets/vlkd-s3/AWS_ACCESS_KEY_ID"  # the jobs' keys, as files
    assert env["MINIO_ROOT_PASSWORD_FILE"] == "/run/secrets/vlkd-s3/AWS_SECRET_ACCESS_KEY"
    assert [v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v] == ["vlkd-s3"]
    (store,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert store["data"]["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert any(o["kind"] == "Service" and o["metadata"]["name"] == "minio" for o in objects)


@pytest.mark.usefixtures("kubectl")
def test_gpu_overlay_puts_every_gpu_worker_on_tainted_gpu_nodes():
    jobs = rayjobs(kustomize("gpu"))
    gpu_stages = {s for s, j in jobs.items() if "nvidia.com/gpu" in containers(j)[-1]["resources"]["limits"]}
    assert gpu_stages == {"preprocess", "teacher", "distill", "eval"}
    for stage, rayjob in jobs.items():
        pod = worker_pod(rayjob)
        if stage in gpu_stages:
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        else:
            assert "tolerations" not in pod
        # No node label: none is common to EKS and GKE; the nvidia.com/gpu limit is what places a pod.
        assert "nodeSelector" not in pod and "affinity" not in pod


def test_the_image_tag_is_set_once_and_is_the_cli_default():
    from vlkd.backends.submission import DEFAULT_IMAGE

    assert base_image() == DEFAULT_IMAGE
    tag = base_image().rsplit(":", 1)[1]
    mentions = [p for p in (ROOT / "k8s").rglob("*.yaml") if re.search(rf"\b{re.escape(tag)}\b", p.read_text())]
    assert mentions == [BASE]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_only_patch_and_say_their_purpose(overlay):
    text = (ROOT / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text()
    assert text.startswith(f"# {overlay}: ")
    kustomization = yaml.safe_load(text)
    assert "../../base" in kustomization["resources"]
    assert set(kustomization) <= {"apiVersion", "kind", "namespace", "resources", "patches"}  # no images, no names
    assert kustomization.get("namespace", "vlkd") == yaml.safe_load(BASE.read_text())["namespace"]


def test_the_job_service_accounts_mount_no_token_and_none_is_bound_here():
    """KubeRay binds the autoscaler's Role to vlkd-autoscaler itself, per cluster (common/rbac.go): nothing in k8s/
    grants any of them rights."""
    from vlkd.specs import KubernetesSpec

    accounts = list(yaml.safe_load_all((ROOT / "k8s" / "base" / "rbac-job.yaml").read_text()))
    defaults = KubernetesSpec()
    names = {defaults.service_account, defaults.autoscaler_service_account, defaults.submitter_service_account}
    assert {a["metadata"]["name"] for a in accounts} == names
    assert all(a["automountServiceAccountToken"] is False for a in accounts)
    bindings = yaml.safe_load_all((ROOT / "k8s" / "base" / "rbac-submitter.yaml").read_text())
    assert all(s.get("name") not in names for b in bindings if b["kind"] == "RoleBinding" for s in b["subjects"])


def test_the_store_configmap_name_is_the_one_the_backend_reads():
    from vlkd.backends.k8s_render import STORE_CONFIGMAP

    configmap = yaml.safe_load((ROOT / "k8s" / "base" / "store-configmap.yaml").read_text())
    assert configmap["metadata"]["name"] == STORE_CONFIGMAP


# --- Golden templates ----------------------------------------------------------------------------------------------


def test_committed_templates_equal_a_fresh_rendering():
    templates = generate_module().render_templates()
    assert {p.name for p in templates} == {f"{s}.yaml" for s in STAGES}
    stale = [p.name for p, text in templates.items() if not p.exists() or p.read_text() != text]
    assert stale == [], f"k8s/base/rayjobs/{stale} differ from the backend's rendering: run `python k8s/generate.py`"


# --- The API requests, on the wire -----------------------------------------------------------------------------------


@dataclass
class FakeApiServer:
    """A Kubernetes API server on 127.0.0.1 that answers with recorded responses and records every request."""

    url: str = ""
    replies: dict[tuple[str, str], list[tuple[int, Any]]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def reply(self, method: str, path: str, status: int, body: Any) -> None:
        """Answer `method path` (without the query) with `status` and `body` (JSON, or text if a str), in order."""
        self.replies.setdefault((method, path), []).append((status, body))

    def answer(self, method: str, target: str, body: bytes, headers: Any) -> tuple[int, bytes, str]:
        url = urlsplit(target)
        self.requests.append(
            {
                "method": method,
                "path": url.path,
                "query": {k: v[0] for k, v in parse_qs(url.query).items()},
                "body": json.loads(body) if body else None,
                "authorization": headers.get("Authorization"),
            }
        )
        queue = self.replies.get((method, url.path))
        if not queue:
            return 404, b"404 page not found\n", "text/plain"  # what the API server says to an unknown path
        status, reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(reply, str):
            return status, reply.encode(), "text/plain"
        return status, json.dumps(reply).encode(), "application/json"


@pytest.fixture
def api_server() -> Iterator[FakeApiServer]:
    fake = FakeApiServer()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status, body, content_type = fake.answer(self.command, self.path, self.rfile.read(length), self.headers)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


def write_kubeconfig(path: Path, server: str) -> Path:
    contexts = [
        {"name": "test", "context": {"cluster": "test", "user": "tester", "namespace": "vlkd"}},
        {"name": "staging", "context": {"cluster": "test", "user": "tester"}},
    ]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": {"server": server}}],
                "users": [{"name": "tester", "user": {"token": "test-token"}}],
                "contexts": contexts,
                "current-context": "test",
            }
        )
    )
    return path


@pytest.fixture
def kubeconfig(api_server, tmp_path, monkeypatch) -> Path:
    path = write_kubeconfig(tmp_path / "kubeconfig", api_server.url)
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


RAYJOBS = "/apis/ray.io/v1/namespaces/vlkd/rayjobs"
RECORD = {"namespace": "vlkd", "name": JOB_ID, "context": "test"}


def stored(rayjob: dict[str, Any], **status: Any) -> dict[str, Any]:
    """A RayJob as the API server returns it: with server-set metadata and, once KubeRay has seen it, a status."""
    metadata = {
        **rayjob["metadata"],
        "uid": "1f0c5b1e-7d43-4e0a-9a57-3b1c2e6f9d10",
        "resourceVersion": "48213",
        "generation": 1,
        "creationTimestamp": "2026-11-29T04:12:01Z",
    }
    return {**rayjob, "metadata": metadata, **({"status": status} if status else {})}


def status_object(code: int, reason: str, message: str, details: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
        "reason": reason, "details": details, "code": code,
    }  # fmt: skip


def pod(name: str, created: str, container: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "vlkd", "creationTimestamp": created},
        "spec": {"containers": [{"name": container, "image": "ghcr.io/vlkd/vlkd:0.1.0"}]},
        "status": {"phase": "Running"},
    }


def pod_list(*pods: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "48300"}, "items": list(pods)}


def test_submit_sends_the_rendering_and_status_reads_it_back(api_server, kubeconfig):
    job = paper_job("teacher", JOB_ID)
    rendered = yaml.safe_load(KubernetesBackend().render(job))
    api_server.reply("POST", RAYJOBS, 201, stored(rendered))
    api_server.reply("GET", f"{RAYJOBS}/{JOB_ID}", 200, stored(rendered, jobDeploymentStatus="Initializing"))
    backend = KubernetesBackend()

    record = backend.submit(job)
    current = backend.status(JOB_ID, record)

    assert record == RECORD
    post, get = api_server.requests[:2]  # then, as the job is pending, its pods and events
    assert (post["method"], post["path"], post["query"]) == ("POST", RAYJOBS, {"fieldValidation": "Strict"})
    assert post["body"] == rendered  # exactly what render printed
    assert post["authorization"] == "Bearer test-token"
    assert (get["method"], get["path"]) == ("GET", f"{RAYJOBS}/{JOB_ID}")
    assert (current.state, current.message, current.stage) == (
        JobState.PENDING, "Initializing: RayCluster starting", "teacher"
    )  # fmt: skip


def test_status_of_a_deleted_rayjob_is_stopped(api_server, kubeconfig):
    details = {"name": JOB_ID, "group": "ray.io", "kind": "rayjobs"}
    missing = status_object(404, "NotFound", f'rayjobs.ray.io "{JOB_ID}" not found', details)
    api_server.reply("GET", f"{RAYJOBS}/{JOB_ID}", 404, missing)

    current = KubernetesBackend().status(JOB_ID, RECORD)

    assert current.state == JobState.STOPPED
    assert current.message == f"RayJob vlkd/{JOB_ID} no longer exists (cancelled or deleted)"


PODS, EVENTS = "/api/v1/namespaces/vlkd/pods", "/api/v1/namespaces/vlkd/events"


def event_list(*events: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "EventList", "apiVersion": "v1", "metadata": {"resourceVersion": "48300"}, "items": list(events)}


def test_status_of_a_pending_job_says_why_from_its_pods_and_events(api_server, kubeconfig):
    short = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."  # noqa: E501
    api_server.reply("GET", f"{RAYJOBS}/{JOB_ID}", 200, initializing())
    api_server.reply(
        "GET", PODS, 200, pod_list(pod(HEAD, "2026-11-29T04:12:05Z", "ray-head"), unschedulable_pod(WORKER, short))
    )
    api_server.reply("GET", PODS, 200, pod_list())  # no submitter pod before the cluster is up
    others = warning("Job", "vlkd-text-20261129-030000-cd34", "FailedCreate", QUOTA)
    api_server.reply("GET", EVENTS, 200, event_list(warning("Pod", WORKER, "FailedScheduling", short), others))

    current = KubernetesBackend().status(JOB_ID, RECORD)

    assert (current.state, current.message) == (JobState.PENDING, "Initializing: RayCluster starting")
    assert current.why_pending == [
        f"pod {WORKER}: unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu",
        GPU_HINT,
    ]
    _, ray_pods, submitter_pods, events = api_server.requests
    assert ray_pods["query"] == {"labelSelector": f"vlkd.io/job-id={JOB_ID}"}
    assert submitter_pods["query"] == {"labelSelector": f"batch.kubernetes.io/job-name={JOB_ID}"}
    assert (events["path"], events["query"]) == (EVENTS, {"fieldSelector": "type=Warning"})


def test_a_forbidden_event_list_leaves_the_status_with_a_one_line_note(api_server, kubeconfig):
    said = 'events is forbidden: User "alice" cannot list resource "events" in API group "" in the namespace "vlkd"'
    api_server.reply("GET", f"{RAYJOBS}/{JOB_ID}", 200, initializing())
    api_server.reply("GET", PODS, 200, pod_list(unschedulable_pod(WORKER, NO_FREE_GPU)))
    api_server.reply("GET", EVENTS, 403, status_object(403, "Forbidden", said, {"kind": "events"}))

    current = KubernetesBackend().status(JOB_ID, RECORD)

    assert (current.state, current.message) == (JobState.PENDING, "Initializing: RayCluster starting")
    (note,) = current.why_pending
    assert note.startswith("why it is pending could not be read: forbidden to list events in namespace vlkd (")
    assert note.endswith("bind you to the Role vlkd-submitter (k8s/base/rbac-submitter.yaml)")
    assert "\n" not in note


def test_status_of_a_running_job_reads_no_pods_or_events(api_server, kubeconfig):
    rayjob = stored(
        render_rayjob(paper_job("teacher", JOB_ID), "vlkd"), jobDeploymentStatus="Running", jobStatus="RUNNING"
    )
    api_server.reply("GET", f"{RAYJOBS}/{JOB_ID}", 200, rayjob)

    current = KubernetesBackend().status(JOB_ID, RECORD)

    assert (current.state, current.why_pending) == (JobState.RUNNING, [])
    assert [r["path"] for r in api_server.requests] == [f"{RAYJOBS}/{JOB_ID}"]


def test_cancel_deletes_the_rayjob_in_the_background(api_server, kubeconfig):
    api_server.reply("DELETE", f"{RAYJOBS}/{JOB_ID}", 200, status_object(200, "", "", {}) | {"status": "Success"})

    KubernetesBackend().cancel(JOB_ID, RECORD)

    (delete,) = api_server.requests
    assert (delete["method"], delete["path"]) == ("DELETE", f"{RAYJOBS}/{JOB_ID}")
    assert delete["query"] == {"propagationPolicy": "Background"}


def test_list_asks_for_the_vlkd_rayjobs_of_the_namespace(api_server, kubeconfig):
    teacher = render_rayjob(paper_job("teacher", JOB_ID), "vlkd")
    text = render_rayjob(paper_job("text", "vlkd-text-20261129-030000-cd34"), "vlkd")
    items = [
        stored(teacher, jobDeploymentStatus="Running", jobStatus="RUNNING"),
        stored(text, jobDeploymentStatus="Complete", jobStatus="SUCCEEDED"),
    ]
    api_server.reply("GET", RAYJOBS, 200, {"apiVersion": "ray.io/v1", "kind": "RayJobList", "items": items})

    jobs = KubernetesBackend().list()

    (request,) = api_server.requests
    assert request["query"] == {"labelSelector": "app.kubernetes.io/managed-by=vlkd"}
    assert [(j.job_id, j.stage, j.state) for j in jobs] == [
        (JOB_ID, "teacher", JobState.RUNNING),
        ("vlkd-text-20261129-030000-cd34", "text", JobState.SUCCEEDED),
    ]


def test_logs_follow_the_newest_submitter_pod(api_server, kubeconfig):
    pods = pod_list(
        pod(f"{JOB_ID}-x7k2p", "2026-11-29T04:14:00Z", "ray-job-submitter"),
        pod(f"{JOB_ID}-b9q4m", "2026-11-29T04:20:00Z", "ray-job-submitter"),  # the retry
    )
    api_server.reply("GET", "/api/v1/namespaces/vlkd/pods", 200, pods)
    log = "job vlkd-teacher: teacher howto100m-12l\nstep 100 loss 3.2\npublished teacher/howto100m-12l:v1\n"
    api_server.reply("GET", f"/api/v1/namespaces/vlkd/pods/{JOB_ID}-b9q4m/log", 200, log)

    lines = list(KubernetesBackend().logs(JOB_ID, RECORD, follow=True))

    assert "".join(lines) == log
    assert lines[-1] == "published teacher/howto100m-12l:v1\n"
    select, read = api_server.requests
    assert select["query"] == {"labelSelector": f"batch.kubernetes.io/job-name={JOB_ID}"}
    assert read["query"] == {"container": "ray-job-submitter", "follow": "true"}


def test_logs_read_the_head_pod_until_the_submitter_exists(api_server, kubeconfig):
    head = pod(f"{JOB_ID}-head-4xz8t", "2026-11-29T04:12:30Z", "ray-head")
    api_server.reply("GET", "/api/v1/namespaces/vlkd/pods", 200, pod_list())
    api_server.reply("GET", "/api/v1/namespaces/vlkd/pods", 200, pod_list(head))
    api_server.reply("GET", f"/api/v1/namespaces/vlkd/pods/{JOB_ID}-head-4xz8t/log", 200, "starting ray head\n")

    assert list(KubernetesBackend().logs(JOB_ID, RECORD)) == ["starting ray head\n"]

    _, select_head, read = api_server.requests
    assert select_head["query"] == {"labelSelector": f"vlkd.io/job-id={JOB_ID},ray.io/node-type=head"}
    assert read["query"] == {"container": "ray-head", "follow": "false"}


def one_line_error(call: Any) -> str:
    with pytest.raises(VlkdError) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_a_missing_crd_says_to_install_kuberay(api_server, kubeconfig):
    # No route: the API server answers a path of an unknown API group with a plain-text 404.
    message = one_line_error(lambda: KubernetesBackend().submit(paper_job("teacher", JOB_ID)))
    assert message.startswith("the RayJob CRD is not installed")
    assert "helm install kuberay-operator kuberay/kuberay-operator" in message


def test_forbidden_names_the_verb_the_resource_and_the_role(api_server, kubeconfig):
    said = 'rayjobs.ray.io is forbidden: User "alice" cannot create resource "rayjobs" in API group "ray.io"'
    api_server.reply("POST", RAYJOBS, 403, status_object(403, "Forbidden", said, {"group": "ray.io"}))

    message = one_line_error(lambda: KubernetesBackend().submit(paper_job("teacher", JOB_ID)))

    assert message.startswith("forbidden to create rayjobs in namespace vlkd (")
    assert message.endswith("bind you to the Role vlkd-submitter (k8s/base/rbac-submitter.yaml)")


def test_an_unreachable_api_server_is_named(tmp_path, monkeypatch, refused_port):
    port = refused_port
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")))

    message = one_line_error(lambda: KubernetesBackend().list())

    assert message.startswith(f"cannot reach the Kubernetes API server at http://127.0.0.1:{port} (context 'test'): ")
    assert "Connection refused; check that the cluster is up" in message


def test_an_unknown_context_lists_the_available_ones(api_server, kubeconfig):
    message = one_line_error(lambda: KubernetesBackend(context="prod").submit(paper_job("teacher", JOB_ID)))
    assert message == "unknown kubeconfig context 'prod'; available: test, staging"
    assert api_server.requests == []


def test_the_namespace_is_the_backends_then_the_specs_then_the_contexts(api_server, kubeconfig):
    job = paper_job("teacher", JOB_ID)
    assert KubernetesBackend(context="staging")._rayjob(job)["metadata"]["namespace"] == "default"
    assert KubernetesBackend()._rayjob(job)["metadata"]["namespace"] == "vlkd"
    job.spec = job.spec.model_copy(update={"kubernetes": job.spec.kubernetes.model_copy(update={"namespace": "ml"})})
    assert KubernetesBackend()._rayjob(job)["metadata"]["namespace"] == "ml"
    assert KubernetesBackend(namespace="team-a")._rayjob(job)["metadata"]["namespace"] == "team-a"


# --- A real cluster ----------------------------------------------------------------------------------------------


def use_the_developers_cluster_and_cloud(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kubeconfig and cloud credentials pytest was started with, which every other test is kept from (conftest
    `_isolate`): their files, profile and keys, and no fake ones."""
    from conftest import DEVELOPER_ENV, TEST_CREDENTIALS

    home = Path(DEVELOPER_ENV.get("HOME") or Path.home())
    for key in TEST_CREDENTIALS:
        monkeypatch.delenv(key, raising=False)
    for key, value in DEVELOPER_ENV.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", DEVELOPER_ENV.get("AWS_CONFIG_FILE", str(home / ".aws" / "config")))
    credentials = DEVELOPER_ENV.get("AWS_SHARED_CREDENTIALS_FILE", str(home / ".aws" / "credentials"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", credentials)
    monkeypatch.setenv("KUBECONFIG", DEVELOPER_ENV.get("KUBECONFIG", str(home / ".kube" / "config")))


def test_the_real_cluster_test_gets_the_developers_kubeconfig_and_cloud_credentials_not_the_fake_ones(monkeypatch):
    from conftest import DEVELOPER_ENV

    use_the_developers_cluster_and_cloud(monkeypatch)
    home = Path(DEVELOPER_ENV.get("HOME") or Path.home())
    assert os.environ["KUBECONFIG"] == DEVELOPER_ENV.get("KUBECONFIG", str(home / ".kube" / "config"))
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED", "AWS_PROFILE"):
        assert os.environ.get(key) == DEVELOPER_ENV.get(key)


@pytest.mark.cluster
def test_a_tiny_stage_runs_on_a_real_cluster(tmp_path, monkeypatch):
    """Needs VLKD_TEST_KUBECONTEXT (a context of the developer's kubeconfig: a cluster with KubeRay and k8s/
    applied), VLKD_TEST_STORE (an s3:// store the cluster reaches, holding the synthetic dataset, with the
    developer's credentials) and the image (VLKD_TEST_IMAGE, default: the CLI's)."""
    context, store_uri = os.environ.get("VLKD_TEST_KUBECONTEXT"), os.environ.get("VLKD_TEST_STORE")
    if not context or not store_uri:
        pytest.skip("set VLKD_TEST_KUBECONTEXT and VLKD_TEST_STORE to submit a real RayJob")
    use_the_developers_cluster_and_cloud(monkeypatch)
    from vlkd.artifacts import ArtifactStore
    from vlkd.backends import submission

    spec_path = ROOT / "examples" / "tiny" / "text.yaml"
    spec = load_spec(spec_path, "text")
    store = ArtifactStore.open(store_uri)
    job = submission.prepare("text", spec, spec_path, store, "k8s", os.environ.get("VLKD_TEST_IMAGE"), None)
    options = {"context": context, "namespace": os.environ.get("VLKD_TEST_NAMESPACE", "vlkd")}
    backend = KubernetesBackend(**options)
    submission.submit(backend, options, job, spec_path.read_text(), store)
    record = submission.find(job.job_id)[1]
    deadline = time.monotonic() + 1800
    while not (current := backend.status(job.job_id, record)).state.finished and time.monotonic() < deadline:
        time.sleep(10)
    log = "".join(backend.logs(job.job_id, record))
    backend.cancel(job.job_id, record)
    assert current.state == JobState.SUCCEEDED, f"{current.message}\n{log[-3000:]}"
    assert "published tokenizer/tiny" in log
