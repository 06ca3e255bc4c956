"""`vlkd submit|render|status|logs|cancel|list`: stage jobs on the local, ray and k8s backends."""

from __future__ import annotations

import difflib
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.table import Table

from vlkd.backends import BACKENDS
from vlkd.cli.artifacts import Store
from vlkd.cli.output import console, err_console
from vlkd.errors import VlkdError
from vlkd.specs import STAGES

if TYPE_CHECKING:
    from vlkd.backends.base import JobStatus

log = logging.getLogger("vlkd.cli")
JOB_STAGES = tuple(s for s in STAGES if s != "pipeline")


def one_of(what: str, choices: tuple[str, ...], hint: str) -> Callable[[str | None], str | None]:
    """A Typer callback that checks a name before anything else runs: one vlkd does not know is a usage error that
    names the one meant, if close, and every choice."""

    def check(value: str | None) -> str | None:
        if value is not None and value not in choices:
            close = difflib.get_close_matches(value, choices, n=1)
            meant = f"did you mean {close[0]!r}? " if close else ""
            raise typer.BadParameter(
                f"unknown {what} {value!r}; {meant}available: {', '.join(choices)}", param_hint=hint
            )
        return value

    return check


# Every command that runs or renders a stage job defaults to `local` (the pipeline job, cluster-only, has none).
check_backend = one_of("backend", tuple(BACKENDS), "'--backend'")
BackendName = Annotated[
    str,
    typer.Option(
        "--backend", "-b", help="local (this machine, the default), ray (--address) or k8s", callback=check_backend
    ),
]
Address = Annotated[Optional[str], typer.Option(help="ray: the dashboard address, http://HOST:8265")]  # noqa: UP045
Context = Annotated[Optional[str], typer.Option(help="k8s: kubeconfig context [default: current]")]  # noqa: UP045
Namespace = Annotated[Optional[str], typer.Option(help="k8s: namespace [default: the context's]")]  # noqa: UP045
Image = Annotated[Optional[str], typer.Option(help="container image [default: the spec's, else vlkd's]")]  # noqa: UP045
_PENDING_HELP = "with --wait: seconds a job may stay pending before vlkd says why"
PendingNotice = Annotated[float, typer.Option("--pending-notice", help=_PENDING_HELP, min=0)]
SpecFile = Annotated[Path, typer.Option("--spec", "-f", help="the stage's spec (YAML)", show_default=False)]


def _options(backend: str, address: str | None, context: str | None, namespace: str | None) -> dict[str, Any]:
    return {"local": {}, "ray": {"address": address}, "k8s": {"context": context, "namespace": namespace}}.get(
        backend, {}
    )


StageName = Annotated[
    str,
    typer.Argument(
        help=f"one of {', '.join(JOB_STAGES)}", show_default=False, callback=one_of("stage", JOB_STAGES, "'STAGE'")
    ),
]


def submit(
    stage: StageName,
    spec: SpecFile = ...,
    backend: BackendName = "local",
    address: Address = None,
    context: Context = None,
    namespace: Namespace = None,
    image: Image = None,
    store: Store = None,
    job_id: str = typer.Option(
        None, "--job-id", help="resume an interrupted job of this stage (failed, stopped, lost): give its id again"
    ),
    force: bool = typer.Option(
        False, "--force", help="run the job even if the spec's outputs are published (or --job-id's job succeeded)"
    ),
    wait: bool = typer.Option(False, "--wait", "-w", help="follow the logs and exit with the job's outcome"),
    pending_notice: PendingNotice = 60,
) -> None:
    """Validate SPEC, check that the artifacts it reads exist, and submit the STAGE job; prints its id. A spec whose
    outputs are already published for the inputs it reads now is not run again (unless --force): vlkd says so and
    prints the id of the job that published them."""
    from vlkd.backends import get_backend
    from vlkd.backends.submission import NothingToRun, claim, prepare_file
    from vlkd.backends.submission import submit as send

    options = _options(backend, address, context, namespace)
    runner = get_backend(backend, **options)
    job, artifacts = prepare_file(stage, spec, store, backend, image, job_id)
    try:
        claim(job.job_id, stage, force)
        send(runner, options, job, spec.read_text(), artifacts, source=str(spec), unless_published=not force)
    except NothingToRun as done:
        err_console.print(str(done), highlight=False, soft_wrap=True)
        typer.echo(done.job_id)
        return
    err_console.print(
        f"submitted {stage} job {job.job_id} to {backend}; follow it with `vlkd logs -f {job.job_id}`", highlight=False
    )
    typer.echo(job.job_id)
    if wait:
        raise typer.Exit(_follow(job.job_id, pending_notice))


