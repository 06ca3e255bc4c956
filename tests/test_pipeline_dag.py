"""A pipeline's stages as a DAG: which stage waits for which (`stage_needs`), independent stages running at once up
to the spec's parallelism, what a failure stops, and the inputs checked before anything runs."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from vlkd.artifacts import ArtifactStore, collect_files
from vlkd.backends.base import JobState, JobStatus
from vlkd.errors import NotFoundError, VlkdError
from vlkd.pipeline import PipelineRun, StageRun, run_pipeline, wait_until_finished
from vlkd.pipelines import pipeline_file
from vlkd.published import refs_in
from vlkd.specs import PipelineSpec, load_spec, parse_spec
from vlkd.stage_dag import most_at_once, stage_needs

PAPER_ABLATIONS = Path(__file__).parent.parent / "examples" / "paper" / "ablations.yaml"
OUTPUTS = {
    "preprocess": ["features/tiny:v1"],
    "text": ["tokenizer/tiny:v1", "corpus/tiny:v1"],
    "teacher": ["teacher/tiny:v1"],
    "distill:tiny-nst-crd": ["student/tiny-nst-crd:v1"],
    "distill:tiny-baseline": ["student/tiny-baseline:v1"],
    "eval": ["eval/tiny:v1"],
}


def publish_inputs(store: ArtifactStore, spec: PipelineSpec, leave_out: str = "") -> None:
    """The datasets a pipeline reads (what `vlkd data synth` imports), but `leave_out`."""
    refs = [ref for _, stage in spec.stages() for ref in refs_in(stage.model_dump(mode="json"))]
    for name in sorted({ref.name for ref in refs if ref.kind == "dataset"} - {leave_out}):
        store.publish("dataset", name, collect_files([Path(__file__)]))


def tiny(parallelism: int | None) -> PipelineSpec:
    spec = load_spec(pipeline_file("tiny"))
    return spec.model_copy(update={"parallelism": parallelism})


class ScriptedBackend:
    """Stage jobs that end when the test's script lets them (`may_end(key, events)`), publishing their outputs as a
    job does, or failing if their stage is in `failing`. `events`: ("start" | "end", stage key) in order."""

    name = "local"

    def __init__(
        self, store: ArtifactStore, may_end: Callable[[str, list], bool] = lambda *_: True, failing: tuple = ()
    ) -> None:
        self.store, self.may_end, self.failing = store, may_end, failing
        self.events: list[tuple[str, str]] = []
        self.jobs: dict[str, Any] = {}
        self.ended: dict[str, JobState] = {}
        self.env: dict[str, dict[str, str]] = {}
        self.lock = threading.Lock()

    def submit(self, job: Any) -> dict[str, Any]:
        key = f"distill:{job.spec.name}" if job.stage == "distill" else job.stage
        with self.lock:
            self.jobs[job.job_id] = (key, job.spec, time.monotonic())
            self.env[key] = job.env
            self.events.append(("start", key))
        return {}

    def status(self, job_id: str, record: dict[str, Any]) -> JobStatus:
        key, spec, started = self.jobs[job_id]
        with self.lock:
            if job_id not in self.ended and (self.may_end(key, self.events) or time.monotonic() - started > 10):
                failed = key in self.failing
                if not failed:
                    for kind in type(spec).outputs:
                        self.store.publish(kind, spec.name, collect_files([Path(__file__)]), spec=spec)
                self.ended[job_id] = JobState.FAILED if failed else JobState.SUCCEEDED
                self.events.append(("end", key))
            return JobStatus(job_id, self.ended.get(job_id, JobState.RUNNING))

    def most_at_once(self) -> int:
        running, most = 0, 0
        for event, _ in self.events:
            running += 1 if event == "start" else -1
            most = max(most, running)
        return most


class Following:
    """Follows each stage's job as the CLI does, from the thread the run gives it."""

    def follow(self, stage: Any, backend: ScriptedBackend, record: dict[str, Any]) -> JobState:
        return wait_until_finished(backend, stage.job_id, record, poll=0.005)

    def done(self, stage: Any) -> None:
        pass


def test_a_stage_waits_for_the_stages_whose_outputs_it_reads_and_no_other():
    needs = stage_needs(tiny(None).stages())
    assert needs == {
        "preprocess": set(),
        "text": set(),
        "teacher": {"preprocess", "text"},
        "distill:tiny-nst-crd": {"teacher", "text"},
        "distill:tiny-baseline": {"text"},  # the text-only baseline trains beside the teacher
        "eval": {"teacher", "distill:tiny-nst-crd", "distill:tiny-baseline"},
    }
    paper = stage_needs(load_spec(PAPER_ABLATIONS).stages())
    teachers = [key for key in paper if key.startswith("teacher")]
    assert len(teachers) == 4 and all(paper[key] == {"preprocess", "text"} for key in teachers)


