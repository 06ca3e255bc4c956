"""Parts every stage spec shares: strictness, resources, storage, artifact names, refs and data sources."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from vlkd.errors import RefError, StorageError
from vlkd.refs import KINDS, ArtifactRef, check_name
from vlkd.storage import normalize_store_uri


class StrictModel(BaseModel):
    """Unknown fields are errors: a misspelt option must never be silently ignored."""

    # No inf nor NaN (YAML's .inf, .nan): `gt=0` lets infinity through, and no option means either.
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


def _as_value_error(check: Any) -> Any:
    """Run a vlkd check and report its `VlkdError` as a pydantic error at the field's path."""

    def run(value: Any) -> Any:
        try:
            return check(value)
        except (RefError, StorageError) as exc:
            raise ValueError(str(exc)) from None

    return run


# Non-negative, as numpy's generators need; below 2^32, so the training loop's `seed * 1000 + rank` fits torch's.
Seed = Annotated[int, Field(ge=0, lt=2**32, description="a random seed, 0 to 2^32 - 1")]

ArtifactName = Annotated[
    str,
    AfterValidator(_as_value_error(check_name)),
    Field(description="artifact name: letters, digits, '.', '_', '-'"),
]


def ref_of(*kinds: str) -> Any:
    """An `ArtifactRef` field that accepts only the given kinds (a teacher ref where a corpus is due is an
    error at validation, not a crash an hour into a job)."""
    assert all(k in KINDS for k in kinds)

    def check(ref: ArtifactRef) -> ArtifactRef:
        if ref.kind not in kinds:
            raise ValueError(f"expected a {' or '.join(kinds)} artifact ref (e.g. {kinds[0]}/NAME:v1), got {ref}")
        return ref

    pattern = rf"^({'|'.join(kinds)})/[A-Za-z0-9._-]+(:[A-Za-z0-9._-]+)?$"
    return Annotated[ArtifactRef, AfterValidator(check), WithJsonSchema({"type": "string", "pattern": pattern})]


FeaturesRef = ref_of("features")
TokenizerRef = ref_of("tokenizer")
CorpusRef = ref_of("corpus")
TeacherRef = ref_of("teacher")
ModelRef = ref_of("student", "teacher")

