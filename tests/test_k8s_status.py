"""`vlkd status` of a RayJob that cannot start, and `vlkd submit` refused by an admission webhook.

- What KubeRay's deployment states mean, the one it never leaves (ValidationFailed) and a job it gave up on before
  it started (`preRunningDeadlineSeconds`), read from recorded objects: tests/data/kuberay/ holds what the API server
  returned for the teacher's RayJob in each case (its status, its pods, the namespace's Warning events), validated
  here against KubeRay's CRD and Kubernetes' own schemas.
- On the wire, with the fake API server of test_k8s.py: what `status` reads for such a job, and the one line a
  webhook's refusal of a RayJob becomes.
"""

from __future__ import annotations

from typing import Any

import pytest
import test_k8s
import yaml
from test_k8s import (
    CLUSTER,
    EVENTS,
    GPU_HINT,
    HEAD,
    IMAGE_HINT,
    JOB_ID,
    PODS,
    QUOTA_HINT,
    RAYJOBS,
    RECORD,
    ROOT,
    SECRET_HINT,
    crd_schema,
    generate_module,
    kubernetes_problems,
    one_line_error,
    paper_job,
    schema_validator,
    status_object,
    stored,
)

from vlkd.backends.base import JobState, JobStatus
from vlkd.backends.k8s import KubernetesBackend, rayjob_status
from vlkd.backends.k8s_pending import NOTHING_LEFT, explain_pending
from vlkd.backends.k8s_render import render_rayjob

api_server, kubeconfig = test_k8s.api_server, test_k8s.kubeconfig  # fixtures: a fake API server and its kubeconfig
DATA = ROOT / "tests" / "data" / "kuberay"
# The RayJob CRD of the oldest KubeRay vlkd runs on.
KUBERAY_CRD = ROOT.parent / "shared" / "crds" / "kuberay-v1.6.2" / "ray.io_rayjobs.yaml"
WORKER = f"{CLUSTER}-gpu1-cpu8-worker-b9q4m"  # the newest of the recorded RayCluster's (CLUSTER) GPU workers
DID_NOT_START = "did not start within 1800 s (kubernetes.start_deadline_seconds)"
BAD_IMAGE = "ghcr.io/vlkd/vlkd:0.1.0-rc"
PULL_ERROR = (
    f'rpc error: code = NotFound desc = failed to pull and unpack image "{BAD_IMAGE}": failed to resolve reference '
    f'"{BAD_IMAGE}": {BAD_IMAGE}: not found'
)
NO_FREE_GPU = "0/5 nodes are available: 5 Insufficient nvidia.com/gpu"
INVALID = (
    "The RayJob spec is invalid: worker group gpu1-cpu8 must set both minReplicas and maxReplicas when autoscaling is "
    "disabled"
)


def recorded(name: str) -> dict[str, Any]:
    return yaml.safe_load((DATA / f"{name}.yaml").read_text())


def teacher_rayjob(status: dict[str, Any], backoff_limit: int = 0) -> dict[str, Any]:
    """The teacher's RayJob as the API server returns it, with `status` as KubeRay wrote it."""
    rayjob = stored(render_rayjob(paper_job("teacher", JOB_ID), "vlkd"), **status)
    rayjob["spec"].update(preRunningDeadlineSeconds=1800, backoffLimit=backoff_limit)
    return rayjob


def explained(name: str) -> list[str]:
    """What `explain_pending` says of a recorded case."""
    case = recorded(name)
    return explain_pending(teacher_rayjob(case["status"]), case["pods"]["items"], case["events"]["items"])


