"""What a real cluster and a security review need of the RayJobs vlkd renders, beyond what the CRD's schema checks.

No API server runs here, so each rule is encoded from the upstream source that acts on the field, and that file is
named in the test. The renderings checked are the committed templates (k8s/base/rayjobs/) and the goldens
(tests/data/rayjobs/, which include an autoscaled GPU pipeline and queued jobs), expanded into the Pods KubeRay
creates from them (tests/kuberay_pods.py) where the pods are what is judged.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kuberay_pods import pods_of
from test_k8s import ROOT, STAGES, crd_errors, crd_schema, generate_module, paper_job, schema_validator

from vlkd.backends.base import JobDescription
from vlkd.backends.k8s_pods import SERVICE_ACCOUNT_DIR, cpu_quantity
from vlkd.backends.k8s_render import RAY_VERSION, render_rayjob
from vlkd.specs import KubernetesSpec, load_spec

CRDS = ROOT.parent / "shared" / "crds"
# The KubeRay releases vlkd supports, oldest first (README, "Cluster"): 1.6 is the first with preRunningDeadlineSeconds.
SUPPORTED_KUBERAY = {"v1.6.2": CRDS / "kuberay-v1.6.2" / "ray.io_rayjobs.yaml", "v1.7.0": CRDS / "ray.io_rayjobs.yaml"}
OLDER_KUBERAY = {
    "v1.4.2": CRDS / "kuberay-v1.4.2" / "ray.io_rayjobs.yaml",
    "v1.5.1": CRDS / "kuberay-v1.5.1" / "ray.io_rayjobs.yaml",
}
RENDERINGS = sorted(
    [*(ROOT / "k8s" / "base" / "rayjobs").glob("*.yaml"), *(ROOT / "tests" / "data" / "rayjobs").glob("*.yaml")]
)


def rendered(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def with_kubernetes(job: JobDescription, **settings: Any) -> JobDescription:
    kubernetes = job.spec.kubernetes.model_copy(update=settings)
    spec = job.spec.model_copy(update={"kubernetes": kubernetes})
    return JobDescription(job.job_id, job.stage, spec, job.spec_uri, job.store_uri, job.image, job.env)


def templates(rayjob: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pod template of a RayJob: the head's, each worker group's, the submitter's."""
    cluster = rayjob["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    return [g["template"] for g in groups] + [rayjob["spec"]["submitterPodTemplate"]]


def all_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod["spec"].get("initContainers", []) + pod["spec"]["containers"]


@pytest.fixture(scope="module", params=sorted(SUPPORTED_KUBERAY))
def supported_crd(request: pytest.FixtureRequest) -> Any:
    return schema_validator(crd_schema(SUPPORTED_KUBERAY[request.param], "v1"))


# --- KubeRay releases --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", RENDERINGS, ids=lambda p: p.stem)
def test_every_rendering_is_accepted_by_each_supported_kuberay_release(path, supported_crd):
    assert crd_errors(supported_crd, rendered(path)) == []


@pytest.mark.parametrize("release", sorted(OLDER_KUBERAY))
def test_releases_before_1_6_would_refuse_the_start_deadline_so_they_are_not_supported(release):
    """KubeRay added `preRunningDeadlineSeconds` in 1.6 (rayjob_types.go); an older CRD refuses the field, and the
    README names 1.6 as the oldest release vlkd supports."""
    validator = schema_validator(crd_schema(OLDER_KUBERAY[release], "v1"))
    problems = crd_errors(validator, rendered(ROOT / "k8s" / "base" / "rayjobs" / "teacher.yaml"))
    assert any("preRunningDeadlineSeconds" in p for p in problems), problems
    assert "KubeRay 1.6" in (ROOT / "README.md").read_text()


# --- Runs that never start ---------------------------------------------------------------------------------------


def test_an_autoscaled_head_gives_an_api_token_to_its_autoscaler_alone():
    """Ray's autoscaler reads its token where Kubernetes mounts a ServiceAccount's (ray:
    python/ray/autoscaler/_private/kuberay/node_provider.py, IN_CLUSTER_TOKEN_PATH), under the head pod's account,
    to which KubeRay binds its Role (kuberay v1.6.2: ray-operator/controllers/ray/common/rbac.go BuildRoleBinding,
    raycluster_controller.go reconcileAutoscalerServiceAccount: an account the head names must exist). The
    account's token was never mounted (`automountServiceAccountToken: false`), so the autoscaler died at start and
    the head, `restartPolicy: Never` under autoscaler v2 (common/pod.go), never became ready."""
    from ray.autoscaler._private.kuberay.node_provider import IN_CLUSTER_CA_CERT_PATH, IN_CLUSTER_TOKEN_PATH

    rayjob = rendered(ROOT / "tests" / "data" / "rayjobs" / "pipeline-gpu.yaml")
    head, *workers, submitter = pods_of(rayjob)
    defaults = KubernetesSpec()
    assert head["spec"]["serviceAccountName"] == defaults.autoscaler_service_account
    accounts = {a["metadata"]["name"] for a in yaml.safe_load_all((ROOT / "k8s/base/rbac-job.yaml").read_text())}
    assert defaults.autoscaler_service_account in accounts

    (volume,) = [v for v in head["spec"]["volumes"] if "projected" in v]
    files = {
        item.get("path") or source.get("serviceAccountToken", {}).get("path")
        for source in volume["projected"]["sources"]
        for item in next(iter(source.values())).get("items", [{}])
    }
    assert {"token", "ca.crt", "namespace"} <= files
    mounted = {
        c["name"]: {m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] == volume["name"]}
        for c in head["spec"]["containers"]
    }
    assert mounted == {"ray-head": set(), "autoscaler": {SERVICE_ACCOUNT_DIR}}
    assert {IN_CLUSTER_TOKEN_PATH, IN_CLUSTER_CA_CERT_PATH} == {
        f"{SERVICE_ACCOUNT_DIR}/token",
        f"{SERVICE_ACCOUNT_DIR}/ca.crt",
    }
    for pod in [head, *workers, submitter]:
        assert pod["spec"]["automountServiceAccountToken"] is False
    for pod in workers:
        assert pod["spec"]["serviceAccountName"] == defaults.service_account  # workers get no API rights
        assert not any("projected" in v and "serviceAccountToken" in str(v) for v in pod["spec"].get("volumes", []))


