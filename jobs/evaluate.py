"""Stage `eval`: finetune student (or teacher) language models on downstream tasks (Sec. 4.1, 4.3), measure the
teacher's text-to-video retrieval, and publish the comparison report as an `eval` artifact.

One finetuning run per model x task x seed, as Ray tasks (`resources.num_workers` at a time, each with
`gpus_per_worker` GPUs), or one after another in the job's process when `num_workers` is 0. The GLUE diagnostic
set is scored with the model each MNLI run finetuned (it has no training data of its own). The reference rows
(`references`: majority class, bag-of-words LR) are fit in the job's process before the runs start, so a task
whose files cannot be read fails the job at once; at GLUE's size the regressions take minutes of CPU
(`vlkd.evaluation.references`).
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlkd.artifacts import ArtifactStore, LineageNode, Manifest, collect_files
from vlkd.curves import published_step
from vlkd.evaluation.results import RunRecord, build_results
from vlkd.inputs import open_input
from vlkd.joblog import report_progress
from vlkd.models.bert import LANGUAGE_MODEL, randomize_language_model
from vlkd.refs import ArtifactRef
from vlkd.runtime import JobContext, job_main
from vlkd.specs import EvalSpec, TaskSpec

log = logging.getLogger("vlkd.eval")


@dataclass(frozen=True)
class Run:
    row: str
    ref: str
    """pinned model ref"""
    task: TaskSpec
    seed: int
    diagnostic: TaskSpec | None = None
    """scored with this run's model (an MNLI run)"""
    random_init: bool = False
    """finetune the model's architecture from a random init (`EvalModel.init`), not its weights"""


def fetch_task_data(source: str, store: ArtifactStore, dest: Path) -> Path:
    """A task's files (a dataset artifact or a URI folder) in a local folder."""
    files = open_input(source, store)
    for item in files.files():
        files.fetch(item.path, dest / item.path)
    return dest


def finetune_run(store: ArtifactStore, run: Run, threads: int) -> list[dict[str, Any]]:
    """One model x task x seed: fetch, finetune, evaluate (and score the diagnostic set with an MNLI model)."""
    import torch

    from vlkd.evaluation.finetune import evaluate, run_fields, train

    torch.set_num_threads(max(1, threads))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory(prefix="vlkd-eval-") as tmp:
        model_dir = Path(tmp) / "model"
        manifest = store.manifest(run.ref)
        source = open_input(run.ref, store)
        for entry in manifest.files:
            if entry.path.startswith(f"{LANGUAGE_MODEL}/"):
                source.fetch(entry.path, model_dir / entry.path[len(LANGUAGE_MODEL) + 1 :])
        if run.random_init:
            randomize_language_model(model_dir, run.seed)
        data = fetch_task_data(run.task.data, store, Path(tmp) / "task")
        finetuned = train(model_dir, run.task.name, data, run.task.finetune, run.seed, device)
        results = [run_fields(finetuned, evaluate(finetuned, run.task.name, data), run.task.name)]
        if run.diagnostic is not None:
            diagnostic = fetch_task_data(run.diagnostic.data, store, Path(tmp) / "diagnostic")
            scored = evaluate(finetuned, "glue_diagnostic", diagnostic)
            results.append(run_fields(finetuned, scored, "glue_diagnostic"))
    worker = f"{socket.gethostname()}:{os.getpid()}"
    return [{**r, "worker": worker} for r in results]


def plan_runs(spec: EvalSpec, store: ArtifactStore) -> list[Run]:
    diagnostic = next((t for t in spec.tasks if t.name == "glue_diagnostic"), None)
    trained = [t for t in spec.tasks if t.name != "glue_diagnostic"]
    return [
        Run(
            model.row,
            str(store.resolve(model.ref)),
            task,
            seed,
            diagnostic if task.name == "mnli" else None,
            model.init == "random",
        )
        for model in spec.models
        for task in trained
        for seed in spec.seeds
    ]