# --- The recorded objects ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.stem for p in DATA.glob("*.yaml")))
def test_recorded_objects_are_what_the_api_server_would_return(name):
    """The status validates against KubeRay v1.6.2's RayJob CRD (ray-operator/config/crd/bases/ray.io_rayjobs.yaml,
    in shared/crds), the pods and events against Kubernetes 1.33's schemas."""
    case = recorded(name)
    status_only = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": JOB_ID}, "status": case["status"]}
    validator = schema_validator(crd_schema(KUBERAY_CRD, "v1", rendered=False))

    assert [e.message for e in validator.iter_errors(status_only)] == []
    assert kubernetes_problems(case["pods"], "1.33") == []
    assert kubernetes_problems(case["events"], "1.33") == []
    for item, kind in [*((p, "Pod") for p in case["pods"]["items"]), *((e, "Event") for e in case["events"]["items"])]:
        assert kubernetes_problems({"apiVersion": "v1", "kind": kind, **item}, "1.33") == []


# --- KubeRay's deployment states --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deployment", "state", "message"),
    [
        ("", JobState.PENDING, "New: waiting for the KubeRay operator"),
        ("Initializing", JobState.PENDING, "Initializing: RayCluster starting"),
        ("Waiting", JobState.PENDING, "Waiting: waiting for a Ray job to be submitted to it"),
        ("Running", JobState.PENDING, "Running: Ray job not submitted"),
        ("Complete", JobState.FAILED, "Complete: Ray job not submitted"),
        ("Failed", JobState.FAILED, "Failed: Ray job not submitted"),
        ("ValidationFailed", JobState.FAILED, "ValidationFailed: KubeRay refused the RayJob"),
        ("Suspending", JobState.STOPPED, "Suspending: releasing the RayCluster"),
        ("Suspended", JobState.STOPPED, "Suspended: the RayCluster is released"),
        ("Retrying", JobState.PENDING, "Retrying: starting a new RayCluster after a failure (backoffLimit)"),
        ("Draining", JobState.PENDING, "Draining: Ray job not submitted"),  # a state of a KubeRay newer than vlkd
    ],
)
def test_each_of_kuberays_deployment_states_is_a_job_state(deployment, state, message):
    """Every JobDeploymentStatus of ray-operator/apis/ray/v1/rayjob_types.go (v1.6.2 and v1.7.0 have the same ten),
    before the Ray job has a status of its own; one not there yet is pending, under its own name."""
    current = rayjob_status(teacher_rayjob({"jobDeploymentStatus": deployment} if deployment else {}))
    assert (current.state, current.message) == (state, message)


def test_a_rayjob_kuberay_refused_has_failed_with_kuberays_words():
    """KubeRay validates a RayJob on every reconcile, and on an error sets JobDeploymentStatus and reason
    ValidationFailed with the error as message; no case of its state machine leaves that state
    (ray-operator/controllers/ray/rayjob_controller.go v1.6.2, Reconcile), so the job never runs."""
    current = rayjob_status(teacher_rayjob(recorded("validation-failed")["status"]))

    assert current == JobStatus(
        JOB_ID,
        JobState.FAILED,
        f"ValidationFailed: KubeRay refused the RayJob: {INVALID}",
        "teacher",
        "k8s",
        why_pending=[
            "KubeRay never runs a RayJob it refused: `vlkd render` shows what was sent; cancel the job to free its name"
        ],
    )


# --- A job that did not start in time ---------------------------------------------------------------------------------


def test_a_job_that_did_not_start_in_time_says_so_in_one_line():
    """KubeRay fails a RayJob still Initializing `preRunningDeadlineSeconds` after its start, with reason
    PreRunningDeadlineExceeded (rayjob_controller.go v1.6.2, checkPreRunningDeadlineAndUpdateStatusIfNeeded)."""
    current = rayjob_status(teacher_rayjob(recorded("start-deadline-exceeded")["status"]))

    assert (current.state, current.message) == (JobState.FAILED, f"Failed: {DID_NOT_START}")