def test_an_unautoscaled_head_runs_as_the_job_account_with_no_token():
    rayjob = rendered(ROOT / "tests" / "data" / "rayjobs" / "pipeline-gpu-queued.yaml")
    head = pods_of(rayjob)[0]
    assert head["spec"]["serviceAccountName"] == KubernetesSpec().service_account
    assert [c["name"] for c in head["spec"]["containers"]] == ["ray-head"]


def test_a_job_that_cannot_start_fails_after_its_start_deadline():
    """`preRunningDeadlineSeconds` fails a RayJob still not Running that long after KubeRay initialised it (kuberay
    v1.6.2: ray-operator/controllers/ray/rayjob_controller.go checkPreRunningDeadlineAndUpdateStatusIfNeeded,
    from Status.StartTime, which initRayJobStatusIfNeed sets when the job leaves New, so after Kueue admits it)."""
    job = paper_job("teacher")
    assert render_rayjob(job, "vlkd")["spec"]["preRunningDeadlineSeconds"] == KubernetesSpec().start_deadline_seconds
    assert 600 <= KubernetesSpec().start_deadline_seconds <= 3600  # a GPU node and a large image start in minutes
    forever = render_rayjob(with_kubernetes(job, start_deadline_seconds=None), "vlkd")
    assert "preRunningDeadlineSeconds" not in forever["spec"]


def test_a_toleration_the_api_server_would_refuse_is_refused_at_validation(vlkd_cli, tmp_path):
    """The CRD's schema lets `operator: Exists` carry a value; the API server refuses such a pod
    (kubernetes: pkg/apis/core/validation/validation.go validateTolerations), so the RayJob would be created and
    its pods never."""
    spec = tmp_path / "text.yaml"
    spec.write_text(
        "stage: text\nname: corpus\ncorpus: s3://bucket/wiki\nresources:\n  tolerations:\n"
        "    - {key: nvidia.com/gpu, operator: Exists, value: 'true'}\n"
    )
    result = vlkd_cli("validate", str(spec))
    assert result.returncode == 2
    problem = f"error: {spec}: resources.tolerations[0]: operator Exists tolerates every value"
    assert result.stderr.strip().startswith(problem), result


