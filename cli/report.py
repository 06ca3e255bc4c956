"""`vlkd report ...`: read eval artifacts' comparison tables in the terminal."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import typer

from vlkd.cli.artifacts import Store
from vlkd.cli.output import console

app = typer.Typer(no_args_is_help=True, help="Evaluation reports: show one, compare several.")


def _results(store: str | None, ref: str) -> dict:
    """The results.json of an eval artifact (checksum-verified like every fetch)."""
    from vlkd.artifacts import ArtifactStore
    from vlkd.errors import VlkdError
    from vlkd.evaluation.results import RESULTS_FILE
    from vlkd.inputs import open_input
    from vlkd.refs import ArtifactRef

    parsed = ArtifactRef.parse(ref if "/" in ref else f"eval/{ref}")
    if parsed.kind != "eval":
        raise VlkdError(f"{ref} is a {parsed.kind} artifact; `vlkd report` reads eval artifacts (eval/NAME)")
    manifest = ArtifactStore.open(store).manifest(parsed)
    if not any(f.path == RESULTS_FILE for f in manifest.files):
        raise VlkdError(f"{manifest.ref} holds no {RESULTS_FILE}")
    with tempfile.TemporaryDirectory() as tmp:
        local = open_input(str(manifest.ref), ArtifactStore.open(store)).fetch(RESULTS_FILE, Path(tmp) / RESULTS_FILE)
        return json.loads(local.read_text())


def _print(results: dict) -> None:
    from vlkd.evaluation.report import render_table

    console.print(render_table(results), highlight=False, markup=False, soft_wrap=True)
    for note in results.get("notes", []):
        console.print(f"Note: {note}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def show(
    ref: str = typer.Argument(..., help="an eval artifact, e.g. eval/table1 or eval/table1:v2"), store: Store = None
) -> None:
    """Print an eval artifact's comparison table (the paper's Table 1 layout) and its notes."""
    _print(_results(store, ref))


@app.command()
def compare(
    refs: list[str] = typer.Argument(..., help="eval artifacts to merge into one table"),
    baseline: str = typer.Option(None, help="the row the others are compared with"),
    store: Store = None,
) -> None:
    """Merge several eval artifacts into one table."""
    from vlkd.evaluation.results import merge

    _print(merge([_results(store, ref) for ref in refs], baseline))