@pytest.mark.parametrize(
    ("deployment", "failed", "state", "message"),
    [
        (
            "Retrying", 1, JobState.PENDING,
            f"Retrying: attempt 1 of 4 {DID_NOT_START}; KubeRay tries again on a new RayCluster "
            "(kubernetes.backoff_limit)",
        ),
        ("Failed", 4, JobState.FAILED, f"Failed: attempt 4 of 4 {DID_NOT_START}"),
    ],
)  # fmt: skip
def test_a_job_that_did_not_start_is_retried_under_its_backoff_limit(deployment, failed, state, message):
    """Only DeadlineExceeded is exempt from retries: a job past preRunningDeadlineSeconds goes to Retrying while
    status.failed < backoffLimit + 1, keeping its reason until the RayCluster is deleted (rayjob_controller.go v1.6.2,
    checkBackoffLimitAndUpdateStatusIfNeeded and the Retrying case of Reconcile)."""
    status = {**recorded("start-deadline-exceeded")["status"], "jobDeploymentStatus": deployment, "failed": failed}

    current = rayjob_status(teacher_rayjob(status, backoff_limit=3))

    assert (current.state, current.message) == (state, message)


def test_why_a_job_did_not_start_is_read_from_the_events_of_its_pods_that_are_gone():
    """After the deadline KubeRay deletes the RayCluster (rayjob_controller.go v1.6.2, handleShutdownAfterJobFinishes;
    at once when it retries); the scheduler's events about its pods remain."""
    assert explained("start-deadline-exceeded") == [
        f"pod {WORKER} (and 1 more): unschedulable: {NO_FREE_GPU}",
        GPU_HINT,
    ]


def test_once_the_events_expired_the_rayjobs_copy_of_the_cluster_status_names_the_stuck_head():
    """KubeRay copies the RayCluster's status into the RayJob while it waits for the cluster, its HeadPodReady
    condition carrying the head container's waiting reason and message (ray-operator/controllers/ray/utils/util.go
    v1.6.2, FindHeadPodReadyCondition and firstNotReadyContainerStatus)."""
    assert explained("start-deadline-exceeded-image-pull") == [
        f'raycluster {CLUSTER}: ImagePullBackOff: ray-head: Back-off pulling image "{BAD_IMAGE}": ErrImagePull: '
        f"{PULL_ERROR}",
        IMAGE_HINT,
    ]


def test_with_nothing_left_to_read_a_job_that_did_not_start_says_so():
    case = recorded("start-deadline-exceeded")
    assert explain_pending(teacher_rayjob(case["status"]), [], []) == [NOTHING_LEFT]


def test_a_pending_job_still_ignores_the_events_of_pods_that_are_gone():
    """While the job waits, a pod that is gone was replaced (or removed by the autoscaler): its events are stale."""
    case = recorded("start-deadline-exceeded")
    initializing = {**case["status"], "jobDeploymentStatus": "Initializing", "reason": "", "message": ""}

    assert explain_pending(teacher_rayjob(initializing), [], case["events"]["items"]) == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "image-pull-backoff",
            [f'pod {HEAD}: Failed: Failed to pull image "{BAD_IMAGE}": {PULL_ERROR}', IMAGE_HINT],
        ),
        ("insufficient-gpu", [f"pod {WORKER} (and 1 more): unschedulable: {NO_FREE_GPU}", GPU_HINT]),
        (
            "exceeded-quota",
            [
                f"raycluster {CLUSTER}: FailedToCreateWorkerPod: Failed to create worker Pod for the cluster "
                f'vlkd/{CLUSTER}, pods "{CLUSTER}-gpu1-cpu8-worker-q8w2n" is forbidden: exceeded quota: gpu-quota, '
                "requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=4, limited: "
                "requests.nvidia.com/gpu=4",
                QUOTA_HINT,
            ],
        ),
        ("missing-secret", [f'pod {HEAD}: Failed: Error: secret "vlkd-s3" not found', SECRET_HINT]),
    ],
)
def test_a_pending_job_names_its_cause_from_what_the_api_server_returned(name, expected):
    """KubeRay's RayCluster controller records a refused pod on the RayCluster as FailedToCreateWorkerPod
    (ray-operator/controllers/ray/raycluster_controller.go v1.6.2, createWorkerPod); the newest report of a cause
    speaks for it (the scheduler's `series.lastObservedTime`, the kubelet's `lastTimestamp`)."""
    assert explained(name) == expected