# --- Runs that waste GPUs or die while healthy -----------------------------------------------------------------------


def test_a_finished_cluster_is_kept_seconds_not_an_hour():
    """Kueue releases a finished job's quota at once, but KubeRay keeps its RayCluster, GPUs included,
    ttlSecondsAfterFinished (rayjob_controller.go); the job's log is in the store, so seconds are enough."""
    assert KubernetesSpec().ttl_seconds_after_finished <= 120
    for path in RENDERINGS:
        assert rendered(path)["spec"]["ttlSecondsAfterFinished"] <= 120


def test_the_submitter_is_retried_and_a_retry_follows_the_running_job():
    """KubeRay gives the submitter Job a backoffLimit of 2 unless `submitterConfig` says otherwise
    (rayjob_controller.go createNewK8sJob), and fails the RayJob when that Job fails, while training may run on. A
    retried submitter only follows a job id already submitted (common/job.go BuildJobSubmitCommand: `ray job status
    ID || ray job submit`, then `ray job logs --follow`), which it does when its container names no command
    (configureSubmitterContainer)."""
    from vlkd.backends.k8s import SUBMITTER_CONTAINER

    spec = render_rayjob(paper_job("distill"), "vlkd")["spec"]
    assert spec["submitterConfig"]["backoffLimit"] == KubernetesSpec().submitter_backoff_limit > 2
    assert spec["backoffLimit"] == KubernetesSpec().backoff_limit >= 1  # a preempted run resumes
    pod = spec["submitterPodTemplate"]
    (container,) = pod["spec"]["containers"]
    assert container["name"] == SUBMITTER_CONTAINER  # where `vlkd logs` reads
    assert "command" not in container and "args" not in container
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["serviceAccountName"] == KubernetesSpec().submitter_service_account
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "vlkd"  # the NetworkPolicy admits it


def test_pod_annotations_reach_every_pod():
    job = with_kubernetes(paper_job("teacher"), pod_annotations={"karpenter.sh/do-not-disrupt": "true"})
    for template in templates(render_rayjob(job, "vlkd")):
        assert template["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"


@pytest.mark.parametrize("path", RENDERINGS, ids=lambda p: p.stem)
def test_every_container_is_bounded_in_cpu_and_memory_and_ray_pods_request_disk(path):
    """Including specs without `resources.memory` (the paper's eval and text workers), KubeRay's init container
    and autoscaler (common/pod.go), and the submitter."""
    for pod in pods_of(rendered(path)):
        for container in all_containers(pod):
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), (pod["metadata"]["name"], container["name"])
        ray = pod["spec"]["containers"][0]
        if ray["name"] in ("ray-head", "ray-worker"):
            assert "ephemeral-storage" in ray["resources"]["requests"]
            assert "ephemeral-storage" not in ray["resources"]["limits"]  # a limit evicts a pod that spills objects


def ray_cpus(template: dict[str, Any]) -> int:
    """What KubeRay tells Ray a pod's CPUs are: its CPU limit rounded up (common/pod.go, rayStartParams num-cpus from
    `cpu.Value()`)."""
    quantity = template["spec"]["containers"][0]["resources"]["limits"]["cpu"]
    return math.ceil(int(quantity[:-1]) / 1000) if quantity.endswith("m") else int(quantity)


@pytest.mark.parametrize("stage", STAGES)
def test_the_head_offers_ray_no_cpu_and_the_workers_hold_what_the_job_asks(stage):
    """No task lands on the pod that holds the GCS; what the driver's tasks need (`driver_cpus`) comes with the
    workers, so the job's whole ask (JobContext.hold) still fits the cluster."""
    job = paper_job(stage)
    cluster = render_rayjob(job, "vlkd")["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"] == {"num-cpus": "0"}
    (group,) = cluster["workerGroupSpecs"]
    resources = job.spec.resources
    asked = max(1, resources.num_workers) * resources.cpus_per_worker + job.spec.driver_cpus
    assert group["replicas"] * ray_cpus(group["template"]) >= asked