def execute(runs: list[Run], spec: EvalSpec, context: JobContext) -> list[tuple[Run, dict[str, Any]]]:
    resources, store = spec.resources, context.store
    threads = int(resources.cpus_per_worker)
    started = time.monotonic()
    report_progress(0, len(runs), "run")

    def finished(run: Run, count: int) -> None:
        log.info("finetuning %d/%d done: %s on %s, seed %d", count, len(runs), run.row, run.task.name, run.seed)
        report_progress(count, len(runs), "run", count / (time.monotonic() - started))

    if resources.num_workers == 0:
        context.hold(resources)
        done = []
        for i, run in enumerate(runs, start=1):
            done += [(run, r) for r in finetune_run(store, run, threads)]
            finished(run, i)
        return done
    context.start_ray(resources, extra_cpus=spec.driver_cpus)
    import ray

    remote = ray.remote(num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker)(finetune_run)
    pending, queue, done = {}, list(runs), []
    while queue or pending:
        while queue and len(pending) < resources.num_workers:
            run = queue.pop(0)
            pending[remote.remote(store, run, threads)] = run
        ready, _ = ray.wait(list(pending), num_returns=1)
        run = pending.pop(ready[0])
        done += [(run, r) for r in ray.get(ready[0])]
        finished(run, len(runs) - len(queue) - len(pending))
    return done


