"""`vlkd quickstart`: the whole method end to end on this machine, no cluster, no cloud, no internet."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from vlkd.cli.artifacts import Store
from vlkd.cli.output import console, err_console


def quickstart(
    workdir: Path = typer.Option(Path("vlkd-quickstart"), help="where the synthetic dataset is written"),
    scale: str = typer.Option(
        "tiny", help="tiny (2.5 minutes on 2 CPU cores) or small (4 minutes: 512 videos, 4 tasks)"
    ),
    store: Store = None,
    force: bool = typer.Option(False, "--force", help="redo every stage, even those already published"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="print every job's full log"),
) -> None:
    """Generate the synthetic dataset, run data -> teacher -> students (NST+CRD and the text-only baseline) -> eval
    as a pipeline on the local backend, and print the comparison table."""
    from vlkd.artifacts import ArtifactStore
    from vlkd.cli.pipeline import run_pipeline_file
    from vlkd.data.synth import SynthConfig, generate, publish_dataset
    from vlkd.errors import VlkdError
    from vlkd.pipelines import SCALES, VIDEOS, pipeline_file

    if scale not in SCALES:
        raise VlkdError(f"--scale {scale!r}: use one of {', '.join(SCALES)}")
    started = time.monotonic()
    artifacts = ArtifactStore.open(store)
    data, config = workdir / "synth", SynthConfig(num_videos=VIDEOS[scale])
    if force or not data.is_dir():
        import shutil

        shutil.rmtree(data, ignore_errors=True)
        generate(data, config)
    publish_dataset(artifacts, data, config)  # unchanged data keeps its versions, so finished stages are skipped
    err_console.print(f"synthetic dataset in {data}, artifacts in {artifacts.uri}", highlight=False)
    run = run_pipeline_file(pipeline_file(scale), artifacts.uri, "local", {}, None, force, verbose)
    _print_report(artifacts, run, time.monotonic() - started, store)


def _print_report(artifacts, run, seconds: float, store: str | None) -> None:
    from vlkd.cli.report import _print, _results

    evaluation = next(s for s in run.stages if s.stage == "eval").outputs[0]
    console.print()
    _print(_results(artifacts.uri, evaluation))
    student = next(s for s in run.stages if s.stage == "distill").outputs[0]
    where = f" --store {store}" if store else ""
    console.print(
        f"\nDone in {seconds:.0f} s. The report is {evaluation} in {artifacts.uri}:\n"
        f"  vlkd artifacts get {evaluation} -o report{where}  # report.md, results.json, charts/, retrieval/\n"
        f"  vlkd report show {evaluation}{where}\n"
        f"  vlkd artifacts lineage {student}{where}",
        highlight=False,
        soft_wrap=True,
    )