@pytest.mark.parametrize("golden", ["pipeline-gpu", "pipeline-tiny"])
def test_each_stage_of_a_pipeline_fits_its_worker_group(golden):
    generate = generate_module()
    data = (
        generate.gpu_pipeline()
        if golden == "pipeline-gpu"
        else yaml.safe_load((ROOT / "examples/tiny/pipeline.yaml").read_text())
    )
    job = generate.pipeline_job(data)
    cluster = render_rayjob(job, "vlkd")["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"] == {"num-cpus": "0"}
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    for _, stage in job.spec.stages():
        resources = stage.resources
        gpus, cpus = math.ceil(resources.gpus_per_worker), resources.cpus_per_worker
        name = (f"gpu{gpus}-" if gpus else "") + f"cpu{cpu_quantity(cpus)}"
        group = groups[name]
        asked = max(1, resources.num_workers) * cpus + stage.driver_cpus
        assert group["maxReplicas"] * ray_cpus(group["template"]) >= asked, (stage.name, name)


# --- S3 as clouds provide it ---------------------------------------------------------------------------------------


def test_workload_identity_needs_no_secret():
    rayjob = render_rayjob(with_kubernetes(paper_job("teacher"), s3_secret=None), "vlkd")
    for template in templates(rayjob):
        for container in template["spec"]["containers"]:
            assert not any("valueFrom" in e for e in container.get("env", [])), container["name"]


def test_the_bucket_region_reaches_every_pod(s3_endpoint, monkeypatch):
    """pyarrow, which Ray Train checkpoints through, assumes us-east-1 where no region is set, and the laptop's own
    region says nothing of the bucket's: the pods get the bucket's, asked of S3 where the job is submitted."""
    import uuid

    import boto3

    from vlkd.artifacts import ArtifactStore
    from vlkd.backends import submission

    bucket = f"vlkd-test-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)  # the laptop's default: us-east-1
    store = ArtifactStore.open(f"s3://{bucket}/vlkd")
    spec_path = ROOT / "examples" / "paper" / "text.yaml"
    job = submission.prepare("text", load_spec(spec_path, "text"), spec_path, store, "k8s", None, None)
    for template in templates(render_rayjob(job, "vlkd")):
        for container in template["spec"]["containers"]:
            if container["name"] != "ray-job-submitter":
                assert {"name": "AWS_REGION", "value": "eu-west-1"} in container["env"]


# --- Security --------------------------------------------------------------------------------------------------------

