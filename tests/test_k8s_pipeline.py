"""The RayJob of a pipeline job (`vlkd pipeline submit --backend k8s`): one RayCluster whose head runs the drivers
and whose worker groups, one per shape of worker the stages need, Ray's autoscaler sizes as the stages run; queued
through Kueue, fixed groups instead. Goldens in tests/data/rayjobs/ (k8s/generate.py), checked against KubeRay's
RayJob CRD with the helpers of test_k8s.py."""

from __future__ import annotations

from typing import Any

import pytest
import test_k8s
import yaml
from test_k8s import ROOT, crd_errors, generate_module

from vlkd.backends.k8s_render import render_rayjob
from vlkd.errors import VlkdError

crd_validator = test_k8s.crd_validator  # the RayJob CRD's validator, a fixture of test_k8s.py
GOLDENS = ROOT / "tests" / "data" / "rayjobs"
PIPELINE_GOLDENS = ("pipeline-tiny", "pipeline-gpu", "pipeline-gpu-queued")


def render(data: dict[str, Any]) -> dict[str, Any]:
    return render_rayjob(generate_module().pipeline_job(data), "vlkd")


def gpu_pipeline(**kubernetes: Any) -> dict[str, Any]:
    """The GPU pipeline of the goldens: a teacher on 2 workers of 1 GPU and 8 CPUs (48Gi), in-process students of 1
    GPU and 4 CPUs (16Gi), an eval on 2 workers of 1 GPU and 4 CPUs (24Gi); preprocess and text on 1 CPU."""
    data = generate_module().gpu_pipeline()
    return {**data, "kubernetes": kubernetes} if kubernetes else data


def tiny_pipeline() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "examples" / "tiny" / "pipeline.yaml").read_text())


def groups(rayjob: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["groupName"]: g for g in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]}


