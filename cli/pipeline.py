"""`vlkd pipeline run|status`: the stages of a pipeline spec, each consuming what the previous published."""

from __future__ import annotations

from pathlib import Path

import typer

from vlkd.cli.artifacts import Store
from vlkd.cli.jobs import Address, BackendName, Context, Image, Namespace, _options
from vlkd.cli.output import console

app = typer.Typer(no_args_is_help=True, help="Pipelines: data -> teacher -> students -> eval in one go.")


def run_pipeline_file(
    spec_file: Path, store: str | None, backend: str, options: dict, image: str | None, force: bool, verbose: bool
):
    from vlkd.artifacts import ArtifactStore
    from vlkd.backends import get_backend
    from vlkd.cli.progress import StageReporter
    from vlkd.pipeline import run_pipeline
    from vlkd.specs import load_spec

    pipeline = load_spec(spec_file, "pipeline")
    root = store or (pipeline.storage.root if pipeline.storage else None)
    artifacts = ArtifactStore.open(root)
    return run_pipeline(
        pipeline, artifacts, get_backend(backend, **options), options, StageReporter(verbose), force, image
    )


@app.command()
def run(
    spec: Path = typer.Argument(..., help="a pipeline spec (stage: pipeline)", show_default=False),
    backend: BackendName = "local",
    address: Address = None,
    context: Context = None,
    namespace: Namespace = None,
    image: Image = None,
    store: Store = None,
    force: bool = typer.Option(False, "--force", help="redo stages whose output already exists"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="print every job's full log"),
) -> None:
    """Run every stage in order; stages already published for the same spec and inputs are skipped."""
    from vlkd.cli.progress import print_stages

    result = run_pipeline_file(
        spec, store, backend, _options(backend, address, context, namespace), image, force, verbose
    )
    print_stages(result)


@app.command()
def status(name: str = typer.Argument(..., help="the pipeline's name (its spec's `name:`)")) -> None:
    """The state of each stage of the last run of a pipeline."""
    from vlkd.cli.progress import print_stages
    from vlkd.pipeline import PipelineRun

    run = PipelineRun.load(name)
    console.print(
        f"pipeline {run.name} on {run.backend}, store {run.store}, started {run.started_at[:19]}", highlight=False
    )
    print_stages(run, console)
