"""Jobs queued through Kueue: `kubernetes.queue` and `kubernetes.priority_class` in the rendered RayJob, and what
`vlkd status` says while Kueue holds a job, read from recorded Workloads (tests/data/kueue/, validated against
Kueue's Workload CRD) and checked on the wire against a fake API server (the fixtures of test_k8s.py)."""

from __future__ import annotations

from typing import Any

import pytest
import test_k8s
import yaml
from prerequisites import require
from test_k8s import (
    JOB_ID,
    RAYJOBS,
    RECORD,
    ROOT,
    crd_errors,
    crd_schema,
    generate_module,
    metadata_problems,
    paper_job,
    schema_validator,
    stored,
    with_resources,
)

from vlkd.backends.base import JobDescription, JobState
from vlkd.backends.k8s import KubernetesBackend, rayjob_status
from vlkd.backends.k8s_render import render_rayjob
from vlkd.backends.kueue import cluster_queue_of, queue_status
from vlkd.errors import SpecError

# The fixtures of test_k8s.py: the RayJob CRD's validator, and a fake API server with a kubeconfig for it.
crd_validator, api_server, kubeconfig = test_k8s.crd_validator, test_k8s.api_server, test_k8s.kubeconfig
CRDS = ROOT.parent / "shared" / "crds"
DATA = ROOT / "tests" / "data" / "kueue"
WORKLOADS = "/apis/kueue.x-k8s.io/v1beta2/namespaces/vlkd/workloads"
UID = "1f0c5b1e-7d43-4e0a-9a57-3b1c2e6f9d10"  # of the RayJob, as `stored` records it
SHORT_OF_GPUS = (
    "couldn't assign flavors to pod set workers: insufficient quota for nvidia.com/gpu in flavor a100, "
    "request > maximum capacity (8 > 4)"
)
NEVER_ENOUGH = (
    "ClusterQueue gpu-a100 can never hold 8 GPU: ask for less (resources.num_workers, resources.gpus_per_worker), "
    "or ask its admin for more quota"
)


def queued(job: JobDescription, queue: str | None = "team-a", priority_class: str | None = "vlkd-high") -> Any:
    kubernetes = job.spec.kubernetes.model_copy(update={"queue": queue, "priority_class": priority_class})
    job.spec = job.spec.model_copy(update={"kubernetes": kubernetes})
    return job


def teacher_on_8_gpus() -> JobDescription:
    """The job the recorded Workloads belong to: the paper's teacher on 4 workers of 2 GPUs, in LocalQueue team-a."""
    return queued(with_resources(paper_job("teacher", JOB_ID), gpus_per_worker=2))


def recorded(name: str) -> dict[str, Any]:
    return yaml.safe_load((DATA / f"{name}.yaml").read_text())


def pods(rayjob: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    return [g["template"] for g in [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]]


# --- Rendering -----------------------------------------------------------------------------------------------------


def test_a_queued_job_is_created_suspended_with_the_queue_label_as_kueue_documents(crd_validator):
    rayjob = render_rayjob(teacher_on_8_gpus(), "vlkd")

    assert rayjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert rayjob["spec"]["suspend"] is True  # Kueue unsuspends it on admission
    # Kueue's conditions for a RayJob: its own cluster, deleted at the end, no autoscaling, few worker groups
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True and "clusterSelector" not in rayjob["spec"]
    # at most 6 worker groups: the head and the submitter take two of the 8 pod sets of an older Kueue's Workload
    assert "enableInTreeAutoscaling" not in cluster and len(cluster["workerGroupSpecs"]) <= 6
    assert all(g["groupName"] != "head" for g in cluster["workerGroupSpecs"])  # Kueue names the head's pod set so
    assert crd_errors(crd_validator, rayjob) == []


def test_the_priority_class_goes_on_every_pod_and_the_queue_label_on_none():
    rayjob = render_rayjob(teacher_on_8_gpus(), "vlkd")

    for template in pods(rayjob):
        assert template["spec"]["priorityClassName"] == "vlkd-high"
        assert "kueue.x-k8s.io/queue-name" not in template["metadata"]["labels"]  # a labelled pod is queued alone
    assert "kueue.x-k8s.io/priority-class" not in rayjob["metadata"]["labels"]  # names a WorkloadPriorityClass


def test_without_queue_or_priority_class_nothing_of_either_is_rendered():
    rayjob = render_rayjob(queued(paper_job("teacher", JOB_ID), None, None), "vlkd")

    assert "suspend" not in rayjob["spec"]
    assert not any(key.startswith("kueue.x-k8s.io/") for key in rayjob["metadata"]["labels"])
    assert all("priorityClassName" not in template["spec"] for template in pods(rayjob))


def test_a_priority_class_alone_needs_no_queue(crd_validator):
    rayjob = render_rayjob(queued(paper_job("teacher", JOB_ID), None), "vlkd")

    assert "suspend" not in rayjob["spec"]
    assert {t["spec"]["priorityClassName"] for t in pods(rayjob)} == {"vlkd-high"}
    assert crd_errors(crd_validator, rayjob) == []


def test_the_queued_rendering_equals_its_golden(crd_validator):
    path = ROOT / "tests" / "data" / "rayjobs" / "teacher-queued.yaml"
    fresh = generate_module().render_goldens()[path]
    assert path.read_text() == fresh, "tests/data/rayjobs/teacher-queued.yaml is stale: run `python k8s/generate.py`"
    golden = yaml.safe_load(path.read_text())
    assert golden["spec"]["suspend"] is True and golden["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert crd_errors(crd_validator, golden) == []


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("queue", "Team_A", "LocalQueue"),
        ("queue", "q" * 64, "LocalQueue"),  # a label value has at most 63 characters
        ("priority_class", "-high", "PriorityClass"),
    ],
)
def test_a_queue_or_priority_class_that_is_no_kubernetes_name_is_refused(field, value, kind):
    from vlkd.specs import parse_spec

    data = yaml.safe_load((ROOT / "examples" / "paper" / "teacher.yaml").read_text())
    with pytest.raises(SpecError, match=rf"kubernetes\.{field}: .* is not a {kind} name: lower-case letters"):
        parse_spec({**data, "kubernetes": {field: value}}, "teacher")