def render(
    stage: StageName,
    spec: SpecFile = ...,
    backend: BackendName = "local",
    address: Address = None,
    context: Context = None,
    namespace: Namespace = None,
    image: Image = None,
    store: Store = None,
    upload_spec: bool = typer.Option(
        False, "--upload-spec", help="also put the spec where the rendered job reads it (then kubectl apply)"
    ),
) -> None:
    """Print what `submit` would send, without sending it or checking the spec's inputs (local: the command line;
    k8s: a RayJob for `kubectl apply -f -`)."""
    from vlkd.backends import get_backend
    from vlkd.backends.submission import prepare_file
    from vlkd.backends.submission import upload_spec as upload

    job, artifacts = prepare_file(stage, spec, store, backend, image, "vlkd-" + stage + "-rendered")
    typer.echo(get_backend(backend, **_options(backend, address, context, namespace)).render(job), nl=False)
    if upload_spec and upload(job, spec.read_text(), artifacts):
        err_console.print(f"uploaded the spec to {job.spec_uri}", highlight=False)
    elif backend != "local":
        err_console.print(
            f"the job reads its spec from {job.spec_uri}: add --upload-spec (or copy {spec} there) before applying",
            highlight=False,
        )


StoreForJob = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--store", help="the job's store, for a job not submitted from this machine [default: its own]"),
]


def status(job_id: str = typer.Argument(..., help="a job id printed by submit"), store: StoreForJob = None) -> None:
    """Where a job stands: PENDING, RUNNING, STOPPING (cancelled), SUCCEEDED, FAILED, STOPPED or LOST (its driver
    stopped recording a heartbeat), and why; a pending job says what it waits for, a running one how far it is, a
    failed one its error. Where the backend and the job's own record in the store disagree, it says which said
    what."""
    from vlkd.backends.submission import job_status

    current = job_status(job_id, store)
    console.print(f"{job_id}  {current.state.value}  {current.message}".rstrip(), highlight=False, soft_wrap=True)
    for line in _details(current):
        console.print(f"  {line}", highlight=False, soft_wrap=True)


def _details(current: JobStatus) -> list[str]:
    """The lines under a job's state: what a pending job waits for, a failed job's error, a running job's
    progress."""
    from vlkd.joblog import describe_progress

    lines = list(current.why_pending)
    if current.error:
        lines.append(f"error: {current.error}")
    if current.progress:
        lines.append(f"progress: {describe_progress(current.progress)}")
    return lines