def sizes(rayjob: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    return {name: (g["replicas"], g["minReplicas"], g["maxReplicas"]) for name, g in groups(rayjob).items()}


def limits(group: dict[str, Any]) -> dict[str, Any]:
    return group["template"]["spec"]["containers"][0]["resources"]["limits"]


# --- Goldens -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PIPELINE_GOLDENS)
def test_each_pipeline_golden_is_a_fresh_rendering_the_crd_accepts(name, crd_validator):
    path = GOLDENS / f"{name}.yaml"
    assert path.read_text() == generate_module().render_goldens()[path], f"{path.name} is stale: run k8s/generate.py"
    assert crd_errors(crd_validator, yaml.safe_load(path.read_text())) == []


# --- The cluster -----------------------------------------------------------------------------------------------------


def test_each_worker_shape_gets_a_group_sized_for_the_stage_that_needs_most_of_it():
    rayjob = render({**gpu_pipeline(), "parallelism": 1})

    # preprocess and text: 1 worker of 1 CPU; the teacher: 2 of 1 GPU/8 CPUs; students (in-process) 1 and eval 2
    # of 1 GPU/4 CPUs. Stages run one after another, so a group needs the most, not the sum. Each pod also carries
    # its share of the drivers' tasks (`driver_cpus`), as the head offers Ray none: text's 2 on its one worker, the
    # teacher's 1 spread over 2 (a whole CPU each: KubeRay rounds a pod's CPUs up), a student's 1 on its one.
    assert sizes(rayjob) == {"cpu1": (0, 0, 1), "gpu1-cpu8": (0, 0, 2), "gpu1-cpu4": (0, 0, 2)}
    assert limits(groups(rayjob)["gpu1-cpu8"]) == {"cpu": "9", "memory": "48Gi", "nvidia.com/gpu": 1}
    assert limits(groups(rayjob)["cpu1"]) == {"cpu": "3", "memory": "12Gi"}  # no memory asked: 4Gi per CPU


@pytest.mark.parametrize(("parallelism", "students"), [(2, 2), (3, 3), (8, 3)])
def test_stages_that_may_run_at_once_get_workers_for_all_of_them_together(parallelism, students):
    """The pipeline job runs `parallelism` stages at once (its driver's `RayBackend`), each as soon as the stages
    it reads from have published: a group holds what stages that may overlap ask together, up to `parallelism` of
    them, never what a stage asks beside one it waits for, directly or through others."""
    data = gpu_pipeline()
    baseline = next(s for s in data["students"] if not s["kd"])
    data["students"].append({**baseline, "name": "tiny-baseline-2"})  # reads only text too
    data["eval"]["resources"] |= {"num_workers": 1, "cpus_per_worker": 8}  # the teacher's shape, read after it
    data["parallelism"] = parallelism

    # preprocess beside text; the KD student and the two baselines (which read no teacher) beside each other; the
    # teacher's 2 workers and the eval's 1 never overlap
    assert sizes(render(data)) == {"cpu1": (0, 0, 2), "gpu1-cpu8": (0, 0, 2), "gpu1-cpu4": (0, 0, students)}
    queued = sizes(render({**data, "kubernetes": {"queue": "team-a"}}))  # held for the whole pipeline
    assert queued == {"cpu1": (2, 2, 2), "gpu1-cpu8": (2, 2, 2), "gpu1-cpu4": (students,) * 3}


def test_stages_of_one_shape_share_a_group_with_the_largest_memory_among_them():
    group = groups(render(gpu_pipeline()))["gpu1-cpu4"]  # students ask 16Gi, eval 24Gi

    assert limits(group) == {"cpu": "5", "memory": "24Gi", "nvidia.com/gpu": 1}


def test_a_gpu_stage_that_trains_in_process_gets_a_gpu_worker_of_its_shape():
    data = {**gpu_pipeline(), "parallelism": 1}
    data["eval"]["resources"]["cpus_per_worker"] = 2  # leave the students' shape to the students alone
    rayjob = render(data)

    # Their entrypoint asks for 1 GPU (RayBackend.request), which only a worker of their group has.
    assert sizes(rayjob)["gpu1-cpu4"] == (0, 0, 1)
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in head["containers"][0]["resources"]["limits"]


def test_the_head_runs_the_drivers_sized_from_kubernetes_head_cpus_and_memory():
    data = gpu_pipeline()
    data["kubernetes"] = {"head_cpus": 3, "head_memory": "6Gi"}
    rayjob = render(data)

    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["resources"]["limits"] == {"cpu": "3", "memory": "6Gi"}  # no GPU, whatever the stages
    assert "nodeSelector" not in head and "tolerations" not in head
    # The driver asks Ray for nothing, so Ray runs it on the head.
    assert not any(key.startswith("entrypoint") and key != "entrypoint" for key in rayjob["spec"])


def test_gpu_groups_run_where_their_stages_asked():
    for name, group in groups(render(gpu_pipeline())).items():
        pod = group["template"]["spec"]
        if name.startswith("gpu"):
            assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        else:
            assert "tolerations" not in pod
        assert "nodeSelector" not in pod  # the stages name none


def test_the_tiny_pipeline_is_a_head_and_one_small_cpu_group():
    rayjob = render(tiny_pipeline())

    assert sizes(rayjob) == {"cpu1": (0, 0, 2)}  # every tiny stage asks 1 CPU, none a GPU; two run at once


# --- Autoscaling, or a queue ---------------------------------------------------------------------------------------


def test_unqueued_the_autoscaler_starts_workers_as_stages_need_them_and_removes_idle_ones(crd_validator):
    rayjob = render(gpu_pipeline())

    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert (cluster["autoscalerOptions"]["version"], cluster["autoscalerOptions"]["idleTimeoutSeconds"]) == ("v2", 60)
    assert all(g["minReplicas"] == 0 == g["replicas"] for g in groups(rayjob).values())
    # The autoscaler removes a worker by letting its pod end: a restarted one would hold its GPU.
    assert {g["template"]["spec"]["restartPolicy"] for g in groups(rayjob).values()} == {"Never"}
    assert "suspend" not in rayjob["spec"]
    assert crd_errors(crd_validator, rayjob) == []


def test_queued_the_pipeline_holds_fixed_groups_that_kueue_admits_whole(crd_validator):
    rayjob = render(gpu_pipeline(queue="team-a"))

    cluster = rayjob["spec"]["rayClusterSpec"]
    assert "enableInTreeAutoscaling" not in cluster and "autoscalerOptions" not in cluster  # Kueue refuses it
    assert sizes(rayjob) == {"cpu1": (2, 2, 2), "gpu1-cpu8": (2, 2, 2), "gpu1-cpu4": (2, 2, 2)}
    assert all("restartPolicy" not in g["template"]["spec"] for g in groups(rayjob).values())
    assert rayjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert rayjob["spec"]["suspend"] is True and rayjob["spec"]["shutdownAfterJobFinishes"] is True
    assert crd_errors(crd_validator, rayjob) == []


def test_a_queued_pipeline_of_more_worker_shapes_than_kueue_admits_is_refused():
    data = gpu_pipeline(queue="team-a")
    student = data["students"][0]
    data["students"] = [  # with preprocess and text, teacher and eval: 7 shapes
        {**student, "name": f"student-{cpus}", "resources": {"num_workers": 0, "cpus_per_worker": cpus}}
        for cpus in (2, 3, 5, 6)
    ]

    with pytest.raises(VlkdError, match=r"7 shapes of worker .*at most 6 worker groups.*without kubernetes\.queue"):
        render(data)
    del data["kubernetes"]
    assert len(groups(render(data))) == 7  # unqueued, any number


def test_stages_of_one_size_on_different_nodes_are_refused():
    data = gpu_pipeline()
    data["eval"]["resources"]["node_selector"] = {"gpu": "h100"}

    with pytest.raises(VlkdError, match=r"stages distill:tiny-nst-crd and eval .* gpu1-cpu4 on different nodes"):
        render(data)


def test_pipeline_render_prints_the_rayjob_submit_would_send(vlkd_cli, new_bucket, s3_endpoint):
    """The pipeline's dry run: validated spec in, the RayJob out, nothing sent; on the local backend, one line."""
    args = ["pipeline", "render", str(ROOT / "examples/tiny/pipeline.yaml"), "--namespace", "vlkd"]
    bucket = new_bucket()
    rendered = vlkd_cli(*args, "--backend", "k8s", "--store", f"s3://{bucket}/p", env={"AWS_ENDPOINT_URL": s3_endpoint})
    assert rendered.returncode == 0, rendered.stderr
    rayjob = yaml.safe_load(rendered.stdout)
    assert rayjob["kind"] == "RayJob" and rayjob["metadata"]["labels"]["vlkd.io/stage"] == "pipeline"
    assert rayjob["spec"]["entrypoint"].startswith(f"python -m vlkd.jobs.pipeline --spec s3://{bucket}/p/jobs/")
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "AWS_REGION", "value": "us-east-1"} in head["env"]  # the bucket's, asked of S3
    assert set(groups(rayjob)) == set(groups(render(tiny_pipeline())))
    local = vlkd_cli(*args, "--backend", "local")
    assert local.returncode == 1 and local.stderr.strip() == (
        "error: a pipeline job runs on a cluster (--backend ray or k8s): here, `vlkd pipeline run`"
    )