# --- On the wire ------------------------------------------------------------------------------------------------------


def test_status_of_a_job_that_did_not_start_reads_why_from_its_pods_and_events(api_server, kubeconfig):
    case = recorded("start-deadline-exceeded")
    api_server.reply("GET", f"{RAYJOBS}/{JOB_ID}", 200, teacher_rayjob(case["status"]))
    api_server.reply("GET", PODS, 200, case["pods"])
    api_server.reply("GET", EVENTS, 200, case["events"])

    current = KubernetesBackend().status(JOB_ID, RECORD)

    assert (current.state, current.message) == (JobState.FAILED, f"Failed: {DID_NOT_START}")
    assert current.why_pending == [f"pod {WORKER} (and 1 more): unschedulable: {NO_FREE_GPU}", GPU_HINT]
    assert [r["path"] for r in api_server.requests] == [f"{RAYJOBS}/{JOB_ID}", PODS, PODS, EVENTS]


def test_status_of_a_refused_rayjob_reads_nothing_more(api_server, kubeconfig):
    api_server.reply("GET", f"{RAYJOBS}/{JOB_ID}", 200, teacher_rayjob(recorded("validation-failed")["status"]))

    current = KubernetesBackend().status(JOB_ID, RECORD)

    assert (current.state, current.message) == (
        JobState.FAILED,
        f"ValidationFailed: KubeRay refused the RayJob: {INVALID}",
    )
    assert [r["path"] for r in api_server.requests] == [f"{RAYJOBS}/{JOB_ID}"]


# --- Refused by an admission webhook ----------------------------------------------------------------------------------

# Kueue's refusal of an autoscaled RayJob it manages (kubernetes-sigs/kueue pkg/controller/jobs/raycluster/common.go
# ValidateCreate, called from pkg/controller/jobs/rayjob/rayjob_webhook.go validateCreate; before v0.16.0, in
# rayjob_webhook.go itself): a field.Invalid on the *bool, aggregated into one error.
KUEUE_SAID = {
    "v0.16-main": "a kueue managed job should only use autoscaling when workload slicing is enabled",  # main: ff69552
    "v0.13-v0.15": "a kueue managed job should not use autoscaling",
}
PIPELINE = "vlkd-pipeline-20261129-041200-ab12"


def webhook_denial(said: str, newer_api_server: bool, code: int = 403) -> dict[str, Any]:
    """The Status an API server sends when a webhook refuses a RayJob: the webhook's own code (403 from
    controller-runtime's `Denied`, pkg/webhook/admission/response.go v0.24.1) and its message, prefixed by the API
    server (staging/src/k8s.io/apiserver/pkg/admission/plugin/webhook/errors/statuserror.go ToStatusErr): newer ones
    (kubernetes/kubernetes@3d78487) add `<resource> "<name>" is forbidden: ` and the details, older ones
    (kubernetes/kubernetes@5f18afd) send the message alone."""
    if not newer_api_server:
        return status_object(code, "Forbidden", said, {}) | {"details": None}
    details = {"name": PIPELINE, "group": "ray.io", "kind": "rayjobs"}
    return status_object(code, "Forbidden", f'rayjobs.ray.io "{PIPELINE}" is forbidden: {said}', details)


def pipeline_job() -> Any:
    """The GPU pipeline of the goldens, unqueued: its RayCluster is autoscaled (k8s_render)."""
    generate = generate_module()
    job = generate.pipeline_job(generate.gpu_pipeline())
    assert render_rayjob(job, "vlkd")["spec"]["rayClusterSpec"]["enableInTreeAutoscaling"] is True
    return job


