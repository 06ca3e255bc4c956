"""checkov, a policy scanner for Kubernetes manifests and Dockerfiles, fails none of its checks on what vlkd deploys.

- Kubernetes: every object of `kubectl kustomize` of k8s/base and of each overlay, and of every golden rendering in
  tests/data/rayjobs/, with each RayJob replaced by the Pods KubeRay makes of it (tests/kuberay_pods.py): checkov
  judges Pods, not RayJobs. The base's output is the committed templates of k8s/base/rayjobs/ with the image set.
- The Dockerfile.
One checkov run scans every Kubernetes source, so that the NetworkPolicy of k8s/base covers the goldens' pods too, as
it does in the namespace they are submitted to.
A check that does not fit is skipped where it applies, with its reason: in a pod template's or an object's
annotations, `checkov.io/skip1: CKV_K8S_8=reason` (the reason may not hold a `=`), in the Dockerfile a comment
`#checkov:skip=CKV_DOCKER_2:reason`. The section "Scanner skips" of k8s/README.md lists every skipped check.
checkov runs offline (no API key, no downloads from the platform, no update check) and once per kind of input.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from kuberay_pods import pods_of
from prerequisites import require

ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZATIONS = ("k8s/base", "k8s/overlays/dev", "k8s/overlays/gpu")
GOLDENS = ROOT / "tests" / "data" / "rayjobs"
CHECK_ID = re.compile(r"CKV2?_[A-Z0-9]+_\d+")
OFFLINE = {"BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"}


def checkov(*args: str) -> list[dict[str, Any]]:
    """checkov's JSON report, one entry per framework that found something to check."""
    executable = shutil.which("checkov")
    require(executable is not None, "checkov is not on PATH (make setup installs it into .venv/checkov)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BC_API_KEY", "PRISMA_"))} | OFFLINE
    command = [executable, *args, "--output", "json", "--soft-fail", "--skip-download"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stderr[-3000:]}"
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    return [r for r in reports if "results" in r]  # a framework with no resource reports only a summary


def scanned_objects(source: str) -> list[dict[str, Any]]:
    """The objects of a kustomization (kubectl kustomize) or a YAML file, each RayJob as KubeRay's Pods."""
    if source.endswith(".yaml"):
        objects = list(yaml.safe_load_all((ROOT / source).read_text()))
    else:
        require(shutil.which("kubectl") is not None, "kubectl (with kustomize) is not on PATH")
        built = subprocess.run(["kubectl", "kustomize", str(ROOT / source)], capture_output=True, text=True, timeout=60)
        assert built.returncode == 0, built.stderr
        objects = list(yaml.safe_load_all(built.stdout))
    return [pod for o in objects if o for pod in (pods_of(o) if o["kind"] == "RayJob" else [o])]


def sources() -> list[str]:
    return [*KUSTOMIZATIONS, *(str(path.relative_to(ROOT)) for path in sorted(GOLDENS.glob("*.yaml")))]