def test_a_ref_pinned_to_a_version_reads_what_exists_and_waits_for_no_stage():
    spec = tiny(None)
    stages = spec.stages()
    key, baseline = stages[4]
    stages[4] = (key, baseline.model_copy(update={"corpus": "corpus/tiny:v1"}))
    assert stage_needs(stages)["distill:tiny-baseline"] == set()


def test_what_stages_at_once_ask_together_counts_only_stages_that_may_overlap():
    chain = {"a": set(), "b": {"a"}, "c": {"b"}}
    assert most_at_once(chain, {"a": 3, "b": 2, "c": 1}, limit=3) == 3  # one after another: the most, not the sum
    assert most_at_once({**chain, "c": set()}, {"a": 3, "b": 2, "c": 1}, limit=3) == 4  # c beside a or b
    # Through others: d waits for a via b, so a and d never overlap, though d does not read a.
    diamond = {"a": set(), "b": {"a"}, "c": {"a"}, "d": {"b"}}
    assert most_at_once(diamond, {"a": 5, "b": 3, "c": 3, "d": 5}, limit=2) == 8  # c beside d, not a beside d
    assert most_at_once(diamond, {"a": 5, "b": 3, "c": 3, "d": 5}, limit=1) == 5
    free = {key: set() for key in "abcd"}
    assert most_at_once(free, {"a": 5, "b": 4, "c": 0, "d": 3}, limit=2) == 9  # the largest two


def test_what_stages_at_once_ask_together_is_the_largest_sum_any_set_of_overlapping_stages_asks():
    """Against every subset of random DAGs: the search's pruning never loses the best set (the largest ask first
    is not always in it: a stage that waits for two small ones outweighs neither together)."""
    rng = random.Random(0)
    for _ in range(300):
        keys = [f"s{i}" for i in range(rng.randint(1, 8))]
        needs = {key: {k for k in keys[:i] if rng.random() < 0.3} for i, key in enumerate(keys)}
        asks = {key: rng.randint(0, 4) for key in keys}
        limit = rng.randint(1, len(keys))
        closure = {key: set() for key in keys}
        for key in keys:  # needs only name earlier keys: closed in order
            closure[key] = set().union(*(closure[n] | {n} for n in needs[key]))
        best = max(
            sum(asks[k] for k in chosen)
            for size in range(limit + 1)
            for chosen in itertools.combinations(keys, size)
            if all(a not in closure[b] and b not in closure[a] for a, b in itertools.combinations(chosen, 2))
        )
        assert most_at_once(needs, asks, limit) == best, (needs, asks, limit)


def test_the_papers_fourteen_students_at_once_ask_their_sum_at_once():
    """The ablations' students read teachers and text, not each other: all of them may overlap."""
    spec = load_spec(PAPER_ABLATIONS)
    needs = stage_needs(spec.stages())
    students = [key for key in needs if key.startswith("distill:")]
    asks = {key: 2 for key in students}
    assert len(students) >= 14
    assert most_at_once(needs, asks, limit=len(needs)) == 2 * len(students)
    assert most_at_once(needs, asks, limit=4) == 8


def test_independent_stages_run_at_once_up_to_the_parallelism(store):
    """The baseline student needs only the text: it starts while the video features are still being made (their
    job ends only once it has: a run one stage at a time would wait 10 s and then fail the ordering below)."""
    spec = tiny(2)
    publish_inputs(store, spec)
    baseline_started = ("start", "distill:tiny-baseline")
    backend = ScriptedBackend(store, lambda key, events: key != "preprocess" or baseline_started in events)
    run = run_pipeline(spec, store, backend, {}, Following())

    assert backend.most_at_once() == 2
    order = backend.events
    assert order.index(("start", "distill:tiny-baseline")) < order.index(("end", "preprocess"))
    for key, needed in stage_needs(spec.stages()).items():
        assert all(order.index(("end", n)) < order.index(("start", key)) for n in needed), (key, order)
    assert {s.key: (s.state, s.outputs) for s in run.stages} == {k: ("succeeded", v) for k, v in OUTPUTS.items()}
    assert PipelineRun.load(spec.name, store.uri).stages == run.stages


def test_the_local_and_ray_backends_run_one_stage_at_a_time_unless_the_spec_says_otherwise(store):
    spec = tiny(None)
    assert [spec.parallelism_on(backend) for backend in ("local", "ray", "k8s")] == [1, 1, 1]
    assert tiny(3).parallelism_on("local") == 3
    publish_inputs(store, spec)
    backend = ScriptedBackend(store)
    run_pipeline(spec, store, backend, {}, Following())
    keys = [key for key, _ in spec.stages()]
    assert backend.events == [(event, key) for key in keys for event in ("start", "end")]