@pytest.mark.parametrize("kueue", sorted(KUEUE_SAID))
@pytest.mark.parametrize("newer_api_server", [True, False])
def test_kueues_refusal_of_an_autoscaled_cluster_says_why_and_what_to_do(
    api_server, kubeconfig, newer_api_server, kueue
):
    """Kueue checks a RayJob it manages: one with a queue label, which its mutating webhook gives every RayJob of a
    namespace with a LocalQueue named "default" (pkg/controller/jobframework/defaults.go ApplyDefaultLocalQueue), or
    any RayJob under manageJobsWithoutQueueName (rayjob_webhook.go validateCreate)."""
    refused = f"spec.rayClusterSpec.enableInTreeAutoscaling: Invalid value: true: {KUEUE_SAID[kueue]}"
    said = f'admission webhook "vrayjob.kb.io" denied the request: {refused}'
    api_server.reply("POST", RAYJOBS, 403, webhook_denial(said, newer_api_server))

    message = one_line_error(lambda: KubernetesBackend().submit(pipeline_job()))

    assert message == (
        "Kueue manages RayJobs in namespace vlkd (it has a LocalQueue named default, or Kueue manages jobs without a "
        f"queue name) and refuses an autoscaled cluster (admission webhook 'vrayjob.kb.io': {refused}): submit with "
        "kubernetes.queue: <a LocalQueue of the namespace> (the pipeline then gets fixed worker groups), or in a "
        "namespace Kueue does not manage"
    )


@pytest.mark.parametrize(("newer_api_server", "code"), [(True, 403), (False, 403), (False, 422)])
def test_any_webhooks_refusal_is_one_line_naming_the_webhook_and_what_it_said(
    api_server, kubeconfig, newer_api_server, code
):
    """A webhook's refusal is no missing right, though its code is 403: it is not taken for RBAC's Forbidden."""
    said = 'admission webhook "validation.gatekeeper.sh" denied the request: [require-team-label] you must provide labels: {"team"}'  # noqa: E501
    api_server.reply("POST", RAYJOBS, code, webhook_denial(said, newer_api_server, code))

    message = one_line_error(lambda: KubernetesBackend().submit(pipeline_job()))

    assert message == (
        f"admission webhook 'validation.gatekeeper.sh' refused to create rayjobs vlkd/{PIPELINE}: [require-team-label] "
        'you must provide labels: {"team"}; change what it names (`vlkd render` shows what is sent), or ask the '
        "cluster's admin about that webhook"
    )


def test_a_webhook_refusal_without_explanation_still_names_the_webhook(api_server, kubeconfig):
    said = 'admission webhook "policy.example.com" denied the request without explanation'
    api_server.reply("POST", RAYJOBS, 400, webhook_denial(said, newer_api_server=False, code=400))

    message = one_line_error(lambda: KubernetesBackend().submit(pipeline_job()))

    assert message.startswith(f"admission webhook 'policy.example.com' refused to create rayjobs vlkd/{PIPELINE}: ")
    assert "without explanation" in message


def test_submit_wait_ends_with_why_a_job_did_not_start(monkeypatch, capsys):
    """`vlkd submit --wait` prints the final status with its lines, as `vlkd status` does."""
    from vlkd.backends import submission
    from vlkd.cli import jobs
    from vlkd.errors import NotFoundError

    case = recorded("start-deadline-exceeded")
    failed = rayjob_status(teacher_rayjob(case["status"]))
    failed.why_pending = [f"pod {WORKER} (and 1 more): unschedulable: {NO_FREE_GPU}", GPU_HINT]
    monkeypatch.setattr(submission, "job_status", lambda job_id: failed)

    def no_log(*args: Any, **kwargs: Any) -> Any:
        raise NotFoundError(f"job {JOB_ID} has no log")

    monkeypatch.setattr(submission, "job_logs", no_log)

    assert jobs._follow(JOB_ID, pending_notice=60) == 1
    assert capsys.readouterr().err.splitlines()[-3:] == [
        f"job {JOB_ID}: FAILED Failed: {DID_NOT_START}",
        f"  pod {WORKER} (and 1 more): unschedulable: {NO_FREE_GPU}",
        f"  {GPU_HINT}",
    ]