@pytest.fixture(scope="module")
def kubernetes_results(tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    """The checks of one checkov run over every source, each written to a file of its own; by outcome, each check
    with the source it came from."""
    folder = tmp_path_factory.mktemp("checkov")
    files = {}
    for source in sources():
        name = source.replace("/", "--") + ("" if source.endswith(".yaml") else ".yaml")
        (folder / name).write_text(yaml.safe_dump_all(scanned_objects(source), sort_keys=False))
        files[name] = source
    results = defaultdict(list)
    for report in checkov("--directory", str(folder), "--framework", "kubernetes"):
        assert report["summary"]["parsing_errors"] == 0, report["results"].get("parsing_errors")
        for outcome in ("passed_checks", "failed_checks", "skipped_checks"):
            for check in report["results"][outcome]:
                results[outcome].append({**check, "file_path": files[Path(check["file_path"]).name]})
    return results


@pytest.fixture(scope="module")
def dockerfile_results() -> dict[str, list[dict[str, Any]]]:
    (report,) = checkov("--file", str(ROOT / "Dockerfile"), "--framework", "dockerfile")
    outcomes = ("passed_checks", "failed_checks", "skipped_checks")
    return {
        outcome: [{**check, "file_path": "Dockerfile"} for check in report["results"][outcome]] for outcome in outcomes
    }


def failures(checks: list[dict[str, Any]]) -> str:
    """One line per failed check and resource: id, name, resource, the sources it fails in."""
    where = defaultdict(list)
    for check in checks:
        where[(check["check_id"], check["check_name"], check["resource"])].append(check["file_path"])
    lines = [
        f"{i} {name}: {resource} [{', '.join(sorted(set(f)))}]" for (i, name, resource), f in sorted(where.items())
    ]
    advice = "fix each, or skip it where it applies with its reason and list it in k8s/README.md's Scanner skips"
    return f"{len(checks)} failed checks ({advice}):\n" + "\n".join(lines)


def test_what_vlkd_deploys_on_kubernetes_fails_no_checkov_check(kubernetes_results):
    assert kubernetes_results["passed_checks"], "checkov checked nothing"
    if kubernetes_results["failed_checks"]:
        pytest.fail(failures(kubernetes_results["failed_checks"]), pytrace=False)


def test_the_image_fails_no_checkov_check(dockerfile_results):
    assert dockerfile_results["passed_checks"], "checkov checked nothing"
    if dockerfile_results["failed_checks"]:
        pytest.fail(failures(dockerfile_results["failed_checks"]), pytrace=False)


def readme_skips() -> set[str]:
    """The check ids of k8s/README.md's section "Scanner skips": those that begin an item of a list or a row of a
    table, in backticks and separated by commas (`- `CKV_K8S_8`, `CKV_K8S_9` (probes): reason`)."""
    text = (ROOT / "k8s" / "README.md").read_text()
    section = re.search(r"^#+ [^\n]*Scanner skips[^\n]*\n(.*?)(?=^#+ |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert section, 'k8s/README.md has no section "Scanner skips"'
    ids = rf"`{CHECK_ID.pattern}`(?:,\s*`{CHECK_ID.pattern}`)*"
    leading = [re.match(rf"\s*[-*|]\s*({ids})", line) for line in section[1].splitlines()]
    return {check for match in leading if match for check in CHECK_ID.findall(match[1])}


def reason(check: dict[str, Any]) -> str:
    """Why a skipped check is skipped: the text after `=` (annotation) or `:` (Dockerfile comment)."""
    comment = check["check_result"].get("suppress_comment") or ""
    return "" if comment == "No comment provided" else comment.strip()


def test_every_skipped_check_gives_its_reason_and_is_the_readmes_list(kubernetes_results, dockerfile_results):
    skipped = kubernetes_results["skipped_checks"] + dockerfile_results["skipped_checks"]
    unexplained = [f"{c['check_id']} {c['resource']}" for c in skipped if not reason(c)]
    assert unexplained == []
    found, listed = {c["check_id"] for c in skipped}, readme_skips()
    assert found == listed, f"skipped, not in k8s/README.md: {found - listed}; listed, not skipped: {listed - found}"


# --- The Pods of a RayJob ----------------------------------------------------------------------------------------


def rayjob(**cluster: Any) -> dict[str, Any]:
    """A RayJob of a head and one worker group, each template labelled and annotated; `cluster` adds to its
    rayClusterSpec."""

    def template(container: str) -> dict[str, Any]:
        metadata = {"labels": {"vlkd.io/stage": "text"}, "annotations": {"checkov.io/skip1": "CKV_K8S_43=a tag"}}
        ray = {"name": container, "image": "vlkd:1", "securityContext": {"runAsNonRoot": True}}
        return {"metadata": metadata, "spec": {"containers": [{**ray, "resources": {"limits": {"memory": "4Gi"}}}]}}

    spec = {"headGroupSpec": {"template": template("ray-head")}}
    spec["workerGroupSpecs"] = [{"groupName": "cpu4", "replicas": 3, "template": template("ray-worker")}]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": "vlkd-text", "namespace": "vlkd"},
        "spec": {"entrypoint": "python -m vlkd.jobs.text", "rayClusterSpec": {**spec, **cluster}},
    }


def test_a_rayjob_is_a_head_pod_a_pod_per_worker_group_and_a_submitter_pod():
    pods = pods_of(rayjob())
    assert [p["metadata"]["name"] for p in pods] == ["vlkd-text-head", "vlkd-text-cpu4-worker", "vlkd-text-submitter"]
    assert {(p["kind"], p["metadata"]["namespace"]) for p in pods} == {("Pod", "vlkd")}
    for pod in pods[:2]:  # a template's metadata, so that the checkov skips written there apply
        assert pod["metadata"]["annotations"] == {"checkov.io/skip1": "CKV_K8S_43=a tag"}
        assert pod["metadata"]["labels"]["vlkd.io/stage"] == "text"


def test_the_ray_containers_get_kuberays_probes_command_and_shared_memory():
    head, worker, _ = pods_of(rayjob())
    for pod in (head, worker):
        ray = pod["spec"]["containers"][0]
        assert "livenessProbe" in ray and "readinessProbe" in ray
        assert {"name": "shared-mem", "mountPath": "/dev/shm"} in ray["volumeMounts"]
        assert {"name": "shared-mem", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}} in pod["spec"]["volumes"]
        assert ray["command"] == ["/bin/bash", "-c", "--"] and "ray start" in ray["args"][0]