def logs(
    job_id: str = typer.Argument(..., help="a job id printed by submit"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing until the job ends"),
    worker: Optional[int] = typer.Option(  # noqa: UP045
        None, "--worker", help="only training worker N's lines (as Ray forwarded them to the driver)", min=0
    ),
    store: StoreForJob = None,
) -> None:
    """Print a job's log: from the cluster while it runs, from the store afterwards (also once the cluster is
    gone)."""
    from vlkd.backends.submission import job_logs

    for line in job_logs(job_id, follow, worker, store):
        sys.stdout.write(line)
        sys.stdout.flush()


def cancel(job_id: str = typer.Argument(..., help="a job id printed by submit")) -> None:
    """Stop a job: it is STOPPING at once, then STOPPED. A job that had already ended is left as it was."""
    from vlkd.backends.submission import cancel as stop

    ended = stop(job_id)
    if ended is None:
        console.print(f"cancelled {job_id}: STOPPING until its backend has stopped it", highlight=False)
    else:
        how = f"{ended.state.value}: {ended.message}" if ended.message else ended.state.value
        console.print(f"job {job_id} had already ended ({how}): nothing to cancel", highlight=False, soft_wrap=True)


def list_jobs() -> None:
    """The jobs submitted from this machine, with their state."""
    from vlkd.backends.submission import job_status
    from vlkd.jobstate import known_jobs

    table = Table("JOB", "STAGE", "BACKEND", "STATE", "SUBMITTED", box=None, highlight=False)
    for entry in known_jobs():
        try:
            state = job_status(entry["job_id"]).state.value
        except VlkdError as exc:
            state = f"unknown ({exc})"
        table.add_row(entry["job_id"], entry["stage"], entry["backend"], state, entry["submitted_at"][:19])
    console.print(table)


def _follow(job_id: str, pending_notice: float) -> int:
    """Stream the job's log while watching its state: once it has been pending for `pending_notice` seconds, say
    why (again whenever the reason changes). Return 0 if it succeeded; interrupted (Ctrl-C), say how to follow the
    job, which runs on, and return 130."""
    try:
        return _watch(job_id, pending_notice)
    except KeyboardInterrupt:
        print_still_running(f"job {job_id}", job_id)
        return 130


def print_still_running(what: str, job_id: str, again: str = "") -> None:
    """Tell a user who interrupted vlkd that `what` (job `job_id`) runs on, and how to follow or stop it; `again`:
    what running the interrupted command again does, if it does more than follow the job."""
    err_console.print(f"\ninterrupted: {what} still runs; vlkd stopped following it, not the job", highlight=False)
    if again:
        err_console.print(f"  {again}", highlight=False)
    err_console.print(f"  follow it: vlkd logs -f {job_id}  (or: vlkd status {job_id})", highlight=False)
    err_console.print(f"  stop it:   vlkd cancel {job_id}", highlight=False)


def _watch(job_id: str, pending_notice: float) -> int:
    from vlkd.backends.base import JobState
    from vlkd.backends.submission import job_status

    stream = _LogStream(job_id)
    pending_since, told = None, None
    while not (current := job_status(job_id)).state.finished:
        if current.state != JobState.PENDING:
            pending_since = None
            stream.start()  # on Kubernetes there is no log before the job's pods run
        elif pending_since is None:
            pending_since = time.monotonic()
        elif time.monotonic() - pending_since >= pending_notice and current.why_pending != told:
            told = current.why_pending
            err_console.print(f"job {job_id} is pending: {current.message}", highlight=False)
            for line in told:
                err_console.print(f"  {line}", highlight=False)
        time.sleep(1)
    current = _backend_caught_up(job_id, current)
    stream.finish()
    err_console.print(f"job {job_id}: {current.state.value} {current.message}".rstrip(), highlight=False)
    for line in _details(current):  # e.g. why a job did not start, or its error
        err_console.print(f"  {line}", highlight=False, soft_wrap=True)
    return 0 if current.state == JobState.SUCCEEDED else 1


# How long `--wait` gives a backend to notice the end its job's driver recorded: a local job records its end, then
# shuts its Ray down (a few seconds) before its supervisor sees it exit.
CATCH_UP_S = 15.0


def _backend_caught_up(job_id: str, ended: JobStatus) -> JobStatus:
    """The job's final status once the backend agrees with its driver's recorded end, or, after CATCH_UP_S, the
    status that says they disagree (a RayJob KubeRay never moves on)."""
    from vlkd.backends.submission import job_status

    deadline = time.monotonic() + CATCH_UP_S
    current = ended
    while current.backend_behind and time.monotonic() < deadline:
        time.sleep(0.5)
        current = job_status(job_id)
    return current


class _LogStream:
    """A job's log printed from a background thread as it grows; what it missed (it could not start, or broke
    off) is printed from the job's final log once the job has ended."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.printed = 0
        self.complete = False
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._print, args=(True,), daemon=True)
            self.thread.start()

    def finish(self) -> None:
        if self.thread is not None:
            self.thread.join(timeout=30)
        if not self.complete:
            try:
                self._print(follow=False)
            except VlkdError as exc:  # e.g. a job stopped before it could start has no log: the outcome still counts
                err_console.print(f"no log for job {self.job_id}: {exc}", highlight=False)

    def _print(self, follow: bool) -> None:
        from vlkd.backends.submission import job_logs

        try:
            for i, line in enumerate(job_logs(self.job_id, follow=follow)):
                if i >= self.printed:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                    self.printed = i + 1
            self.complete = True
        except VlkdError as exc:
            if not follow:
                raise
            log.debug("following %s's log broke off (%s); the rest follows when it ends", self.job_id, exc)