def test_on_kubernetes_every_stage_runs_as_soon_as_it_can_where_each_job_waits_its_turn_without_failing():
    """Unqueued, a RayJob whose cluster is not running after `start_deadline_seconds` fails: submitted at once,
    stages the cluster cannot yet fit would fail after 30 minutes. Queued, Kueue holds them, and the deadline
    counts from admission."""
    data = yaml.safe_load(pipeline_file("tiny").read_text()) | {"parallelism": None}
    blocks = [data[key] for key in ("preprocess", "text", "teacher", "eval")] + data["students"]
    for block in blocks:
        block["kubernetes"] = {"queue": "team-a"}
    assert parse_spec(data).parallelism_on("k8s") == 6
    assert parse_spec(data).parallelism_on("ray") == 1
    blocks[-1]["kubernetes"] = {"start_deadline_seconds": None}
    assert parse_spec(data).parallelism_on("k8s") == 6
    del blocks[-1]["kubernetes"]
    assert parse_spec(data).parallelism_on("k8s") == 1


@pytest.mark.parametrize("parallelism", [1, 2, 3])
def test_local_stage_jobs_running_at_once_share_the_cores_for_torchs_threads(store, monkeypatch, parallelism):
    spec = tiny(parallelism)
    publish_inputs(store, spec)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    backend = ScriptedBackend(store)
    run_pipeline(spec, store, backend, {}, Following())
    shared = {1: None, 2: "4", 3: "2"}[parallelism]
    assert {env.get("OMP_NUM_THREADS") for env in backend.env.values()} == {shared}

    monkeypatch.setenv("OMP_NUM_THREADS", "6")  # the user's own setting wins (the jobs inherit it)
    backend = ScriptedBackend(store)
    run_pipeline(spec, store, backend, {}, Following(), force=True)
    assert all("OMP_NUM_THREADS" not in env for env in backend.env.values())


def test_after_a_failure_no_stage_starts_and_the_running_ones_are_followed_to_their_end(store):
    spec = tiny(2)
    publish_inputs(store, spec)
    backend = ScriptedBackend(store, lambda key, events: key != "preprocess" or ("end", "text") in events, ("text",))
    with pytest.raises(VlkdError, match="pipeline tiny: stage text failed"):
        run_pipeline(spec, store, backend, {}, Following())
    assert backend.events == [("start", "preprocess"), ("start", "text"), ("end", "text"), ("end", "preprocess")]
    stages = {s.key: s for s in PipelineRun.load(spec.name, store.uri).stages}
    assert (stages["preprocess"].state, stages["preprocess"].outputs) == ("succeeded", ["features/tiny:v1"])
    assert stages["text"].state == "failed"
    assert (stages["teacher"].state, stages["teacher"].message) == ("pending", "waits for preprocess, text")


def test_a_stage_the_backend_refused_is_recorded_as_failed_and_the_running_ones_end(store):
    class Refusing(ScriptedBackend):
        def submit(self, job: Any) -> dict[str, Any]:
            if job.stage == "text":
                raise VlkdError("the Ray cluster at http://head:8265 refused the job: no available agent")
            return super().submit(job)

    spec = tiny(2)
    publish_inputs(store, spec)
    backend = Refusing(store)
    with pytest.raises(VlkdError, match="refused the job"):
        run_pipeline(spec, store, backend, {}, Following())
    assert backend.events == [("start", "preprocess"), ("end", "preprocess")]
    stages = {s.key: s for s in PipelineRun.load(spec.name, store.uri).stages}
    assert stages["preprocess"].state == "succeeded"
    assert (stages["text"].state, stages["text"].message) == (
        "failed",
        "not submitted: the Ray cluster at http://head:8265 refused the job: no available agent",
    )


def test_a_missing_input_fails_the_run_before_any_stage_starts(store):
    """Its reader is the last stage: found missing only when it came up, it would fail the run after the days the
    teacher and students take."""
    spec = tiny(2)
    publish_inputs(store, spec, leave_out="synth-qnli")
    backend = ScriptedBackend(store)
    with pytest.raises(NotFoundError, match="stage eval reads dataset/synth-qnli:latest, which is missing"):
        run_pipeline(spec, store, backend, {}, Following())
    assert backend.events == []
    with pytest.raises(NotFoundError):
        PipelineRun.load(spec.name, store.uri)


def test_ctrl_c_names_every_stage_job_that_still_runs(store, capsys):
    from vlkd.cli.pipeline import _interrupted

    stages = [StageRun("preprocess", "preprocess", "running", "job-a"), StageRun("text", "text", "running", "job-b")]
    run = PipelineRun("tiny", store.uri, "local", "2026-12-07T00:00:00", [*stages, StageRun("teacher", "teacher")])
    run.save(store)
    _interrupted("tiny", store.uri)
    told = capsys.readouterr().err
    for stage in stages:
        assert f"interrupted: stage {stage.key} (job {stage.job_id}) still runs" in told
        assert f"stop it:   vlkd cancel {stage.job_id}" in told
