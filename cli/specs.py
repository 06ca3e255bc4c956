"""`vlkd validate` and `vlkd schema`: check a spec before anything is submitted."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from vlkd.cli.output import console
from vlkd.errors import SpecError
from vlkd.specs import STAGES, load_spec, spec_schema


def validate(
    file: Path = typer.Argument(..., help="spec YAML file", show_default=False),
    stage: str = typer.Option(None, help=f"the stage when the file has no `stage:` key ({', '.join(STAGES)})"),
) -> None:
    """Check a job spec: print `ok`, or every error as `field.path: message` (exit code 2)."""
    try:
        load_spec(file, stage)
    except SpecError as exc:
        for problem in exc.problems:
            console.print(problem, highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    console.print("ok", highlight=False)


def schema(stage: str = typer.Argument(..., help=f"one of {', '.join(STAGES)}", show_default=False)) -> None:
    """Print the JSON Schema of a stage's spec (for editors and CI checks)."""
    typer.echo(json.dumps(spec_schema(stage), indent=2))