_URI = re.compile(r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|file:///.*)$")


def _check_source(value: str, kind: str, uris: str, what_else: str) -> str:
    """`value` is a URI of a scheme jobs read (`uris` says which) or a ref to an artifact of `kind`; `what_else`
    completes the message when it is neither."""
    if "://" in value:
        if not _URI.match(value):
            raise ValueError(f"unsupported URI {value!r}: use {uris}")
        return value
    try:
        ref = ArtifactRef.parse(value)
    except RefError:
        ref = None
    if ref is None or ref.kind != kind:
        raise ValueError(f"{value!r} {what_else}")
    return value


def _check_data_source(value: str) -> str:
    return _check_source(
        value,
        "dataset",
        "s3://BUCKET/PREFIX or file:///ABSOLUTE/PATH",
        "is neither a URI nor a dataset ref: use s3://BUCKET/PREFIX, file:///ABSOLUTE/PATH "
        "or dataset/NAME[:vN] (imported with `vlkd artifacts push dataset/NAME PATH`)",
    )


DataSource = Annotated[
    str,
    AfterValidator(_check_data_source),
    Field(description="s3://BUCKET/PREFIX, file:///PATH, or a dataset artifact ref"),
]


def _check_weights_source(value: str) -> str:
    if value.startswith("hf://") and value.count("/") >= 3:
        return value
    return _check_source(
        value,
        "weights",
        "s3://..., file:///..., hf://ORG/NAME or weights/NAME",
        "is not a weights source: use s3://..., file:///..., a Hugging Face hub id as "
        "hf://ORG/NAME (needs internet), or weights/NAME[:vN] (imported with `vlkd artifacts push`)",
    )


WeightsSource = Annotated[
    str,
    AfterValidator(_check_weights_source),
    Field(description="s3://..., file:///..., hf://ORG/NAME (a hub id) or a weights artifact ref"),
]


def quantity_bytes(quantity: str) -> int:
    """Bytes in a Kubernetes memory quantity such as `16Gi` or `500M`, rounded up to a whole byte as Kubernetes
    rounds a memory request."""
    # Imported here: the Kubernetes client takes about 0.3 s to load, which `vlkd --help` must not pay.
    from kubernetes.utils import parse_quantity

    try:
        value = parse_quantity(quantity)
    except ValueError:
        value = None
    # parse_quantity reads the number with Python's Decimal, which also takes NaN, negatives, spaces and `_`: the API
    # server does not, and would refuse the RayJob only at submission.
    if value is None or not value.is_finite() or value < 0 or any(c.isspace() or c == "_" for c in quantity):
        raise ValueError(f"invalid memory quantity {quantity!r}: use a Kubernetes quantity such as 16Gi or 512Mi")
    return math.ceil(value)


def _check_quantity(value: str) -> str:
    quantity_bytes(value)
    return value


class Toleration(StrictModel):
    """A Kubernetes toleration (core/v1 Toleration), e.g. for the `nvidia.com/gpu` taint of GPU nodes."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    @model_validator(mode="after")
    def _as_the_api_server_checks(self) -> Toleration:
        """The API server's own rules (core validation's `validateTolerations`), which the RayJob CRD's schema does
        not carry: a RayJob breaking them is accepted, and only its pods are refused, so the job never starts."""
        if self.operator == "Exists" and self.value:
            raise ValueError(
                f"operator Exists tolerates every value of the taint {self.key!r}: remove value {self.value!r}, "
                "or use operator: Equal"
            )
        if self.operator == "Equal" and not self.key:
            raise ValueError("operator Equal needs a key: name the taint's key, or use operator: Exists")
        return self


# A Kubernetes object name (a DNS-1123 subdomain); how long it may be depends on where it goes.
_OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _object_name(kind: str, max_length: int) -> Any:
    def check(value: str) -> str:
        if len(value) > max_length or not _OBJECT_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a {kind} name: lower-case letters, digits, '-' and '.', starting and ending with a "
                f"letter or digit, at most {max_length} characters"
            )
        return value

    return AfterValidator(check)


class KubernetesSpec(StrictModel):
    """How the `k8s` backend runs the job as a KubeRay RayJob (ignored by the other backends)."""

    image: str | None = Field(None, description="container image; default: the CLI's --image")
    namespace: str | None = Field(None, description="default: the kubeconfig context's namespace")
    service_account: str = Field(
        "vlkd-job", description="ServiceAccount of the workers, and of the head unless autoscaled: no API rights"
    )
    autoscaler_service_account: str = Field(
        "vlkd-autoscaler",
        description="ServiceAccount of an autoscaled head (`vlkd pipeline submit` without a queue): KubeRay binds "
        "its autoscaler Role to it, and only the autoscaler container gets its token",
    )
    submitter_service_account: str = Field(
        "vlkd-job-submitter", description="ServiceAccount of KubeRay's submitter pod (runs `ray job submit`)"
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Secrets to pull the image with, on every pod of the job"
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None,
        description="default: Always for an image by tag (a re-pushed tag is pulled again), IfNotPresent for one "
        "by digest; IfNotPresent for images loaded into kind or minikube",
    )
    s3_secret: str | None = Field(
        "vlkd-s3",
        description="Secret holding AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; null: the pods' workload identity "
        "(IRSA, EKS Pod Identity, web identity) through the SDK's default credential chain",
    )
    pod_annotations: dict[str, str] = Field(
        default_factory=dict,
        description="annotations of every pod of the job, e.g. karpenter.sh/do-not-disrupt: 'true'",
    )
    ttl_seconds_after_finished: int = Field(
        60, ge=0, description="keep the finished RayCluster this long (the job's log is in the store)"
    )
    start_deadline_seconds: int | None = Field(
        1800,
        gt=0,
        description="fail the job when its RayCluster is not running this long after KubeRay starts it (after Kueue "
        "admits it, when queued): an image that cannot be pulled, a pod no node takes, a quota; null: wait forever",
    )
    active_deadline_seconds: int | None = Field(None, gt=0, description="fail the job after this long")
    backoff_limit: int = Field(
        3,
        ge=0,
        description="new RayClusters after a failure (a preempted or lost node); the same job id resumes from its "
        "checkpoints",
    )
    submitter_backoff_limit: int = Field(
        6,
        ge=0,
        description="new submitter pods after one fails (an eviction, a dropped log stream): each reattaches to "
        "the running Ray job, so only a lost submitter beyond this fails the RayJob",
    )
    ephemeral_storage: Annotated[str, AfterValidator(_check_quantity)] = Field(
        "20Gi",
        description="local disk each pod requests (Ray's session and spilled objects, model caches; preprocess's "
        "driver spills its captions, about the captions file's size again)",
    )
    head_cpus: float = Field(2, gt=0)
    head_memory: Annotated[str, AfterValidator(_check_quantity)] = "8Gi"
    # 63: the queue's name travels as the label kueue.x-k8s.io/queue-name; a PriorityClass name is a DNS subdomain.
    queue: Annotated[str, _object_name("LocalQueue", 63)] | None = Field(
        None,
        description="Kueue LocalQueue of the namespace to submit through: the RayJob is created suspended and starts "
        "when Kueue admits it",
    )
    priority_class: Annotated[str, _object_name("PriorityClass", 253)] | None = Field(
        None, description="PriorityClass of the job's pods; Kueue also orders and preempts queued jobs by it"
    )


class Resources(StrictModel):
    """What one job asks of the cluster, per worker."""

    num_workers: int = Field(
        1, ge=0, description="Ray Train workers, or encoder actors for data stages; 0 trains in-process"
    )
    gpus_per_worker: float = Field(0, ge=0)
    cpus_per_worker: float = Field(1, gt=0)
    memory: Annotated[str, AfterValidator(_check_quantity)] | None = Field(
        None, description="memory per worker as a Kubernetes quantity, e.g. 16Gi"
    )
    read_tasks: int = Field(
        2, gt=0, description="Ray Data tasks reading input shards at once, per training worker (or per data job)"
    )
    data_buffer: Annotated[str, AfterValidator(_check_quantity)] = Field(
        "256Mi",
        description="most of Ray's object store the job's Ray Data pipelines fill ahead of their reader (a Kubernetes "
        "quantity): bounds read-ahead, so memory does not grow with the data",
    )

    node_selector: dict[str, str] = Field(default_factory=dict, description="Kubernetes node labels for workers")
    tolerations: list[Toleration] = Field(default_factory=list, description="Kubernetes taints the workers tolerate")

    @property
    def memory_bytes(self) -> int | None:
        return quantity_bytes(self.memory) if self.memory else None

    @property
    def data_buffer_bytes(self) -> int:
        return quantity_bytes(self.data_buffer)


_CREDENTIAL_WORDS = ("access_key", "secret", "session_token", "password", "credential")


class StorageConfig(StrictModel):
    """Where artifacts live. Credentials never belong here: they come from the environment (or a Kubernetes
    Secret on a cluster), so a spec can be shared and stored with its artifacts safely."""

    root: str = Field(description="s3://BUCKET/PREFIX or file:///PATH")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, Ceph); default: AWS")
    region: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if any(word in str(key).lower() for word in _CREDENTIAL_WORDS):
                    raise ValueError(
                        f"{key!r}: credentials never go in a spec; set AWS_ACCESS_KEY_ID and "
                        "AWS_SECRET_ACCESS_KEY in the environment (a Kubernetes Secret on a cluster)"
                    )
        return data

    @model_validator(mode="after")
    def _check_root(self) -> StorageConfig:
        if not self.root.startswith(("s3://", "file:///")):
            raise ValueError(f"storage.root {self.root!r}: use s3://BUCKET/PREFIX or file:///ABSOLUTE/PATH")
        try:
            self.root = normalize_store_uri(self.root)
        except StorageError as exc:
            raise ValueError(str(exc)) from None
        return self


class StageSpec(StrictModel):
    """What every stage spec has: the stage tag, the name of what it publishes, and how it runs."""

    stage: str
    outputs: ClassVar[tuple[str, ...]] = ()
    """Artifact kinds the stage publishes, each under the spec's `name`."""

    name: ArtifactName
    description: str = ""
    seed: Seed = 0
    # Factories, not instances: an instance default is validated when the class is made, and its memory quantities
    # would load the Kubernetes client on every `vlkd --help`.
    resources: Resources = Field(default_factory=Resources)
    storage: StorageConfig | None = Field(None, description="default: the store of the submitting command")
    kubernetes: KubernetesSpec = Field(default_factory=KubernetesSpec)

    @property
    def driver_cpus(self) -> float:
        """CPUs the job's driver asks Ray for beyond its workers' own, for its Ray Data tasks. The job counts them
        (`JobContext.start_ray`), and on Kubernetes they come with the worker pods: the head offers Ray no CPU."""
        return 1.0