# --- Recorded Kueue objects ------------------------------------------------------------------------------------------


def kueue_errors(obj: dict[str, Any], crd: str) -> list[str]:
    """Why `obj` is not what Kueue's API server would store, by the schema of its own apiVersion."""
    path = CRDS / crd
    require(path.exists(), f"Kueue's CRDs are not in {CRDS} (shared/crds/, next to the repository)")
    version = obj["apiVersion"].split("/")[1]
    validator = schema_validator(crd_schema(path, version, rendered=False))
    problems = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    return problems + metadata_problems(obj["metadata"])


@pytest.mark.parametrize("name", sorted(p.stem for p in DATA.glob("*.yaml") if p.stem.startswith(("pending", "adm"))))
def test_recorded_workloads_are_valid_workloads_of_the_rayjob(name):
    workload = recorded(name)

    assert kueue_errors(workload, "kueue.x-k8s.io_workloads.yaml") == []
    assert workload["metadata"]["labels"]["kueue.x-k8s.io/job-uid"] == UID  # how the backend finds it
    (owner,) = workload["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("RayJob", JOB_ID, UID)
    rendered = render_rayjob(teacher_on_8_gpus(), "vlkd")
    assert [s["template"] for s in workload["spec"]["podSets"][:2]] == pods(rendered)  # Kueue copies the templates


@pytest.mark.parametrize("name", ["preempted", "pods-ready-timeout", "deactivated", "localqueue-team-a"])
def test_recorded_kueue_objects_are_valid(name):
    obj = recorded(name)
    crd = {"Workload": "kueue.x-k8s.io_workloads.yaml", "LocalQueue": "kueue.x-k8s.io_localqueues.yaml"}[obj["kind"]]
    assert kueue_errors(obj, crd) == []


def test_the_workload_schema_check_catches_what_the_api_server_would_refuse():
    workload = recorded("pending-waiting-for-quota")
    del workload["status"]["conditions"][0]["lastTransitionTime"]
    workload["spec"]["podSets"][0]["replicas"] = 1  # not a field: `count` is

    problems = kueue_errors(workload, "kueue.x-k8s.io_workloads.yaml")

    assert any("'lastTransitionTime' is a required property" in p for p in problems)
    assert any("'replicas' was unexpected" in p for p in problems)


# --- What status says while Kueue holds the job ----------------------------------------------------------------------


def queued_rayjob(**status: Any) -> dict[str, Any]:
    return stored(render_rayjob(teacher_on_8_gpus(), "vlkd"), **(status or {"jobDeploymentStatus": "Suspended"}))


def status_with(workload: str | None, rayjob: dict[str, Any] | None = None) -> Any:
    rayjob = rayjob or queued_rayjob()
    found = recorded(workload) if workload else None
    cluster_queue = (cluster_queue_of(found) if found else None) or "gpu-a100"  # as the LocalQueue says
    return queue_status(rayjob_status(rayjob), rayjob, found, cluster_queue)


def test_a_suspended_rayjob_in_a_queue_is_pending_and_one_without_is_stopped():
    assert rayjob_status(queued_rayjob()).state == JobState.PENDING
    assert rayjob_status(queued_rayjob()).message == "Suspended: waiting for Kueue (LocalQueue team-a)"
    unqueued = stored(render_rayjob(paper_job("teacher", JOB_ID), "vlkd"), jobDeploymentStatus="Suspended")
    assert rayjob_status(unqueued).state == JobState.STOPPED


@pytest.mark.parametrize(
    ("workload", "state", "message", "lines"),
    [
        pytest.param(
            "pending-exceeds-capacity",
            JobState.PENDING,
            "waiting for quota in ClusterQueue gpu-a100: 8 GPU requested, at most 4 in the queue",
            [f"Kueue: {SHORT_OF_GPUS}", NEVER_ENOUGH],
            id="more-than-the-queue-holds",
        ),
        pytest.param(
            "pending-exceeds-capacity-v1beta1",  # Kueue 0.14's words, and no resourceRequests
            JobState.PENDING,
            "waiting for quota in ClusterQueue gpu-a100: 8 GPU requested, at most 4 in the queue",
            [
                "Kueue: couldn't assign flavors to pod set workers: insufficient quota for nvidia.com/gpu in flavor "
                "a100, previously considered podsets requests (0) + current podset request (8) > maximum capacity (4)",
                NEVER_ENOUGH,
            ],
            id="more-than-the-queue-holds-older-kueue",
        ),
        pytest.param(
            "pending-waiting-for-quota",
            JobState.PENDING,
            "waiting for quota in ClusterQueue gpu-a100: 8 GPU requested, 4 free",
            [
                "Kueue: couldn't assign flavors to pod set workers: insufficient unused quota for nvidia.com/gpu in "
                "flavor a100, 4 more needed"
            ],
            id="quota-in-use",
        ),
        pytest.param(
            "pending-inadmissible",
            JobState.PENDING,
            "not admissible in Kueue: LocalQueue team-a doesn't exist",
            ["kubernetes.queue names no LocalQueue of the job's namespace: `kubectl get localqueues` lists them"],
            id="no-such-local-queue",
        ),
        pytest.param(
            "preempted",
            JobState.PENDING,
            "preempted by Kueue (prioritization in the ClusterQueue); waiting for quota in ClusterQueue gpu-a100: "
            "8 GPU requested, 0 free",
            [
                "Kueue: couldn't assign flavors to pod set workers: insufficient unused quota for nvidia.com/gpu in "
                "flavor a100, 8 more needed"
            ],
            id="preempted",
        ),
        pytest.param(
            "pods-ready-timeout",
            JobState.PENDING,
            "evicted by Kueue: its pods were not ready in time (eviction 1); back in ClusterQueue gpu-a100 from "
            "2026-11-29T04:24:39Z",
            ["its pods did not all start within Kueue's waitForPodsReady timeout: their events say why"],
            id="pods-not-ready-in-time",
        ),
        pytest.param(
            "deactivated",
            JobState.STOPPED,  # never admitted again unless someone reactivates it: --wait must not wait forever
            "deactivated in Kueue (The workload is deactivated due to exceeding the maximum number of re-queuing "
            "retries): it will not run until reactivated",
            [
                "to run it: kubectl -n vlkd patch workload rayjob-vlkd-teacher-20261129-041200-ab12-1837c "
                """--type merge -p '{"spec":{"active":true}}'; or cancel the job"""
            ],
            id="deactivated",
        ),
    ],
)
def test_a_job_kueue_holds_says_why_from_its_workload(workload, state, message, lines):
    current = status_with(workload)
    assert (current.state, current.message, current.why_pending) == (state, message, lines)


def test_an_admitted_job_whose_cluster_starts_says_where_it_was_admitted():
    initializing = queued_rayjob(jobDeploymentStatus="Initializing")
    initializing["spec"]["suspend"] = False  # Kueue's doing

    current = status_with("admitted", initializing)

    assert current.state == JobState.PENDING
    assert current.message == "admitted by Kueue in ClusterQueue gpu-a100; Initializing: RayCluster starting"


def test_an_admitted_job_kuberay_has_not_unsuspended_yet_is_not_said_to_wait_for_kueue():
    still_suspended = queued_rayjob()
    still_suspended["spec"]["suspend"] = False  # Kueue's doing; KubeRay's status follows on its next pass

    current = status_with("admitted", still_suspended)

    assert (current.state, current.message) == (
        JobState.PENDING,
        "admitted by Kueue in ClusterQueue gpu-a100; KubeRay starts it",
    )


def test_an_admitted_running_job_is_as_its_rayjob_says():
    running = queued_rayjob(jobDeploymentStatus="Running", jobStatus="RUNNING")
    assert status_with("admitted", running) == rayjob_status(running)


def test_a_queued_job_without_a_workload_yet_says_so():
    current = status_with(None)
    assert (current.state, current.message) == (
        JobState.PENDING, "queued in LocalQueue team-a: Kueue has not made a Workload for it yet"
    )  # fmt: skip
    assert current.why_pending == [
        "if this lasts, check that Kueue runs and manages RayJobs (integration ray.io/rayjob) in namespace vlkd"
    ]


# --- On the wire -----------------------------------------------------------------------------------------------------


def workload_list(version: str, *items: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"kueue.x-k8s.io/{version}", "kind": "WorkloadList", "metadata": {"resourceVersion": "48300"},
        "items": list(items),
    }  # fmt: skip


def test_status_of_a_queued_job_reads_its_workload_by_job_uid_and_its_local_queue(api_server, kubeconfig):
    api_server.reply("GET", f"{RAYJOBS}/{JOB_ID}", 200, queued_rayjob())
    api_server.reply("GET", WORKLOADS, 200, workload_list("v1beta2", recorded("pending-exceeds-capacity")))
    local_queues = "/apis/kueue.x-k8s.io/v1beta2/namespaces/vlkd/localqueues"
    api_server.reply("GET", f"{local_queues}/team-a", 200, recorded("localqueue-team-a"))

    current = KubernetesBackend().status(JOB_ID, RECORD)

    assert (current.state, current.message) == (
        JobState.PENDING, "waiting for quota in ClusterQueue gpu-a100: 8 GPU requested, at most 4 in the queue"
    )  # fmt: skip
    assert current.why_pending == [f"Kueue: {SHORT_OF_GPUS}", NEVER_ENOUGH]
    _, workloads, local_queue = api_server.requests  # and no pods or events: a suspended job has none
    assert (workloads["path"], workloads["query"]) == (WORKLOADS, {"labelSelector": f"kueue.x-k8s.io/job-uid={UID}"})
    assert local_queue["path"] == f"{local_queues}/team-a"


def test_an_older_kueue_is_read_through_v1beta1(api_server, kubeconfig):
    api_server.reply("GET", f"{RAYJOBS}/{JOB_ID}", 200, queued_rayjob())
    older = "/apis/kueue.x-k8s.io/v1beta1/namespaces/vlkd"  # and no route for v1beta2: this Kueue predates it
    waiting = recorded("pending-exceeds-capacity-v1beta1")
    api_server.reply("GET", f"{older}/workloads", 200, workload_list("v1beta1", waiting))
    local_queue = recorded("localqueue-team-a") | {"apiVersion": "kueue.x-k8s.io/v1beta1"}
    api_server.reply("GET", f"{older}/localqueues/team-a", 200, local_queue)

    current = KubernetesBackend().status(JOB_ID, RECORD)

    assert current.message == "waiting for quota in ClusterQueue gpu-a100: 8 GPU requested, at most 4 in the queue"
    paths = [r["path"] for r in api_server.requests]
    assert paths[1:] == [WORKLOADS, f"{older}/workloads", f"{older}/localqueues/team-a"]


def test_an_admitted_workload_names_its_cluster_queue_without_reading_the_local_queue(api_server, kubeconfig):
    initializing = queued_rayjob(jobDeploymentStatus="Initializing")
    initializing["spec"]["suspend"] = False
    api_server.reply("GET", f"{RAYJOBS}/{JOB_ID}", 200, initializing)
    api_server.reply("GET", WORKLOADS, 200, workload_list("v1beta2", recorded("admitted")))
    api_server.reply("GET", test_k8s.PODS, 200, test_k8s.pod_list())
    api_server.reply("GET", test_k8s.EVENTS, 200, test_k8s.event_list())

    current = KubernetesBackend().status(JOB_ID, RECORD)

    assert current.message == "admitted by Kueue in ClusterQueue gpu-a100; Initializing: RayCluster starting"
    assert not any("localqueues" in r["path"] for r in api_server.requests)
    assert any(r["path"].endswith("/pods") for r in api_server.requests)  # its pods now exist: why they wait


def test_a_queued_job_on_a_cluster_without_kueue_says_nothing_will_start_it(api_server, kubeconfig):
    api_server.reply("GET", f"{RAYJOBS}/{JOB_ID}", 200, queued_rayjob())  # and no route for Kueue's API

    current = KubernetesBackend().status(JOB_ID, RECORD)

    assert (current.state, current.message) == (JobState.PENDING, "Suspended: waiting for Kueue (LocalQueue team-a)")
    assert current.why_pending == [
        "its Kueue Workload could not be read: Kueue is not installed (no workloads.kueue.x-k8s.io), so nothing will "
        "start a queued job: install Kueue (v0.14 or later), or cancel and submit without kubernetes.queue"
    ]


def test_the_submitter_role_may_read_workloads_and_local_queues():
    role = next(yaml.safe_load_all((ROOT / "k8s" / "base" / "rbac-submitter.yaml").read_text()))
    rules = [r for r in role["rules"] if r["apiGroups"] == ["kueue.x-k8s.io"]]
    assert rules == [
        {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads", "localqueues"], "verbs": ["get", "list"]}
    ]