# The `restricted` level of Pod Security Admission, as the API server checks it (kubernetes:
# staging/src/k8s.io/pod-security-admission/policy/check_*.go: runAsNonRoot, runAsUser, allowPrivilegeEscalation,
# capabilities_restricted, seccompProfile_restricted, restrictedVolumes, privileged, hostNamespaces).
ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    spec, problems = pod["spec"], []
    context = spec.get("securityContext") or {}
    if any(spec.get(key) for key in ("hostNetwork", "hostPID", "hostIPC")):
        problems.append("host namespaces")
    for volume in spec.get("volumes", []):
        if not set(volume) - {"name"} <= ALLOWED_VOLUMES:
            problems.append(f"volume {volume['name']} of a restricted type")
    for container in all_containers(pod):
        own = container.get("securityContext") or {}
        name = container["name"]
        if own.get("privileged"):
            problems.append(f"{name}: privileged")
        if own.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation not false")
        if own.get("runAsNonRoot", context.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot not true")
        if own.get("runAsUser", context.get("runAsUser")) == 0:
            problems.append(f"{name}: runs as uid 0")
        capabilities = own.get("capabilities") or {}
        if "ALL" not in capabilities.get("drop", []) or set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities not dropped")
        seccomp = (own.get("seccompProfile") or context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: no seccomp profile")
    return problems


@pytest.mark.parametrize("path", RENDERINGS, ids=lambda p: p.stem)
def test_every_pod_kuberay_creates_meets_the_restricted_pod_security_level(path):
    """Including the containers KubeRay adds: the autoscaler (`autoscalerOptions.securityContext`) and the workers'
    init container, which copies the Ray container's (kuberay v1.6.2: ray-operator/controllers/ray/common/pod.go)."""
    for pod in pods_of(rendered(path)):
        assert restricted_violations(pod) == [], pod["metadata"]["name"]


def test_the_restricted_check_catches_what_the_api_server_would_refuse():
    pod = pods_of(rendered(ROOT / "k8s" / "base" / "rayjobs" / "text.yaml"))[1]
    del pod["spec"]["securityContext"]["seccompProfile"]
    pod["spec"]["initContainers"][0]["securityContext"] = {}
    pod["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    problems = restricted_violations(pod)
    assert "volume host of a restricted type" in problems
    assert "wait-gcs-ready: allowPrivilegeEscalation not false" in problems
    assert any(p.endswith("no seccomp profile") for p in problems)


def test_the_namespace_enforces_the_restricted_level():
    namespace = yaml.safe_load((ROOT / "k8s" / "base" / "namespace.yaml").read_text())
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_ray_token_auth_is_on_for_the_ray_of_the_image():
    """KubeRay refuses token auth without a rayVersion of at least 2.52.0 (kuberay v1.6.2:
    ray-operator/controllers/ray/utils/validation.go); the version is the image's."""
    cluster = render_rayjob(paper_job("teacher"), "vlkd")["spec"]["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    assert cluster["rayVersion"] == RAY_VERSION
    assert tuple(map(int, RAY_VERSION.split("."))) >= (2, 52, 0)
    assert f"ray[data,train,default]=={RAY_VERSION}" in (ROOT / "pyproject.toml").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(RAY_VERSION)}-", (ROOT / "Dockerfile").read_text(), re.M)


def test_the_network_policy_admits_vlkd_pods_and_the_operator_to_the_dashboard_only():
    """KubeRay's operator reads the head's dashboard for the job's status (utils.DefaultDashboardPort, 8265)."""
    policy = yaml.safe_load((ROOT / "k8s" / "base" / "network-policy.yaml").read_text())
    selected = policy["spec"]["podSelector"]["matchLabels"]
    (same_jobs, operator) = policy["spec"]["ingress"]
    assert same_jobs == {"from": [{"podSelector": {"matchLabels": selected}}]}
    assert operator["ports"] == [{"port": 8265, "protocol": "TCP"}]
    assert "podSelector" not in operator["from"][0]  # the operator's namespace, by name
    for path in RENDERINGS:
        for pod in pods_of(rendered(path)):
            assert selected.items() <= pod["metadata"]["labels"].items(), pod["metadata"]["name"]


def test_no_secret_ships_in_the_base():
    base = yaml.safe_load((ROOT / "k8s" / "base" / "kustomization.yaml").read_text())
    kinds = {
        yaml.safe_load((ROOT / "k8s" / "base" / r).read_text()).get("kind")
        for r in base["resources"]
        if not r.startswith("rayjobs/") and "rbac" not in r
    }
    assert "Secret" not in kinds


# --- Image and placement -------------------------------------------------------------------------------------------


def test_an_image_by_tag_is_pulled_always_and_one_by_digest_only_when_missing():
    digest = "ghcr.io/vlkd/vlkd@sha256:" + "0" * 64
    for image, policy in (("ghcr.io/vlkd/vlkd:0.1.0", "Always"), (digest, "IfNotPresent")):
        rayjob = render_rayjob(with_kubernetes(paper_job("teacher"), image=image), "vlkd")
        assert {c["imagePullPolicy"] for t in templates(rayjob) for c in t["spec"]["containers"]} == {policy}
    kind = render_rayjob(with_kubernetes(paper_job("teacher"), image_pull_policy="IfNotPresent"), "vlkd")
    assert {c["imagePullPolicy"] for t in templates(kind) for c in t["spec"]["containers"]} == {"IfNotPresent"}
