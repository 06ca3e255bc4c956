"""`vlkd pipeline plan`: what a run would do now, decided as the run decides, running nothing."""

from __future__ import annotations

from pathlib import Path

import yaml
from test_pipeline_dag import Following, ScriptedBackend, publish_inputs, tiny

from vlkd.artifacts import ArtifactStore, collect_files
from vlkd.pipeline import run_pipeline
from vlkd.pipeline_plan import plan_pipeline
from vlkd.specs import PipelineSpec, parse_spec


def _published(store: ArtifactStore, spec: PipelineSpec) -> None:
    """Every stage of `spec` run once, its outputs published as its job would."""
    publish_inputs(store, spec)
    run_pipeline(spec, store, ScriptedBackend(store), {}, Following())


def _plan(spec: PipelineSpec, store: ArtifactStore, force: bool = False) -> dict[str, tuple[str, str]]:
    return {stage.key: ("run" if stage.runs else "skip", stage.why) for stage in plan_pipeline(spec, store, force)}


def _every_version(store: ArtifactStore) -> dict[str, list[int]]:
    return {f"{a.kind}/{a.name}": store.versions(a.kind, a.name) for a in store.list().artifacts}


def test_on_a_new_store_every_stage_runs_the_ones_after_others_once_those_publish(store):
    spec = tiny(2)
    publish_inputs(store, spec)
    before = _every_version(store)

    plan = _plan(spec, store)

    assert plan == {
        "preprocess": ("run", "features/tiny not published yet; reads dataset/synth-videos:v1"),
        "text": ("run", "tokenizer/tiny, corpus/tiny not published yet; reads dataset/synth-text:v1"),
        "teacher": ("run", "after preprocess, text publish"),
        "distill:tiny-nst-crd": ("run", "after teacher, text publish"),
        "distill:tiny-baseline": ("run", "after text publishes"),
        "eval": ("run", "after distill:tiny-baseline, distill:tiny-nst-crd, teacher publish"),
    }
    assert _every_version(store) == before  # nothing ran, nothing published


def test_a_new_input_version_runs_its_reader_and_what_comes_after_it_and_a_run_does_what_the_plan_said(store):
    spec = tiny(2)
    _published(store, spec)
    unchanged = _plan(spec, store)
    assert {action for action, _ in unchanged.values()} == {"skip"}
    assert unchanged["teacher"] == ("skip", "published for this spec and these inputs: teacher/tiny:v1")

    store.publish("dataset", "synth-text", collect_files([Path(__file__)]))  # a new corpus
    plan = _plan(spec, store)

    assert plan["preprocess"][0] == "skip"
    assert plan["text"] == (
        "run",
        "changed since tokenizer/tiny:v1: corpus: dataset/synth-text:v1 -> dataset/synth-text:v2",
    )
    assert plan["teacher"] == ("run", "after text publishes")  # its features are the same
    assert plan["distill:tiny-baseline"] == ("run", "after text publishes")
    run = run_pipeline(spec, store, ScriptedBackend(store), {}, Following())
    ran = {stage.key: "run" if stage.state == "succeeded" else "skip" for stage in run.stages}
    assert ran == {key: action for key, (action, _) in plan.items()}


def test_a_changed_setting_names_the_field_and_leaves_stages_that_do_not_read_its_output(store):
    spec = tiny(2)
    _published(store, spec)
    data = spec.model_dump(mode="json", exclude_unset=True)
    data["teacher"]["train"]["max_steps"] = 500
    changed = parse_spec(yaml.safe_load(yaml.safe_dump(data)), "pipeline")

    plan = _plan(changed, store)

    assert plan["teacher"] == ("run", "changed since teacher/tiny:v1: train.max_steps: 1000 -> 500")
    assert plan["distill:tiny-nst-crd"] == ("run", "after teacher publishes")
    assert plan["distill:tiny-baseline"][0] == plan["text"][0] == "skip"  # the text-only baseline reads no teacher
    assert plan["eval"] == ("run", "after distill:tiny-nst-crd, teacher publish")


def test_the_plan_reads_each_output_it_weighs_once(store, monkeypatch):
    """A stage whose inputs exist is weighed from its outputs' latest versions: each found in the store (a listing of
    its versions) once, for both whether it runs and why (a changed or a missing output)."""
    from collections import Counter

    from vlkd.refs import ArtifactRef

    spec = tiny(2)
    _published(store, spec)
    store.publish("dataset", "synth-text", collect_files([Path(__file__)]))  # text changes: its outputs are weighed
    reads: Counter[str] = Counter()
    manifest = ArtifactStore.manifest

    def counted(self, ref, *args, **kwargs):
        reads[ArtifactRef.parse(str(ref)).path] += 1
        return manifest(self, ref, *args, **kwargs)

    monkeypatch.setattr(ArtifactStore, "manifest", counted)
    assert _plan(spec, store)["text"][0] == "run"
    assert reads["tokenizer/tiny"] == reads["corpus/tiny"] == reads["features/tiny"] == 1, reads


def test_forced_every_stage_runs_saying_what_it_redoes(store):
    spec = tiny(None)
    _published(store, spec)

    plan = _plan(spec, store, force=True)

    assert plan["preprocess"] == ("run", "forced (published as features/tiny:v1)")
    assert [action for action, _ in plan.values()] == ["run"] * 6


def test_the_cli_prints_a_line_per_stage_and_how_many_would_run_at_once(store, vlkd_cli, tmp_path):
    spec = tiny(2)
    _published(store, spec)
    store.publish("dataset", "synth-videos", collect_files([Path(__file__)]))
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_unset=True)))

    shown = vlkd_cli("pipeline", "plan", str(path), "--store", store.uri)

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:6]] == [
        ["preprocess", "run"],
        ["text", "skip"],
        ["teacher", "run"],
        ["distill:tiny-nst-crd", "run"],
        ["distill:tiny-baseline", "skip"],
        ["eval", "run"],
    ]
    assert lines[6] == "4 of 6 stages would run, at most 2 at a time on local"
    one = vlkd_cli("pipeline", "plan", str(path), "--store", store.uri, "--backend", "ray").stdout.splitlines()[-1]
    assert one == "4 of 6 stages would run, at most 2 at a time on ray"

    missing = tmp_path / "missing.yaml"
    missing.write_text(path.read_text().replace("dataset/synth-videos", "dataset/no-such-videos"))
    refused = vlkd_cli("pipeline", "plan", str(missing), "--store", store.uri)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("error: stage preprocess reads dataset/no-such-videos:latest, which is missing")