def test_a_worker_waits_for_the_head_in_an_init_container_with_the_ray_containers_security_context():
    worker = pods_of(rayjob())[1]
    (wait,) = worker["spec"]["initContainers"]
    assert wait["name"] == "wait-gcs-ready"
    assert wait["securityContext"] == {"runAsNonRoot": True}
    assert wait["resources"]["limits"] == {"cpu": "200m", "memory": "256Mi"}


def test_autoscaling_adds_kuberays_sidecar_merged_with_the_autoscaler_options():
    options = {
        "securityContext": {"runAsNonRoot": True},
        "resources": {"requests": {"cpu": "1"}},
        "env": [{"name": "A", "value": "1"}],
    }
    assert [c["name"] for c in pods_of(rayjob())[0]["spec"]["containers"]] == ["ray-head"]
    head = pods_of(rayjob(enableInTreeAutoscaling=True, autoscalerOptions=options))[0]
    ray, autoscaler = head["spec"]["containers"]
    assert autoscaler["name"] == "autoscaler" and autoscaler["image"] == ray["image"]
    assert autoscaler["securityContext"] == {"runAsNonRoot": True}  # replaced
    assert autoscaler["resources"] == {"requests": {"cpu": "1"}}  # replaced
    assert autoscaler["env"][-1] == {"name": "A", "value": "1"} and len(autoscaler["env"]) > 1  # appended
    assert {"name": "ray-logs", "mountPath": "/tmp/ray"} in autoscaler["volumeMounts"]
    assert head["spec"]["serviceAccountName"] == "vlkd-text"  # the template names none: the cluster's


def test_the_submitter_is_kuberays_default_unless_the_rayjob_gives_a_submitter_template():
    job = rayjob()
    (default,) = pods_of(job)[-1]["spec"]["containers"]
    assert default["name"] == "ray-job-submitter" and default["image"] == "vlkd:1"
    assert default["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert "securityContext" not in default
    container = {"name": "submit", "image": "x", "command": ["run"]}
    annotations = {"checkov.io/skip1": "CKV_K8S_8=why"}
    job["spec"]["submitterPodTemplate"] = {
        "metadata": {"annotations": annotations},
        "spec": {"containers": [container]},
    }
    submitter = pods_of(job)[-1]
    assert submitter["metadata"]["annotations"] == annotations
    (given,) = submitter["spec"]["containers"]
    assert given["command"] == ["run"]  # a command the template sets is kept
    assert {"name": "PYTHONUNBUFFERED", "value": "1"} in given["env"]


def test_ray_token_auth_gives_the_ray_containers_and_the_submitter_the_token_of_a_secret():
    token = {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": "vlkd-text", "key": "auth_token"}}}
    assert all(token not in c.get("env", []) for p in pods_of(rayjob()) for c in p["spec"]["containers"])
    head, worker, submitter = pods_of(rayjob(authOptions={"mode": "token"}))
    for container in (
        head["spec"]["containers"][0],
        *worker["spec"]["initContainers"],
        worker["spec"]["containers"][0],
    ):
        assert token in container["env"], container["name"]
    assert token in submitter["spec"]["containers"][0]["env"]
