"""`vlkd pipeline run|submit|render|plan|status`: the stages of a pipeline spec, each consuming what the previous
published; `run` drives them from this machine, `submit` sends the pipeline to a cluster as one job that drives them
there, `plan` says what a run would do."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vlkd.cli.artifacts import Store
from vlkd.cli.jobs import (
    Address,
    BackendName,
    Context,
    Image,
    Namespace,
    PendingNotice,
    _follow,
    _options,
    check_backend,
    print_still_running,
)
from vlkd.cli.output import console, err_console
from vlkd.errors import VlkdError

if TYPE_CHECKING:
    from vlkd.specs import PipelineSpec

app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Pipelines: data -> teacher -> students -> eval in one go."
)

# The pipeline job runs on a cluster only: these commands name it, where the others default to `local`.
ClusterBackend = Annotated[
    str,
    typer.Option(
        "--backend",
        "-b",
        help="ray (--address) or k8s, required: the pipeline job runs on a cluster",
        show_default=False,
        callback=check_backend,
    ),
]


def run_pipeline_file(
    spec_file: Path, store: str | None, backend: str, options: dict, image: str | None, force: bool, verbose: bool
):
    """Run the pipeline from this machine. Interrupted (Ctrl-C), it says which stage jobs run on and how to follow
    them, and exits 130: the same command again follows those jobs, then runs the stages after them."""
    from vlkd.artifacts import ArtifactStore
    from vlkd.backends import get_backend
    from vlkd.cli.progress import StageReporter
    from vlkd.pipeline import run_pipeline
    from vlkd.specs import load_spec
    from vlkd.storage import patient

    pipeline = load_spec(spec_file, "pipeline")
    with patient():
        artifacts = ArtifactStore.open(_store_of(pipeline, store))
        at_once = pipeline.parallelism_on(backend) > 1
        reporter = StageReporter(verbose, [key for key, _ in pipeline.stages()], at_once)
        try:
            return run_pipeline(pipeline, artifacts, get_backend(backend, **options), options, reporter, force, image)
        except KeyboardInterrupt:
            reporter.stop()
            _interrupted(pipeline.name, artifacts.uri)
            raise typer.Exit(130) from None


def _interrupted(name: str, store: str) -> None:
    from vlkd.pipeline import PipelineRun

    try:
        running = [s for s in PipelineRun.load(name, store).stages if s.state == "running" and s.job_id]
    except VlkdError:  # interrupted before the run was recorded
        running = []
    if not running:
        err_console.print(f"\ninterrupted: pipeline {name} had no stage job running", highlight=False)
    for stage in running:
        again = "the same command again follows it, then runs the stages after it"
        print_still_running(f"stage {stage.key} (job {stage.job_id})", stage.job_id, again)


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
    """Run every stage once its inputs are published, independent ones at once up to the spec's parallelism;
    stages already published for the same spec and inputs are skipped."""
    from vlkd.cli.progress import print_tables

    result = run_pipeline_file(
        spec, store, backend, _options(backend, address, context, namespace), image, force, verbose
    )
    print_tables(result, err_console)


@app.command()
def submit(
    spec: Path = typer.Argument(..., help="a pipeline spec (stage: pipeline)", show_default=False),
    backend: ClusterBackend = ...,
    address: Address = None,
    context: Context = None,
    namespace: Namespace = None,
    image: Image = None,
    store: Store = None,
    job_id: str = typer.Option(None, "--job-id", help="resume an interrupted pipeline job: give its id again"),
    force: bool = typer.Option(False, "--force", help="with --job-id: run a pipeline job that succeeded again"),
    wait: bool = typer.Option(False, "--wait", "-w", help="follow its log and exit with its outcome"),
    pending_notice: PendingNotice = 60,
) -> None:
    """Send the whole pipeline to a cluster as one job: its driver runs there and submits each stage to the same
    Ray cluster, so this machine may disconnect. Prints the pipeline job's id."""
    from vlkd.backends import get_backend
    from vlkd.backends.submission import AlreadySucceeded, claim
    from vlkd.backends.submission import submit as send

    job, artifacts = _pipeline_job(spec, store, backend, image, job_id)
    try:
        claim(job.job_id, "pipeline", force)
    except AlreadySucceeded as done:
        err_console.print(str(done), highlight=False)
        typer.echo(job.job_id)
        return
    options = _options(backend, address, context, namespace)
    send(get_backend(backend, **options), options, job, spec.read_text(), artifacts, source=str(spec))
    err_console.print(
        f"submitted pipeline {job.spec.name} as job {job.job_id} to {backend}; from any machine: `vlkd pipeline "
        f"status {job.spec.name} --store {artifacts.uri}`, `vlkd logs {job.job_id} --store {artifacts.uri}`",
        highlight=False,
        soft_wrap=True,
    )
    typer.echo(job.job_id)
    if wait:
        raise typer.Exit(_follow(job.job_id, pending_notice))


