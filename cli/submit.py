"""`vlkd submit`: validate a stage's spec, then run its job."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import typer

from vlkd.cli.artifacts import Store
from vlkd.cli.output import err_console
from vlkd.errors import VlkdError
from vlkd.runtime import job_module, new_job_id
from vlkd.specs import STAGES, load_spec

_JOB_STAGES = tuple(s for s in STAGES if s != "pipeline")


def submit(
    stage: str = typer.Argument(..., help=f"one of {', '.join(_JOB_STAGES)}", show_default=False),
    spec: Path = typer.Option(..., "--spec", "-f", help="the stage's spec (YAML)", show_default=False),
    store: Store = None,
    job_id: str = typer.Option(None, "--job-id", help="resume an interrupted job: give its id again"),
) -> None:
    """Validate SPEC and run the STAGE job on this machine's Ray, waiting for it (exit code = the job's)."""
    if stage not in _JOB_STAGES:
        raise VlkdError(f"unknown stage {stage!r}; available: {', '.join(_JOB_STAGES)}")
    validated = load_spec(spec, stage)  # an invalid spec is never submitted
    module = job_module(stage)
    if importlib.util.find_spec(module) is None:
        raise VlkdError(f"the {stage} stage has no job in this vlkd version yet")
    job_id = job_id or new_job_id(stage)
    err_console.print(f"job {job_id}: {stage} {validated.name} (local)", highlight=False)
    command = [sys.executable, "-m", module, "--spec", str(spec.resolve()), "--job-id", job_id]
    if store:
        command += ["--store", store]
    code = subprocess.call(command)
    if code:
        raise typer.Exit(code)
