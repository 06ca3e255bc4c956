"""The Kubernetes API server's refusals as one line each, with what to do about them: a missing namespace or CRD, a
missing right, expired credentials, a name taken, and an admission webhook's (Kueue's) refusal in its own words."""

from __future__ import annotations

import json
import re
from typing import Any

from vlkd.backends import kueue
from vlkd.backends.k8s_pending import one_line
from vlkd.backends.k8s_render import PLURAL
from vlkd.errors import NotFoundError, VlkdError

SUBMITTER_ROLE = "the Role vlkd-submitter (k8s/base/rbac-submitter.yaml)"
INSTALL_KUBERAY = (
    "helm repo add kuberay https://ray-project.github.io/kuberay-helm/ && "
    "helm install kuberay-operator kuberay/kuberay-operator --namespace kuberay-system --create-namespace"
)


def api_error(exc: Any, verb: str, resource: str, namespace: str, name: str | None) -> VlkdError:
    """One line for an API server's refusal of `verb` on `resource`, with what to do about it."""
    body = _status_body(exc.body)
    said = (body.get("message") or exc.reason or "").strip()
    target = f"{resource} {namespace}/{name}" if name else f"{resource} in namespace {namespace}"
    details = body.get("details") or {}
    if denial := _WEBHOOK_DENIAL.search(said):  # a 403 too, but no missing right: checked first
        return _webhook_denial(
            denial["hook"], one_line(denial["said"] or "without explanation"), verb, target, namespace
        )
    if exc.status == 404 and details.get("kind") == "namespaces":
        return VlkdError(f"namespace {namespace!r} does not exist: apply k8s/ (kubectl apply -k k8s/overlays/...)")
    if exc.status == 404 and resource == PLURAL and not details.get("name"):
        return VlkdError(
            f"the RayJob CRD is not installed (no rayjobs.ray.io/v1): install the KubeRay operator: {INSTALL_KUBERAY}"
        )
    if exc.status == 404:
        return NotFoundError(f"{target} not found")
    if exc.status == 403:
        return VlkdError(
            f"forbidden to {verb} {resource} in namespace {namespace} ({said}): ask an admin to bind you to "
            f"{SUBMITTER_ROLE}"
        )
    if exc.status == 401:
        return VlkdError(f"the API server did not accept your credentials ({said}): log in to the cluster again")
    if exc.status == 409 and verb == "create":
        return VlkdError(
            f"RayJob {namespace}/{name} already exists: cancel that job first, or submit with a new job id"
        )
    return VlkdError(f"the API server refused to {verb} {target} (HTTP {exc.status}): {said}")


# How the API server words an admission webhook's refusal, with the webhook's status code (403 from a
# controller-runtime webhook: pkg/webhook/admission/response.go ValidationResponse, v0.24.1): kubernetes'
# staging/src/k8s.io/apiserver/pkg/admission/plugin/webhook/errors/statuserror.go ToStatusErr, which newer API servers
# (kubernetes/kubernetes@3d78487) prefix with `<resource> "<name>" is forbidden: ` and older ones
# (kubernetes/kubernetes@5f18afd) do not.
_WEBHOOK_DENIAL = re.compile(r'admission webhook "(?P<hook>[^"]+)" denied the request(?:: (?P<said>.*))?', re.DOTALL)


def _webhook_denial(hook: str, said: str, verb: str, target: str, namespace: str) -> VlkdError:
    """One line for an admission webhook's refusal: whose, what it said, and what to do."""
    if kueue_said := kueue.refusal(hook, said, namespace):
        return VlkdError(kueue_said)
    return VlkdError(
        f"admission webhook {hook!r} refused to {verb} {target}: {said}; change what it names (`vlkd render` shows "
        "what is sent), or ask the cluster's admin about that webhook"
    )


def _status_body(text: str | None) -> dict[str, Any]:
    """The API server's `Status` object in an error response, if it sent one (a missing API group answers with
    plain text)."""
    try:
        body = json.loads(text or "")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