@app.command()
def render(
    spec: Path = typer.Argument(..., help="a pipeline spec (stage: pipeline)", show_default=False),
    backend: ClusterBackend = ...,
    address: Address = None,
    context: Context = None,
    namespace: Namespace = None,
    image: Image = None,
    store: Store = None,
) -> None:
    """Print what `pipeline submit` would send, without sending it (k8s: the RayJob with a worker group per shape
    of worker the stages need)."""
    from vlkd.backends import get_backend

    job, _ = _pipeline_job(spec, store, backend, image, "vlkd-pipeline-rendered")
    typer.echo(get_backend(backend, **_options(backend, address, context, namespace)).render(job), nl=False)


def _pipeline_job(spec_file: Path, store: str | None, backend: str, image: str | None, job_id: str | None):
    """The pipeline job's description (validated spec, its store) and the store."""
    from vlkd.backends.submission import prepare_file

    if backend == "local":
        raise VlkdError("a pipeline job runs on a cluster (--backend ray or k8s): here, `vlkd pipeline run`")
    return prepare_file("pipeline", spec_file, store, backend, image, job_id)


@app.command()
def plan(
    spec: Path = typer.Argument(..., help="a pipeline spec (stage: pipeline)", show_default=False),
    backend: BackendName = "local",
    store: Store = None,
    force: bool = typer.Option(False, "--force", help="as `pipeline run --force` would: redo published stages"),
) -> None:
    """What `pipeline run` would do now, running nothing: each stage in order, skipped (published for its spec and
    the inputs it would read now) or run, and why; then how many stage jobs run at once on --backend (a pipeline
    job's: ray)."""
    from vlkd.artifacts import ArtifactStore
    from vlkd.cli.progress import print_plan
    from vlkd.pipeline_plan import plan_pipeline
    from vlkd.specs import load_spec

    pipeline = load_spec(spec, "pipeline")
    planned = plan_pipeline(pipeline, ArtifactStore.open(_store_of(pipeline, store)), force)
    print_plan(planned, pipeline.parallelism_on(backend), backend, console)


def _store_of(pipeline: PipelineSpec, store: str | None) -> str | None:
    """The store a pipeline runs in: --store, else the spec's `storage.root`, else the default."""
    return store or (pipeline.storage.root if pipeline.storage else None)


@app.command()
def status(
    name: str = typer.Argument(..., help="the pipeline's name (its spec's `name:`)"),
    store: Store = None,
) -> None:
    """The state of each stage of the last run of a pipeline, from its store (the one this machine last ran it
    in, unless --store names another), and of the stage jobs it recorded as running, from their jobs."""
    from vlkd.cli.progress import print_stages
    from vlkd.pipeline import PipelineRun, with_job_states

    run = with_job_states(PipelineRun.load(name, store))
    job = f" as job {run.job_id}" if run.job_id else ""
    console.print(
        f"pipeline {run.name}{job} on {run.backend}, store {run.store}, started {run.started_at[:19]}", highlight=False
    )
    print_stages(run, console)
