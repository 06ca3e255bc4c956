"""`vlkd validate` and `vlkd schema`: check a spec before anything is submitted."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from vlkd.cli.output import console
from vlkd.specs import STAGES, load_spec, spec_schema


def validate(
    file: Path = typer.Argument(..., help="spec YAML file", show_default=False),
    stage: str = typer.Option(None, help=f"the stage when the file has no `stage:` key ({', '.join(STAGES)})"),
) -> None:
    """Check a job spec: print `ok`, or every error as `submit` does, `error: FILE: field.path: message` (exit
    code 2)."""
    load_spec(file, stage)  # a SpecError is printed by the CLI's entry point, as for every command
    console.print("ok", highlight=False)


def schema(stage: str = typer.Argument(..., help=f"one of {', '.join(STAGES)}", show_default=False)) -> None:
    """Print the JSON Schema of a stage's spec (for editors and CI checks)."""
    typer.echo(json.dumps(spec_schema(stage), indent=2))