def reference_rows(spec: EvalSpec, store: ArtifactStore, scratch: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """task -> reference name -> its scores (results.json's `references`), for every reference of the spec that
    applies to the task's kind; fit once per training split (MNLI's serves GLUE's diagnostic too)."""
    from vlkd.evaluation.references import REFERENCES, fit_reference, score_reference
    from vlkd.evaluation.tasks import get_task

    sources, folders, fitted = {t.name: t.data for t in spec.tasks}, {}, {}

    def folder(task: str) -> Path:
        if task not in folders:
            folders[task] = fetch_task_data(sources[task], store, scratch / task)
        return folders[task]

    table: dict[str, dict[str, dict[str, Any]]] = {}
    for task in map(get_task, sources):
        for name in (n for n in spec.references if REFERENCES[n].applies_to(task)):
            if (name, task.trained_on) not in fitted:
                fitted[name, task.trained_on] = fit_reference(name, get_task(task.trained_on), folder(task.trained_on))
            scored = score_reference(fitted[name, task.trained_on], task, folder(task.name))
            table.setdefault(task.name, {})[name] = scored.predictor_fields()
            log.info("reference %s on %s: %s", name, task.name, scored.metrics)
    return table


def lineage_of(manifest: Manifest, random_init: bool = False) -> dict[str, Any]:
    """What a report row says about where its model came from; a randomly initialised row, only whose
    architecture and tokenizer it takes."""
    if random_init:
        return {"model": "random init, no pretraining", "architecture": f"{manifest.kind}'s, {manifest.ref}"}
    if manifest.kind == "teacher":
        return {
            "model": "teacher LM",
            "features": next((p for p in manifest.parents if p.startswith("features/")), None),
            "pretrained_max_len": (manifest.spec or {}).get("max_text_len"),
        }
    attributes = manifest.attributes
    return {
        "teacher": attributes.get("teacher"),
        "kd": attributes.get("kd"),
        "corpus": attributes.get("corpus"),
        **({"init": attributes["init"]} if attributes.get("init") else {}),
        "published_step": published_step(manifest),
        "steps": manifest.metrics.get("steps"),
        "kd_balance": manifest.metrics.get("kd_balance"),
        "pretrained_max_len": (manifest.spec or {}).get("max_len"),
    }


def cost_of(manifest: Manifest, store: ArtifactStore) -> dict[str, float]:
    """A model's cost as its manifest records it, and for a student its teacher's as well: a distilled student
    costs its teacher's pretraining too."""
    cost = dict(manifest.cost)
    teacher = manifest.attributes.get("teacher") if manifest.kind == "student" else None
    if teacher:
        cost.update({f"teacher_{k}": v for k, v in store.manifest(teacher).cost.items() if k.endswith("_hours")})
    return cost


def provenance_notes(store: ArtifactStore, refs: list[str]) -> list[str]:
    """Say plainly when numbers rest on synthetic data or on encoders that are not the paper's pretrained ones."""
    synthetic, not_pretrained = set(), set()

    def walk(node: LineageNode) -> None:
        if node.manifest is not None:
            if node.manifest.attributes.get("synthetic"):
                synthetic.add(node.ref)
            if node.manifest.kind == "features" and not node.manifest.attributes.get("pretrained", True):
                not_pretrained.add(node.ref)
        for parent in node.parents:
            walk(parent)

    for ref in refs:
        walk(store.lineage(ref))
    notes = []
    if not_pretrained:
        notes.append(
            f"Frame features ({', '.join(sorted(not_pretrained))}) come from randomly initialised or parameter-free "
            "demo encoders, not the paper's pretrained CLIP / ResNet-152 / 3D-ResNeXt."
        )
    if synthetic:
        notes.append(
            f"The data is synthetic ({', '.join(sorted(synthetic))}, made by `vlkd data synth`): these numbers show "
            "the pipeline works, and say nothing about the paper's results."
        )
    return notes


def untrained_position_notes(runs: list[Run], lineages: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Say where a task is finetuned on longer inputs than a model was pretrained on (its lineage's
    `pretrained_max_len`): the position embeddings past that length start finetuning as they were initialised."""
    from vlkd.evaluation.tasks import get_task

    short: dict[tuple[str, int, int], dict[str, None]] = {}
    for run in runs:
        window, pretrained = run.task.finetune.max_len, lineages[run.row].get("pretrained_max_len")
        if pretrained is not None and window > pretrained:
            short.setdefault((run.task.name, window, pretrained), {})[run.row] = None
    notes = []
    for (name, window, pretrained), rows in short.items():
        task = get_task(name)
        unit = "window" if task.kind == "extractive_qa" else "input"  # QA passages fill their windows
        notes.append(
            f"{task.title} is finetuned on {window}-token {unit}s; {', '.join(rows)} "
            f"{'was' if len(rows) == 1 else 'were'} pretrained on at most {pretrained} tokens, so positions "
            f"{pretrained}-{window - 1} ({(window - pretrained) / window:.0%} of each {unit}) never got a gradient "
            "in pretraining."
        )
    return notes


def run(spec: EvalSpec, context: JobContext) -> list[Manifest]:
    from vlkd.evaluation.report import write_report
    from vlkd.evaluation.retrieval import teacher_retrieval

    started = time.monotonic()
    store = context.store
    runs = plan_runs(spec, store)
    log.info(
        "%d finetuning runs: %d models x %d tasks x %d seeds",
        len(runs),
        len(spec.models),
        len(spec.tasks),
        len(spec.seeds),
    )
    manifests = {run.ref: store.manifest(run.ref) for run in runs}
    references = reference_rows(spec, store, context.scratch / "references")
    lineages = {run.row: lineage_of(manifests[run.ref], run.random_init) for run in runs}
    records = [
        RunRecord(row=run.row, ref=run.ref, seed=run.seed, lineage=lineages[run.row], **r)
        for run, r in execute(runs, spec, context)
    ]
    out = context.scratch / "report"
    retrieval, parents = {}, [ArtifactRef.parse(ref) for ref in dict.fromkeys(run.ref for run in runs)]
    if spec.retrieval is not None:
        teacher = store.resolve(spec.retrieval.teacher)
        retrieval[str(teacher)] = teacher_retrieval(store, spec.retrieval, out / "retrieval")
        parents.append(teacher)
    parents += [store.resolve(t.data) for t in spec.tasks if "://" not in t.data]
    notes = provenance_notes(store, [str(p) for p in parents]) + untrained_position_notes(runs, lineages)
    costs = {row: cost_of(manifests[ref], store) for row, ref in {run.row: run.ref for run in runs}.items()}
    tables = [
        {"name": t.name, "title": t.title or t.name, "rows": [(r.row, r.shown) for r in t.rows], "tasks": t.tasks}
        for t in spec.tables
    ]
    results = build_results(records, spec.baseline, retrieval, notes, costs, references, tables)
    write_report(results, out)
    metrics = {"runs": len(runs), "seconds": round(time.monotonic() - started, 1)}
    for values in retrieval.values():
        metrics.update({f"retrieval_{k}": round(v, 2) for k, v in values.items()})
    manifest = store.publish(
        "eval", spec.name, collect_files([out]), spec=spec, parents=list(dict.fromkeys(parents)), metrics=metrics,
        attributes={"notes": notes, "baseline": spec.baseline},
        job_id=context.job_id, cost=context.cost(),
    )  # fmt: skip
    log.info("%s: %d runs, report.md and results.json published", manifest.ref, len(runs))
    return [manifest]


if __name__ == "__main__":
    job_main("eval")
